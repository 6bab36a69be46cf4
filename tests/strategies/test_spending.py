"""Successive halving and the zero-cost pre-screen as strategy wrappers: their decisions, and replay."""

from __future__ import annotations

import random

import numpy as np
import pytest

from hpcnas.config import load_config
from hpcnas.records import Evaluation, Status
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies.asha import SuccessiveHalving, quantile, rung_epochs
from hpcnas.strategies.prescreen import Prescreen, genotype_key
from hpcnas.strategies.random import RandomSearch


def space():
    return SearchSpace.from_config(load_config(None, ["space.nodes=2"]))


def test_rungs_are_geometric_and_below_the_schedule():
    assert rung_epochs(1, 3, 27) == [1, 3, 9]
    assert rung_epochs(1, 3, 9) == [1, 3]
    assert rung_epochs(2, 2, 20) == [2, 4, 8, 16]
    assert rung_epochs(5, 3, 5) == []


def test_quantile_is_numpys_linear_quantile():
    rng = random.Random(0)
    for n in (1, 2, 3, 7, 20):
        values = [rng.random() for _ in range(n)]
        for q in (0.0, 0.5, 2 / 3, 0.75, 1.0):
            assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_the_first_report_goes_on_and_the_bottom_stops():
    asha = SuccessiveHalving(RandomSearch(space(), seed=0), rungs=[1, 3], reduction_factor=3)
    assert asha.report(0, 1, 0.50)  # nothing to compare with
    assert not asha.report(1, 1, 0.40)  # below the only other value
    assert asha.report(2, 1, 0.60)
    # recorded: 0.5, 0.4, 0.6; the 2/3 quantile of those is 0.5333: 0.52 stops, 0.55 goes on
    assert not asha.report(3, 1, 0.52)
    assert asha.report(4, 1, 0.55)
    assert asha.report(5, 3, 0.10)  # every rung has its own table
    assert sorted(asha.table[1]) == [0, 1, 2, 3, 4] and list(asha.table[3]) == [5]


def test_rung_results_of_finished_evaluations_rebuild_the_table_on_replay():
    inner = RandomSearch(space(), seed=0)
    first = SuccessiveHalving(inner, rungs=[1], reduction_factor=2)
    values = [0.3, 0.7, 0.5, 0.2, 0.9]
    decisions = [first.report(i, 1, v) for i, v in enumerate(values)]
    resumed = SuccessiveHalving(RandomSearch(space(), seed=0), rungs=[1], reduction_factor=2)
    for i, v in enumerate(values):
        g = resumed.ask().genotype
        status = Status.OK if decisions[i] else Status.STOPPED
        resumed.tell(Evaluation(i, g, status, v, {"miou": v}, rungs={"1": v}, epochs=2 if decisions[i] else 1))
    assert resumed.table == first.table
    assert resumed.report(9, 1, 0.6) == first.report(9, 1, 0.6)
    assert resumed.best().id == 4 and resumed.best().fitness == 0.9  # stopped ones are never the best


def test_stopped_evaluations_use_budget_by_their_epochs():
    g = RandomSearch(space(), seed=0).ask().genotype
    assert Evaluation(0, g, Status.STOPPED, epochs=1).budget_used(4) == 0.25
    assert Evaluation(0, g, Status.OK, epochs=4).budget_used(4) == 1.0
    assert Evaluation(0, g, Status.OOM).budget_used(4) == 1.0
    assert Evaluation(0, g, Status.TOO_BIG).budget_used(4) == 0.0


class CountingScore:
    """A deterministic score of a genotype (its key read as a number) that counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, genotype):
        self.calls += 1
        return int(genotype_key(genotype), 16) % 1000


def test_the_prescreen_proposes_the_best_scored_of_its_sample():
    score = CountingScore()
    screen = Prescreen(RandomSearch(space(), seed=3), score, "naswot", sample=5, keep=1)
    plain = RandomSearch(space(), seed=3)
    for _ in range(4):
        candidates = [plain.ask().genotype for _ in range(5)]
        proposal = screen.ask()
        assert proposal.genotype == max(candidates, key=score)
        assert proposal.scores == {"naswot": score(proposal.genotype)}
        assert proposal.screened == {genotype_key(c): score(c) for c in candidates}


def test_keep_two_proposes_the_two_best_in_order():
    score = CountingScore()
    screen = Prescreen(RandomSearch(space(), seed=1), score, "synflow", sample=6, keep=2)
    first, second = screen.ask(), screen.ask()
    assert first.scores["synflow"] >= second.scores["synflow"]
    assert len(first.screened) == 6 and second.screened == {}  # the screening is logged once
    assert score.calls == 6


def test_a_resumed_prescreen_replays_from_the_logged_scores_without_scoring():
    score = CountingScore()
    first = Prescreen(RandomSearch(space(), seed=2), score, "naswot", sample=4, keep=1)
    proposals = [first.ask() for _ in range(3)]
    logged = {}
    for p in proposals:
        logged.update(p.screened)
    unused = CountingScore()
    resumed = Prescreen(RandomSearch(space(), seed=2), unused, "naswot", sample=4, keep=1)
    resumed.remember(logged)
    assert [resumed.ask().genotype for _ in range(3)] == [p.genotype for p in proposals]
    assert unused.calls == 0
