"""Asynchronous successive halving (ASHA, Li et al. 2020), a wrapper around any strategy.

An evaluation reports its fitness after each rung of ``r``, ``r*eta``, ``r*eta^2`` ... epochs (below the proxy
schedule's length).  At a rung it goes on only when its fitness reaches the ``1 - 1/eta`` quantile of the
fitnesses reported at that rung before it (the first report at a rung always goes on), so roughly the top
``1/eta`` reach the next rung and the rest stop at once, without waiting for a generation: the stopping rule
of Ray Tune's ASHA scheduler and, with ``min_resource`` and ``reduction_factor``, Optuna's pruner.  This is the
general form of Fast-NAS's early stopping.  Fitness is the primary objective; stopped evaluations reach the
inner strategy as results that did not end ok, so they are never parents.

The rung table is rebuilt from the evaluations' own records on resume (each finished evaluation carries the
fitness it reported at every rung), so a resumed search stops exactly as before.
"""

from __future__ import annotations

from typing import Dict, List

from hpcnas.records import Evaluation
from hpcnas.strategies.base import Strategy, Wrapper


def rung_epochs(min_resource: int, reduction_factor: int, epochs: int) -> List[int]:
    """The rungs ``r, r*eta, r*eta^2, ...`` strictly below ``epochs`` (the last epoch needs no decision)."""
    rungs, r = [], min_resource
    while r < epochs:
        rungs.append(r)
        r *= reduction_factor
    return rungs


def quantile(values: List[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class SuccessiveHalving(Wrapper):
    """Wraps a strategy: it proposes, this decides at each rung whether an evaluation goes on."""

    def __init__(self, inner: Strategy, rungs: List[int], reduction_factor: int):
        super().__init__(inner)
        self.rungs, self.reduction_factor = list(rungs), reduction_factor
        self.table: Dict[int, Dict[int, float]] = {r: {} for r in self.rungs}  # rung -> evaluation id -> fitness

    def tell(self, evaluation: Evaluation) -> None:
        for epochs, fitness in evaluation.rungs.items():
            self.table.setdefault(int(epochs), {})[evaluation.id] = fitness
        self.inner.tell(evaluation)

    def report(self, evaluation_id: int, epochs: int, fitness: float) -> bool:
        """Record an evaluation's fitness after ``epochs``; whether it goes on training."""
        recorded = self.table.setdefault(epochs, {})
        others = [f for i, f in recorded.items() if i != evaluation_id]
        recorded[evaluation_id] = fitness
        return not others or fitness >= quantile(others, 1 - 1 / self.reduction_factor)
