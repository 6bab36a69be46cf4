"""The strategy interface and the generational barrier (a composable wrapper)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Dict, Optional

from hpcnas.space.genotype import Genotype, sample_genotype


@dataclass(frozen=True)
class Proposal:
    """An architecture to evaluate, and where it came from."""

    genotype: Genotype
    parent: Optional[int] = None  # id of the evaluation it was mutated from


@dataclass(frozen=True)
class SpaceShape:
    """What a sampled genotype looks like (from the config's ``space`` section)."""

    topology: str
    op_set: Optional[str] = None
    nodes: int = 4
    towers: int = 4
    tower_depth: int = 2
    depth: int = 3
    edges_per_node: int = 2

    def sample(self, rng: random.Random) -> Genotype:
        """A uniformly random genotype of this shape."""
        return sample_genotype(rng, self.topology, self.op_set, self.nodes, self.towers, self.tower_depth, self.depth, self.edges_per_node)


class Strategy:
    """Base class: ``ask`` for a proposal (or ``None``: wait for results), ``tell`` a finished record."""

    def __init__(self, shape: SpaceShape, seed: int = 0):
        self.shape = shape
        self.rng = random.Random(seed)
        self.seen: set = set()  # genotypes already proposed: never proposed again while another is possible

    def ask(self) -> Optional[Proposal]:
        """The next architecture to evaluate, or ``None`` when the strategy must wait."""
        raise NotImplementedError

    def tell(self, record: Dict[str, Any]) -> None:
        """A finished evaluation: at least ``id``, ``genotype`` (dict), ``status``, ``fitness``."""

    def fresh(self, make, tries: int = 50) -> Genotype:
        """A genotype from ``make()`` not proposed before (after ``tries``, whatever comes)."""
        for _ in range(tries):
            g = make()
            if g not in self.seen:
                break
        self.seen.add(g)
        return g


class Generational(Strategy):
    """The paper's Algorithm 1: dispatch a whole generation, wait for all of it, then evolve.

    Wraps any strategy: ``ask`` answers ``None`` once ``size`` proposals of
    the current generation are out, until all of them are told.
    """

    def __init__(self, inner: Strategy, size: int):
        self.inner, self.size = inner, size
        self.out = 0
        self.told = 0

    def ask(self) -> Optional[Proposal]:
        starts_generation = self.out % self.size == 0
        if starts_generation and self.told < self.out:  # the previous generation is not complete
            return None
        proposal = self.inner.ask()
        if proposal is not None:
            self.out += 1
        return proposal

    def tell(self, record: Dict[str, Any]) -> None:
        self.told += 1
        self.inner.tell(record)
