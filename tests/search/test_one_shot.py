"""One-shot estimates: a genotype scored inside the trained supernet of a search, its weights inherited."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from hpcnas.errors import UserError
from hpcnas.pipeline import search
from hpcnas.rundir import RunDir
from hpcnas.search.decode import decode_genotype
from hpcnas.search.one_shot import TrainedSupernet, genotype_rows
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from tests.conftest import run_cli
from tests.search.test_collapse import SMOKE, TINY


def rows_as_snapshot(rows) -> dict:
    ops = {role: torch.stack([edges[e] for e in range(len(edges))]).numpy() for role, edges in rows.items()}
    return {"ops": ops, "edges": None, "betas": {}}


@pytest.mark.parametrize("per_stage", [False, True])
def test_the_rows_of_a_decoded_genotype_decode_to_it_again(per_stage):
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=3, per_stage=per_stage)
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = {role: rng.random((sum(space.node_inputs()), len(space.ops))) for role in space.roles()}
        genotype = decode_genotype(space, {"ops": theta, "edges": None, "betas": {}})
        rows = genotype_rows(space, genotype, space.roles())
        assert decode_genotype(space, rows_as_snapshot(rows)) == genotype
        for role, edges in rows.items():  # each kept edge carries its one op, every other edge nothing
            kept = sum(len(node) for node in genotype.cell(role))
            assert sum(float(row.sum()) for row in edges.values()) == kept


def test_an_input_a_random_cell_draws_twice_carries_both_of_its_ops():
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=3)
    twice = next(
        g
        for g in (space.sample(random.Random(seed)) for seed in range(200))
        if any(len({source for _, source in node}) < len(node) for _, cell in g.cells for node in cell)
    )
    rows = genotype_rows(space, twice, space.roles())
    for role, cell in twice.cells:
        first = 0
        for j, node in enumerate(cell):
            sources = space.sources(j)
            for op, source in node:
                assert rows[role][first + sources.index(source)][space.ops.index(op)] >= 1.0
            assert sum(float(rows[role][first + k].sum()) for k in range(len(sources))) == len(node)
            first += len(sources)


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory):
    """A tiny finished search: its genotype and run directory (read, never written, by the tests)."""
    return search(SMOKE, TINY, out=str(tmp_path_factory.mktemp("one-shot") / "search"))


@pytest.mark.slow
def test_one_shot_and_perturbation_scores_tell_genotypes_apart_and_leave_the_search_as_it_was(finished_search):
    genotype, run_dir = finished_search
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2)
    others = [space.sample(random.Random(seed)) for seed in range(4)]
    checkpoint = (run_dir / "checkpoints" / "latest.pt").read_bytes()
    supernet = TrainedSupernet(run_dir)
    scores = supernet.one_shot([genotype, *others])
    assert all(0.0 <= s.miou <= 1.0 and s.loss > 0 for s in scores)
    assert len({s.loss for s in scores}) == len(scores), scores  # each genotype's own ops, not the whole supernet
    assert supernet.one_shot([others[2]]) == [scores[3]]  # nothing of one genotype stays for the next
    assert not supernet.model.arch.fixed_rows

    validations = []
    validate = supernet.validate
    supernet.validate = lambda: validations.append(1) or validate()  # type: ignore[method-assign]
    perturbation = supernet.perturbation([genotype, *others])
    held = {(role, edge, op) for g in [genotype, *others] for role, edge, op, _ in supernet._chosen_ops(g)}
    assert len(validations) == 1 + len(held)  # the whole supernet once, then each op a genotype holds, once
    supernet.validate = validate  # type: ignore[method-assign]
    assert len(set(perturbation)) == len(perturbation), perturbation
    assert not any(supernet.model.arch.fixed_rows.values())  # every removal put back
    whole = supernet.validate().loss
    by_hand = 0.0  # each op of the genotype removed alone from the whole supernet, its loss rise summed
    for role, edges in genotype_rows(space, others[1], supernet.model.arch.roles).items():
        for edge, row in edges.items():
            for k in torch.nonzero(row).flatten().tolist():
                without = supernet.model.arch.op_weights(role).detach()[edge].clone()
                without[k] = 0.0
                supernet.model.arch.fixed_rows = {role: {edge: without}}
                by_hand += float(row[k]) * (supernet.validate().loss - whole)
    supernet.model.arch.fixed_rows = {}
    assert by_hand == pytest.approx(perturbation[2], rel=1e-6, abs=1e-9)
    assert supernet.perturbation([others[1]]) == [perturbation[2]]  # measured once, reused

    assert (run_dir / "checkpoints" / "latest.pt").read_bytes() == checkpoint
    wrong = SearchSpace.of("resnet_unet", "O_blocks", depth=2).sample(random.Random(0))
    for score in (supernet.one_shot, supernet.perturbation):
        with pytest.raises(UserError, match="genotype is resnet_unet but the config's space.topology is darts_unet"):
            score([wrong])


def files_under(folder) -> dict:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_score_ranks_the_search_s_genotype_files_and_random_cells_and_writes_nothing(finished_search, tmp_path):
    genotype, run_dir = finished_search
    space = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2)
    mine = tmp_path / "mine.json"
    space.sample(random.Random(99)).save(mine)
    before = files_under(run_dir)
    proc = run_cli("score", str(run_dir), str(mine), "--random", "3", "--seed", "5", "--json", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    rows = got["candidates"]
    assert (got["search"], got["tiles"]) == (str(run_dir), 64)
    assert [r["perturbation"] for r in rows] == sorted((r["perturbation"] for r in rows), reverse=True)
    by_name = {r["candidate"]: r for r in rows}
    expected = [str(RunDir(run_dir).genotype), str(mine)] + [f"random cell, seed {s}" for s in (5, 6, 7)]
    assert sorted(by_name) == sorted(expected)
    assert [by_name[f"random cell, seed {s}"]["random_seed"] for s in (5, 6, 7)] == [5, 6, 7]
    # the same figures as the Python API gives for the same genotypes: the random cells are train --seed's draws
    genotypes = [genotype, Genotype.load(str(mine))] + [space.sample(random.Random(s)) for s in (5, 6, 7)]
    want = TrainedSupernet(run_dir, max_tiles=64).perturbation(genotypes)
    assert [by_name[name]["perturbation"] for name in expected] == pytest.approx(want, rel=1e-6, abs=1e-9)
    table = run_cli("score", str(run_dir), "--random", "1", "--device", "cpu")
    assert table.returncode == 0, table.stderr[-3000:]
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"{run_dir}: 2 candidate(s) by perturbation score") and lines[1].split() == [
        "rank", "perturbation", "candidate"
    ]  # fmt: skip
    assert lines[2].split()[0] == "1" and lines[3].split()[0] == "2" and lines[-1].startswith("retrain the first few")
    assert files_under(run_dir) == before  # a ranking reads the search, never writes into it

    other_space = tmp_path / "resnet.json"
    SearchSpace.of("resnet_unet", "O_blocks", depth=2).sample(random.Random(0)).save(other_space)
    (tmp_path / "empty").mkdir()
    trained = tmp_path / "trained"  # a run with a checkpoint of its own, not of a supernet
    shutil.copytree(run_dir, trained)
    heartbeat = json.loads((trained / "heartbeat.json").read_text())
    (trained / "heartbeat.json").write_text(json.dumps(dict(heartbeat, command="train")))
    bad = {
        (str(tmp_path / "nope"),): "no such run directory",
        (str(tmp_path / "empty"),): "holds no search supernet",
        (str(trained),): "is an hpcnas train run: give an hpcnas search run",
        (str(run_dir), "--random", "-1"): "--random: must be 0 or more, not -1",
        (str(run_dir), "--tiles", "0"): "--tiles: must be at least 1, not 0",
        (str(run_dir), str(tmp_path / "missing.json")): "missing.json: no such file",
        (str(run_dir), str(other_space)): "genotype is resnet_unet but the config's space.topology is darts_unet",
    }
    for args, message in bad.items():
        proc = run_cli("score", *args, "--device", "cpu")
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-2000:])
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("hpcnas: error:"), proc.stderr[-2000:]
    assert files_under(run_dir) == before and not any((tmp_path / "empty").iterdir())
