"""Strategies: plain Python, seeded, regularized evolution's tournament and ageing, the generational barrier."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from hpcnas.errors import UserError
from hpcnas.records import Evaluation
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies import STRATEGIES, Generational
from hpcnas.strategies.evolution import RegularizedEvolution
from hpcnas.strategies.random import RandomSearch
from tests.conftest import ROOT

SHAPE = SearchSpace.of("darts_unet", nodes=2, depth=2)


def evaluation(i, genotype, status="ok", fitness=None, parent=None, **objectives):
    """A finished evaluation as the orchestrator tells it."""
    return Evaluation.from_dict(
        {
            "id": i,
            "genotype": genotype.to_dict(),
            "status": status,
            "fitness": fitness,
            "parent": parent,
            "objectives": objectives,
        }
    )


def drive(strategy, results):
    """Ask/tell in lock-step; ``results(i, genotype)`` gives (status, fitness)."""
    log = []
    for i in range(len(results)):
        proposal = strategy.ask()
        status, fitness = results[i]
        record = evaluation(i, proposal.genotype, status, fitness, proposal.parent)
        strategy.tell(record)
        log.append(record.to_dict())
    return log


def test_strategies_never_import_torch_or_numpy():
    code = (
        "import sys, hpcnas.strategies.evolution, hpcnas.strategies.random, hpcnas.strategies.nsga2, "
        "hpcnas.strategies.random_exploit, "
        "hpcnas.execution.orchestrator, hpcnas.execution.slot; print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False False"  # numpy too: every rank imports these, and the first tasks wait


def test_deterministic_for_a_sequence_of_results():
    results = [("ok", 0.1 * (i % 7)) for i in range(30)]
    a = drive(RegularizedEvolution(SHAPE, seed=3, population=6, sample_size=3), results)
    b = drive(RegularizedEvolution(SHAPE, seed=3, population=6, sample_size=3), results)
    c = drive(RegularizedEvolution(SHAPE, seed=4, population=6, sample_size=3), results)
    assert a == b and a != c
    assert drive(RandomSearch(SHAPE, seed=1), results[:5]) == drive(RandomSearch(SHAPE, seed=1), results[:5])


def test_random_phase_then_mutations_of_tournament_winners():
    evo = RegularizedEvolution(SHAPE, seed=0, population=4, sample_size=4)
    log = drive(evo, [("ok", f) for f in (0.1, 0.9, 0.3, 0.2)])
    assert all(r["parent"] is None for r in log)
    # sample_size == population: the tournament picks the fittest alive; ageing kills the oldest,
    # so the champion (id 1, 0.9) fathers two children, then id 2 (0.3), then id 3 (0.2)
    for i, expected_parent in zip(range(4, 8), [1, 1, 2, 3]):
        p = evo.ask()
        assert p.parent == expected_parent
        parent = Genotype.from_dict(log[expected_parent]["genotype"])
        diffs = sum(
            x != y
            for (_, ca), (_, cb) in zip(parent.cells, p.genotype.cells)
            for na, nb in zip(ca, cb)
            for x, y in zip(na, nb)
        )
        assert diffs == 1
        evo.tell(evaluation(i, p.genotype, fitness=0.0))
    assert [r.id for r in evo.population] == [4, 5, 6, 7]


def test_failures_never_become_parents():
    evo = RegularizedEvolution(SHAPE, seed=0, population=3, sample_size=3)
    drive(evo, [("oom", None), ("ok", 0.5), ("crashed", None), ("timeout", None), ("ok", 0.2), ("ok", 0.1)])
    assert [r.id for r in evo.population] == [1, 4, 5]
    assert evo.ask().parent == 1


def test_no_genotype_proposed_twice():
    rs = RandomSearch(SHAPE, seed=0)
    seen = [rs.ask().genotype for _ in range(40)]
    assert len(set(seen)) == 40


def test_generational_waits_for_the_whole_generation():
    gen = Generational(RegularizedEvolution(SHAPE, seed=0, population=3, sample_size=2), size=3)
    first = [gen.ask() for _ in range(3)]
    assert all(first) and gen.ask() is None  # generation dispatched: wait
    for i, p in enumerate(first[:2]):
        gen.tell(evaluation(i, p.genotype, fitness=0.5))
    assert gen.ask() is None  # one still running
    gen.tell(evaluation(2, first[2].genotype, fitness=0.7))
    nxt = gen.ask()
    assert nxt is not None and nxt.parent in (0, 1, 2)
    assert gen.best().id == 2 and gen.space is SHAPE  # the wrapper answers like the strategy it wraps


def test_strategies_are_known_by_name_and_an_unknown_name_lists_them():
    assert {"evolution", "nsga2", "random"} <= set(STRATEGIES)
    assert STRATEGIES["random"] is RandomSearch
    with pytest.raises(UserError, match=r"unknown strategy 'evolutoin'.*evolution.*known: evolution, nsga2, random"):
        STRATEGIES["evolutoin"]


def test_best_is_the_primary_objective_among_feasible_results():
    from hpcnas.strategies.objectives import parse_objectives

    rs = RandomSearch(SHAPE, seed=0, objectives=parse_objectives(["miou", "params <= 1000"]))
    fits = [(0.9, 5000.0), (0.7, 900.0), (0.8, 1000.0), (None, 10.0)]
    for i, (fit, params) in enumerate(fits):
        rs.tell(evaluation(i, rs.ask().genotype, "ok" if fit else "crashed", fit, params=params))
    assert rs.best().id == 2  # 0 is better but breaks the bound; 3 failed
    assert [e.id for e in rs.front()] == [1, 2]


def _leaves(value):
    """The scalar leaves of a genotype's dict, in order (to count the genes two genotypes differ in)."""
    if isinstance(value, dict):
        return [leaf for key in sorted(value) for leaf in _leaves(value[key])]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def distance(a, b) -> int:
    return sum(x != y for x, y in zip(_leaves(a.to_dict()), _leaves(b.to_dict())))


