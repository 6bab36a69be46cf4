"""Multi-objective search: objectives and bounds, NSGA-II's ranking and selection, the front against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from hpcnas.errors import UserError
from hpcnas.records import Evaluation
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies.nsga2 import NSGA2, rank_and_crowding
from hpcnas.strategies.objectives import dominates, pareto_front, parse_objectives

SPACE = SearchSpace.of("darts_unet", nodes=2, depth=2)
ACC_PARAMS = parse_objectives(["miou", "params"])


def point(i, miou, params, status="ok", genotype=None):
    genotype = genotype or SPACE.sample(random.Random(i))
    return Evaluation.from_dict(
        {"id": i, "genotype": genotype.to_dict(), "status": status, "fitness": miou, "objectives": {"params": params}}
    )


def test_objectives_parse_with_directions_and_bounds():
    objs = parse_objectives(["miou >= 0.3", "params<=2e6", "latency"])
    assert [(o.name, o.maximize, o.bound) for o in objs] == [
        ("miou", True, 0.3),
        ("params", False, 2e6),
        ("latency", False, None),
    ]
    assert objs[1].violation(point(0, 0.5, 3e6)) == pytest.approx(0.5) and objs[1].violation(point(0, 0.5, 1e6)) == 0
    for bad, message in [
        (["acc"], "unknown objective 'acc'"),
        (["params >= 5"], "better lower"),
        (["miou", "miou"], "given twice"),
        (["params <= x"], "not a number"),
        ([], "at least one"),
        (["params < 5"], "NAME <= BOUND"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_objectives(bad)


def test_ranks_and_crowding_on_a_hand_made_front():
    # front 0: (0.9, 300) (0.7, 100) (0.8, 200); front 1: (0.6, 150) (0.75, 350); front 2: (0.5, 400)
    pts = [
        point(0, 0.9, 300),
        point(1, 0.7, 100),
        point(2, 0.8, 200),
        point(3, 0.6, 150),
        point(4, 0.75, 350),
        point(5, 0.5, 400),
    ]
    ranking = rank_and_crowding(ACC_PARAMS, pts)
    assert [r for r, _ in ranking] == [0, 0, 0, 1, 1, 2]
    # the ends of a front are infinitely far from crowding; the middle one is not
    assert ranking[0][1] == ranking[1][1] == float("inf") and 0 < ranking[2][1] < float("inf")
    assert [e.id for e in pareto_front(ACC_PARAMS, pts)] == [0, 1, 2]
    assert dominates(ACC_PARAMS, pts[1], pts[3]) and not dominates(ACC_PARAMS, pts[0], pts[1])


def test_a_bound_ranks_every_infeasible_point_after_the_feasible_ones():
    bounded = parse_objectives(["miou", "params <= 250"])
    pts = [point(0, 0.9, 300), point(1, 0.2, 240), point(2, 0.95, 500)]
    ranking = rank_and_crowding(bounded, pts)
    assert ranking[1][0] == 0 and ranking[0][0] == 1 and ranking[2][0] == 2  # smaller violation first
    assert [e.id for e in pareto_front(bounded, pts)] == [1]


def test_steady_state_survival_drops_the_last_fronts_most_crowded_member():
    nsga = NSGA2(SPACE, seed=0, objectives=ACC_PARAMS, population=3, sample_size=2)
    for p in [point(0, 0.9, 300), point(1, 0.7, 100), point(2, 0.5, 400)]:
        nsga.tell(p)
    assert [e.id for e in nsga.population] == [0, 1, 2]
    nsga.tell(point(3, 0.8, 200))  # joins front 0; the dominated (0.5, 400) leaves
    assert sorted(e.id for e in nsga.population) == [0, 1, 3]
    nsga.tell(point(4, 0.1, 5000, status="oom"))  # a failure never joins
    assert sorted(e.id for e in nsga.population) == [0, 1, 3]
    proposal = nsga.ask()
    assert proposal.parent in (0, 1, 3)


def fake_objectives(genotype):
    """A synthetic two-objective landscape (no torch): accuracy from the convolutions, cost from their kernel sizes."""
    ops = [op for _, cell in genotype.cells for node in cell for op, _ in node]
    miou = sum(op.startswith(("sep", "dil")) for op in ops) / len(ops)
    params = sum(25 if "5x5" in op else 9 if "3x3" in op and "conv" in op else 1 for op in ops)
    return miou, float(params)


def test_the_front_found_on_a_small_space_matches_brute_force():
    space = SearchSpace.of("darts_unet", nodes=1, depth=2, edges_per_node=1)
    ops = space.sampled_ops
    every = []  # each cell: one node with one (op, input) edge: 7 ops x 2 inputs, two cells -> 196 genotypes
    for (o1, i1), (o2, i2) in itertools.product(itertools.product(ops, range(2)), repeat=2):
        genotype = space.sample(random.Random(0))
        cells = ((genotype.cells[0][0], (((o1, i1),),)), (genotype.cells[1][0], (((o2, i2),),)))
        every.append(type(genotype)(genotype.topology, genotype.op_set, cells, None))
    brute = pareto_front(ACC_PARAMS, [point(i, *fake_objectives(g), genotype=g) for i, g in enumerate(every)])
    truth = {(e.fitness, e.objectives["params"]) for e in brute}
    nsga = NSGA2(space, seed=1, objectives=ACC_PARAMS, population=12, sample_size=2)
    for i in range(150):
        proposal = nsga.ask()
        nsga.tell(point(i, *fake_objectives(proposal.genotype), genotype=proposal.genotype))
    found = {(e.fitness, e.objectives["params"]) for e in nsga.front()}
    assert found == truth


def test_nsga2_replays_identically():
    def run():
        nsga = NSGA2(SPACE, seed=5, objectives=ACC_PARAMS, population=4, sample_size=2)
        log = []
        for i in range(20):
            p = nsga.ask()
            log.append((p.genotype, p.parent))
            nsga.tell(point(i, *fake_objectives(p.genotype), genotype=p.genotype))
        return log, [e.id for e in nsga.front()]

    assert run() == run()
