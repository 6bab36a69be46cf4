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
from typing import Deque, Optional, Sequence

from hpcnas.records import Evaluation
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies.base import DEFAULT_OBJECTIVES, Proposal, Tournament, register
from hpcnas.strategies.objectives import Objective


@register
class RegularizedEvolution(Tournament):
    """Steady-state: every ``ask`` is answered at once (no worker waits)."""

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
        population: int = 20,
        sample_size: int = 5,
    ):
        super().__init__(space, seed, objectives, population, sample_size)
        self.population: Deque[Evaluation] = deque()
        self.results = 0

    def ask(self) -> Optional[Proposal]:
        if len(self.population) < self.population_size and self.results < self.population_size:
            return Proposal(self.fresh(lambda: self.space.sample(self.rng)))
        if not self.population:  # every result so far failed: keep exploring
            return Proposal(self.fresh(lambda: self.space.sample(self.rng)))
        contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
        primary = self.objectives[0]
        parent = min(contenders, key=lambda e: (primary.minimized(e), e.id))
        genotype = Genotype.from_dict(parent.genotype)
        child = self.fresh(lambda: self.space.mutate(self.rng, genotype))
        return Proposal(child, parent=parent.id)

    def learn(self, evaluation: Evaluation) -> None:
        self.results += 1
        if not self.feasible(evaluation):
            return
        self.population.append(evaluation)
        while len(self.population) > self.population_size:
            self.population.popleft()