@pytest.mark.parametrize("exploit", [0.0, 0.5, 1.0])
def test_random_exploit_samples_around_the_best_after_its_warm_up(exploit):
    from hpcnas.strategies.random_exploit import RandomExploit

    space = SearchSpace.of("darts_unet", nodes=3, depth=2)
    strategy = RandomExploit(space, seed=5, warmup=10, exploit=exploit)
    proposals, told = [], []
    for i in range(150):
        proposal = strategy.ask()
        proposals.append(proposal)
        # the fitness of the first warm-up sample is best of all: it stays the incumbent
        told.append(evaluation(i, proposal.genotype, "ok", 0.9 if i == 0 else 0.1, proposal.parent))
        strategy.tell(told[-1])
    incumbent = proposals[0].genotype
    assert all(p.parent is None for p in proposals[:10])  # the warm-up is uniform
    after = proposals[10:]
    near = [p for p in after if p.parent == 0]
    share = len(near) / len(after)
    assert abs(share - exploit) < 0.12 if exploit < 1 else share > 0.6  # (1.0: until its 96 neighbours run out)
    assert all(0 < distance(p.genotype, incumbent) <= 2 for p in near)  # neighbours, never the incumbent itself
    far = [distance(p.genotype, incumbent) for p in after if p.parent is None]
    if near and far:
        assert sum(distance(p.genotype, incumbent) for p in near) / len(near) < sum(far) / len(far) / 2
    assert len({p.genotype for p in proposals}) == len(proposals)  # never proposed twice
    assert STRATEGIES["random_exploit"] is RandomExploit


def test_random_exploit_is_configured_from_evolve_strategy():
    from hpcnas.config import load_config
    from hpcnas.execution.orchestrator import make_strategy

    cfg = load_config(None, ["evolve.strategy.name=random_exploit", "evolve.strategy.warmup=7",
                             "evolve.strategy.exploit=0.25"])  # fmt: skip
    strategy = make_strategy(cfg, 4)
    assert (strategy.warmup, strategy.exploit) == (7, 0.25)
    with pytest.raises(UserError, match="must be <= 1.0") as bad:
        load_config(None, ["evolve.strategy.name=random_exploit", "evolve.strategy.exploit=1.5"])
    assert bad.value.key == "evolve.strategy.exploit"


def test_each_strategy_reads_its_own_typed_settings(tmp_path, capsys):
    from hpcnas.config import dump_config, load_config

    old = load_config(None, ["evolve.strategy.name=random_exploit", "evolve.strategy.population=7"])
    assert old.evolve.strategy.options.warmup == 7  # its old shared key, read with a deprecation line
    assert "evolve.strategy.population is now evolve.strategy.warmup for strategy 'random_exploit'" in (
        capsys.readouterr().err
    )
    with pytest.raises(UserError, match="did you mean 'sample_size'") as bad:
        load_config(None, ["evolve.strategy.sampel_size=3"])
    assert bad.value.key == "evolve.strategy.sampel_size"
    with pytest.raises(UserError, match="'random' has no settings"):
        load_config(None, ["evolve.strategy.name=random", "evolve.strategy.colour=3"])
    # a setting of another strategy is ignored with a warning, so one config can switch strategies
    shared = load_config(None, ["evolve.strategy.population=6", "evolve.strategy.name=random"])
    assert "evolve.strategy.population is not a setting of strategy 'random': ignored" in capsys.readouterr().err
    assert dataclasses.fields(shared.evolve.strategy.options) == ()
    # naming another strategy does not carry the first one's defaults along (nothing ignored, nothing said)
    load_config(None, ["evolve.strategy.name=random_exploit"])
    assert "ignored" not in capsys.readouterr().err
    # config.yaml keeps the settings beside the name, and reads back the same
    cfg = load_config(None, ["evolve.strategy.population=12", "evolve.strategy.sample_size=4"])
    dump_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "  strategy:\n    name: evolution\n    mode: async\n    population: 12\n    sample_size: 4\n" in text
    assert load_config(str(tmp_path / "config.yaml")) == cfg


def test_a_renamed_key_in_the_file_is_said_once_naming_the_file(tmp_path, capsys):
    from hpcnas.config import load_config

    path = tmp_path / "exploit.yaml"
    path.write_text("evolve:\n  strategy: {name: random_exploit, population: 7}\n")
    cfg = load_config(str(path), ["seed=1", "evolve.strategy.exploit=0.25", "train.epochs=2"])  # three re-parses
    assert (cfg.evolve.strategy.options.warmup, cfg.evolve.strategy.options.exploit) == (7, 0.25)
    lines = [line for line in capsys.readouterr().err.splitlines() if "deprecated" in line]
    assert lines == [
        f"hpcnas: deprecated: evolve.strategy.population is now evolve.strategy.warmup for strategy "
        f"'random_exploit' ({path})"
    ]
