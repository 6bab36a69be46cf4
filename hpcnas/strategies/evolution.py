"""Regularized evolution (Real et al. 2019): tournament, mutation, ageing.

Until ``population`` results are in, proposals are random.  Then each
proposal mutates (one op, one input edge, or one UNet++ path) the fittest of
``sample_size`` individuals drawn from the population; each new result joins
the population and the oldest one dies.  Failed evaluations (oom, crashed,
timeout) never join: they cannot be parents.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Optional

from hpcnas.space.genotype import Genotype, mutate_genotype
from hpcnas.strategies.base import Proposal, SpaceShape, Strategy


class RegularizedEvolution(Strategy):
    """Steady-state: every ``ask`` is answered at once (no worker waits)."""

    def __init__(self, shape: SpaceShape, seed: int = 0, population: int = 20, sample_size: int = 5):
        super().__init__(shape, seed)
        if not 1 <= sample_size <= population:
            raise ValueError(f"sample_size must be in [1, population], got {sample_size} and {population}")
        self.population_size, self.sample_size = population, sample_size
        self.population: Deque[Dict[str, Any]] = deque()
        self.results = 0

    def ask(self) -> Optional[Proposal]:
        if len(self.population) < self.population_size and self.results < self.population_size:
            return Proposal(self.fresh(lambda: self.shape.sample(self.rng)))
        if not self.population:  # every result so far failed: keep exploring
            return Proposal(self.fresh(lambda: self.shape.sample(self.rng)))
        contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
        parent = max(contenders, key=lambda r: (r["fitness"], -r["id"]))
        genotype = Genotype.from_dict(parent["genotype"])
        child = self.fresh(lambda: mutate_genotype(self.rng, genotype))
        return Proposal(child, parent=parent["id"])

    def tell(self, record: Dict[str, Any]) -> None:
        self.results += 1
        if record.get("status") != "ok" or record.get("fitness") is None:
            return
        self.population.append({"id": record["id"], "genotype": record["genotype"], "fitness": float(record["fitness"])})
        while len(self.population) > self.population_size:
            self.population.popleft()
