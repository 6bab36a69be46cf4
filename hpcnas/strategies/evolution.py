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
from typing import Deque, Optional

from hpcnas.records import Evaluation
from hpcnas.space.genotype import Genotype
from hpcnas.strategies.base import Proposal, Tournament, register


@register
class RegularizedEvolution(Tournament):
    """Steady-state: every ``ask`` is answered at once (no worker waits)."""

    name = "evolution"

    default_sample_size = 5

    def __init__(self, *args, **kwargs):  # Tournament's arguments
        super().__init__(*args, **kwargs)
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
