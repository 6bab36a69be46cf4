"""The strategy interface, the registry of strategies, and the generational barrier (a composable wrapper)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence

from hpcnas.errors import UserError
from hpcnas.plugins import in_range
from hpcnas.records import Evaluation
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies.objectives import Objective, best_feasible, pareto_front, violation

DEFAULT_OBJECTIVES = (Objective("miou", maximize=True),)


@dataclass(frozen=True)
class Proposal:
    """An architecture to evaluate, and where it came from."""

    genotype: Genotype
    parent: Optional[int] = None  # id of the evaluation it was mutated from
    scores: Dict[str, float] = field(default_factory=dict)  # its zero-cost score, when pre-screened
    screened: Dict[str, float] = field(default_factory=dict)  # every candidate's score of its screening, by key


class Strategy:
    """Base class: ``ask`` for a proposal (or ``None``: wait for results), ``tell`` a finished evaluation.

    The first objective is the primary one; :meth:`best` and :meth:`front`
    answer from every evaluation told so far, feasible ones only.
    """

    name: ClassVar[str] = ""

    @dataclass
    class Options:
        """The strategy's settings in ``evolve.strategy`` (beside ``name`` and ``mode``), each passed to
        ``__init__`` as the keyword of its name; a subclass with settings declares its own."""

    def __init__(self, space: SearchSpace, seed: int = 0, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES):
        self.space = space
        self.rng = random.Random(seed)
        self.objectives = list(objectives)
        self.seen: set = set()  # genotypes already proposed: never proposed again while another is possible
        self.succeeded: List[Evaluation] = []  # every evaluation told that ended ok

    @classmethod
    def from_options(cls, space: SearchSpace, seed: int, objectives: Sequence[Objective], options: Any) -> "Strategy":
        """Build from ``evolve.strategy``: ``options`` is this class's :class:`Options`, read from the config."""
        return cls(space, seed, objectives, **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})

    def ask(self) -> Optional[Proposal]:
        """The next architecture to evaluate, or ``None`` when the strategy must wait."""
        raise NotImplementedError

    def tell(self, evaluation: Evaluation) -> None:
        """A finished evaluation (any status)."""
        if evaluation.ok:
            self.succeeded.append(evaluation)
        self.learn(evaluation)

    def learn(self, evaluation: Evaluation) -> None:
        """What a strategy does with a result (nothing, by default)."""

    def report(self, evaluation_id: int, epochs: int, fitness: float) -> bool:
        """An evaluation's fitness after ``epochs`` of training (a rung); whether it goes on (always, by default:
        :class:`~hpcnas.strategies.asha.SuccessiveHalving` stops some)."""
        return True

    def feasible(self, evaluation: Evaluation) -> bool:
        """Whether an evaluation ended ok inside every objective's bound."""
        return evaluation.ok and violation(self.objectives, evaluation) == 0

    def best(self) -> Optional[Evaluation]:
        """The feasible evaluation best in the primary objective (the lowest id on a tie), if any."""
        return best_feasible(self.objectives, self.succeeded)

    def front(self) -> List[Evaluation]:
        """The feasible evaluations no other one dominates in all the objectives."""
        return pareto_front(self.objectives, self.succeeded)

    def fresh(self, make: Callable[[], Genotype], tries: int = 50) -> Genotype:
        """A genotype from ``make()`` not proposed before (after ``tries``, whatever comes)."""
        return self.draw(make, tries)[0]

    def draw(self, make: Callable[[], Genotype], tries: int = 50) -> "tuple[Genotype, bool]":
        """``(genotype, new)``: the first of up to ``tries`` calls of ``make()`` not proposed before, or the last
        one with ``new`` false; either way it counts as proposed from now on."""
        for _ in range(tries):
            g = make()
            if g not in self.seen:
                self.seen.add(g)
                return g, True
        self.seen.add(g)
        return g, False


class Wrapper(Strategy):
    """A strategy around another one (generations, successive halving, a pre-screen): by default it passes
    every call through, so a wrapper says only what it changes."""

    def __init__(self, inner: Strategy):  # no Strategy.__init__: the inner strategy holds the state
        self.inner = inner

    @property
    def space(self) -> SearchSpace:  # type: ignore[override]
        return self.inner.space

    @property
    def objectives(self) -> List[Objective]:  # type: ignore[override]
        return self.inner.objectives

    def ask(self) -> Optional[Proposal]:
        return self.inner.ask()

    def tell(self, evaluation: Evaluation) -> None:
        self.inner.tell(evaluation)

    def report(self, evaluation_id: int, epochs: int, fitness: float) -> bool:
        return self.inner.report(evaluation_id, epochs, fitness)

    def best(self) -> Optional[Evaluation]:
        return self.inner.best()

    def front(self) -> List[Evaluation]:
        return self.inner.front()


class Tournament(Strategy):
    """A population of ``population`` evaluations whose parents win tournaments of ``sample_size`` (by default
    the strategy's ``default_sample_size``)."""

    default_sample_size: ClassVar[int] = 5

    @dataclass
    class Options:
        population: int = field(default=20, metadata=in_range(1))  # members, and the random proposals before them
        sample_size: int = field(default=5, metadata=in_range(1))  # contenders per tournament

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
        population: int = 20,
        sample_size: Optional[int] = None,
    ):
        super().__init__(space, seed, objectives)
        sample_size = self.default_sample_size if sample_size is None else sample_size
        if not 1 <= sample_size <= population:
            raise UserError(
                f"must be in [1, population={population}], got {sample_size}", key="evolve.strategy.sample_size"
            )
        self.population_size, self.sample_size = population, sample_size
        self.population: Sequence[Evaluation] = []  # the subclass's own container of the current members
        self.results = 0  # evaluations told, any status

    def ask(self) -> Optional[Proposal]:
        """Random architectures until ``population`` results are in (and while none could be a parent); then the
        winner of a tournament among ``sample_size`` members drawn from the population, mutated."""
        if self.results < self.population_size or not self.population:
            return Proposal(self.fresh(lambda: self.space.sample(self.rng)))
        contenders = self.rng.sample(range(len(self.population)), min(self.sample_size, len(self.population)))
        parent = self.population[min(contenders, key=self.tournament_key)]
        return Proposal(self.fresh(lambda: self.space.mutate(self.rng, parent.genotype)), parent=parent.id)

    def tournament_key(self, member: int) -> Any:
        """The order of the population's member ``member`` in a tournament: the smallest key wins."""
        raise NotImplementedError

    def learn(self, evaluation: Evaluation) -> None:
        self.results += 1
        self.admit(evaluation)

    def admit(self, evaluation: Evaluation) -> None:
        """Whether and how a told evaluation joins the population, and who leaves it."""
        raise NotImplementedError


class Generational(Wrapper):
    """The paper's Algorithm 1: dispatch a whole generation, wait for all of it, then evolve.

    Wraps any strategy: ``ask`` answers ``None`` once ``size`` proposals of
    the current generation are out, until all of them are told.
    """

    def __init__(self, inner: Strategy, size: int):
        super().__init__(inner)
        self.size = size
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

    def tell(self, evaluation: Evaluation) -> None:
        self.told += 1
        self.inner.tell(evaluation)
