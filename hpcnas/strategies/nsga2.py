"""Multi-objective evolution: NSGA-II (Deb et al. 2002) in its steady-state form, for the asynchronous orchestrator.

Until ``population`` results are in, proposals are random.  Then each
proposal mutates the winner of a tournament of ``sample_size`` members of the
population, ranked by non-domination front and, within a front, by crowding
distance (the less crowded wins).  Each new result joins the population, and
while it is too large the worst member leaves: the last front's most crowded
one.  Constraints follow Deb's rule: a feasible result beats an infeasible
one, and of two infeasible ones the smaller violation wins.  Failed
evaluations never join.  Sorting and crowding are pymoo's.
"""

from __future__ import annotations

import importlib
import threading
from typing import List, Sequence, Tuple

from hpcnas.records import Evaluation
from hpcnas.strategies.base import Tournament
from hpcnas.strategies.objectives import Objective, violation

PYMOO_METRICS = "pymoo.operators.survival.rank_and_crowding.metrics"


def rank_and_crowding(objectives: Sequence[Objective], evaluations: Sequence[Evaluation]) -> List[Tuple[int, float]]:
    """``(front rank, crowding distance)`` of every evaluation; lower rank and larger distance are better.

    Feasible evaluations are sorted into non-domination fronts 0, 1, ...; each
    infeasible one comes after them, in order of its violation.
    """
    import numpy as np  # here, not at import: every rank imports the strategies, and numpy costs ~0.1 s
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting  # imported with the metrics

    out: List[Tuple[int, float]] = [(0, 0.0)] * len(evaluations)
    feasible = [i for i, e in enumerate(evaluations) if violation(objectives, e) == 0]
    fronts: list = []
    if feasible:
        values = np.array([[o.minimized(evaluations[i]) for o in objectives] for i in feasible], dtype=float)
        fronts = NonDominatedSorting().do(values)
        for rank, front in enumerate(fronts):
            distance = calc_crowding_distance(values[front]) if len(front) > 2 else np.full(len(front), np.inf)
            for k, d in zip(front, distance):
                out[feasible[k]] = (rank, float(d))
    infeasible = sorted(
        (i for i, e in enumerate(evaluations) if violation(objectives, e) > 0),
        key=lambda i: violation(objectives, evaluations[i]),
    )
    for offset, i in enumerate(infeasible):
        out[i] = (len(fronts) + offset, 0.0)
    return out


class NSGA2(Tournament):
    """Steady-state NSGA-II over the configured objectives; every ``ask`` is answered at once."""

    name = "nsga2"

    default_sample_size = 2

    def __init__(self, *args, **kwargs):  # Tournament's arguments
        super().__init__(*args, **kwargs)
        self.population: List[Evaluation] = []
        self.ranking: List[Tuple[int, float]] = []
        # pymoo's import takes ~0.3 s (scipy): done at the first result, it would stall the dispatch loop while
        # every rank waits; in the background it is over before the first tasks are
        threading.Thread(target=importlib.import_module, args=(PYMOO_METRICS,), daemon=True).start()

    def tournament_key(self, member: int) -> Tuple[int, float, int]:
        rank, distance = self.ranking[member]
        return rank, -distance, self.population[member].id

    def admit(self, evaluation: Evaluation) -> None:
        if not evaluation.ok:
            return
        self.population.append(evaluation)
        self.ranking = rank_and_crowding(self.objectives, self.population)
        while len(self.population) > self.population_size:
            worst = max(range(len(self.population)), key=self.tournament_key)
            del self.population[worst]
            self.ranking = rank_and_crowding(self.objectives, self.population)
