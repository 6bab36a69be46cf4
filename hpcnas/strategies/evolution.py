"""Regularized evolution (Real et al. 2019): tournament, mutation, ageing.

Until ``population`` results are in, proposals are random.  Then each
proposal mutates (one op, one input edge, or one UNet++ path) the fittest of
``sample_size`` individuals drawn from the population; each new result joins
the population and the oldest one dies.  Failed evaluations (oom, crashed,
timeout) and those outside an objective's bound never join: they cannot be
parents.  Fitness is the primary (first) objective.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Tuple

from hpcnas.records import Evaluation
from hpcnas.strategies.base import Tournament


class RegularizedEvolution(Tournament):
    """Steady-state: every ``ask`` is answered at once (no worker waits)."""

    name = "evolution"

    default_sample_size = 5

    def __init__(self, *args, **kwargs):  # Tournament's arguments
        super().__init__(*args, **kwargs)
        self.population: Deque[Evaluation] = deque()

    def tournament_key(self, member: int) -> Tuple[float, int]:
        e = self.population[member]
        return self.objectives[0].minimized(e), e.id

    def admit(self, evaluation: Evaluation) -> None:
        if not self.feasible(evaluation):
            return
        self.population.append(evaluation)
        while len(self.population) > self.population_size:
            self.population.popleft()
