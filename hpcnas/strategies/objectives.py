"""Objectives of a discrete search: what is measured, which way is better, and the constraints.

An objective is written ``name`` or ``name <= bound`` / ``name >= bound`` in
``evolve.objectives``; the first one is the primary objective (the one a
single-objective strategy optimizes).  Every objective is turned into a value
to *minimize* for Pareto sorting (a maximized one is negated).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

from hpcnas.errors import UserError
from hpcnas.plugins import OBJECTIVES
from hpcnas.records import Evaluation


@dataclass(frozen=True)
class Metric:
    """What an objective measures, which way is better, and how the evaluation child measures it.

    The built-in metrics have no ``measure``: the train evaluator records them itself.  A plugin's metric
    gives ``measure(trained)``, called after each proxy training with a :class:`Trained`, and may give
    ``options``: a dataclass of its settings, read from ``evolve.measure.<name>`` (unknown keys refused).
    """

    name: str
    maximize: bool
    unit: str = ""
    measure: Optional[Callable[["Trained"], float]] = None
    options: Optional[type] = None


@dataclass(frozen=True)
class Trained:
    """What a metric's ``measure`` gets: the trained network, the data set's info, the device, its options."""

    model: Any
    info: Any
    device: Any
    options: Any


# registered in hpcnas.plugins.OBJECTIVES
MIOU = Metric("miou", True)
PARAMS = Metric("params", False)
FLOPS = Metric("flops", False)
LATENCY = Metric("latency", False, "ms")
PEAK_MEMORY = Metric("peak_memory", False, "MB")
_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:(<=|>=)\s*(\S+))?\s*$")


@dataclass(frozen=True)
class Objective:
    """One objective: its name, its direction and an optional bound (a constraint)."""

    name: str
    maximize: bool
    bound: Optional[float] = None  # value <= bound (minimized) or >= bound (maximized)

    def value(self, evaluation: Evaluation) -> Optional[float]:
        """The measured value, or ``None`` when the evaluation did not measure it."""
        value = evaluation.objectives.get(self.name)
        return None if value is None else float(value)

    def minimized(self, evaluation: Evaluation) -> float:
        """The value as a quantity to minimize (``inf`` when not measured)."""
        value = self.value(evaluation)
        if value is None:
            return math.inf
        return -value if self.maximize else value

    def violation(self, evaluation: Evaluation) -> float:
        """How far the evaluation is outside the bound (0 when inside, or with no bound)."""
        if self.bound is None:
            return 0.0
        value = self.value(evaluation)
        if value is None:
            return math.inf
        excess = self.bound - value if self.maximize else value - self.bound
        return max(excess, 0.0) / max(abs(self.bound), 1e-12)  # relative, so bounds of any scale add up

    def __str__(self) -> str:
        if self.bound is None:
            return self.name
        return f"{self.name} {'>=' if self.maximize else '<='} {self.bound:g}"


def parse_objectives(items: Sequence[str], key: str = "evolve.objectives") -> List[Objective]:
    """``["miou", "params <= 2e6"]`` -> objectives; any mistake is a ``UserError`` naming ``key``."""
    if not items:
        raise UserError("needs at least one objective (e.g. [miou])", key=key)
    out: List[Objective] = []
    for i, item in enumerate(items):
        match = _SPEC.match(str(item))
        if not match:
            raise UserError(f"'{item}' is not NAME, NAME <= BOUND or NAME >= BOUND", key=f"{key}[{i}]")
        name, op, text = match.groups()
        OBJECTIVES.check(name, key=f"{key}[{i}]")
        maximize = OBJECTIVES[name].maximize
        bound = None
        if op is not None:
            try:
                bound = float(text)
            except ValueError:
                raise UserError(f"bound '{text}' is not a number", key=f"{key}[{i}]") from None
            if not math.isfinite(bound):
                raise UserError(f"bound must be a finite number, got {text}", key=f"{key}[{i}]")
            if (op == ">=") != maximize:
                better = "higher" if maximize else "lower"
                raise UserError(
                    f"{name} is better {better}: its bound is written {name} {'>=' if maximize else '<='} B",
                    key=f"{key}[{i}]",
                )
        if any(o.name == name for o in out):
            raise UserError(f"objective '{name}' given twice", key=f"{key}[{i}]")
        out.append(Objective(name, maximize, bound))
    return out


def violation(objectives: Sequence[Objective], evaluation: Evaluation) -> float:
    """The summed relative constraint violation (0: feasible)."""
    return sum(o.violation(evaluation) for o in objectives)


def best_feasible(objectives: Sequence[Objective], evaluations: Sequence[Evaluation]) -> Optional[Evaluation]:
    """The successful evaluation inside every bound that is best in the primary (first) objective, the lowest id
    on a tie; ``None`` when there is none."""
    feasible = [e for e in evaluations if e.ok and violation(objectives, e) == 0]
    return min(feasible, key=lambda e: (objectives[0].minimized(e), e.id), default=None)


def dominates(objectives: Sequence[Objective], a: Evaluation, b: Evaluation) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and better in one."""
    fa = [o.minimized(a) for o in objectives]
    fb = [o.minimized(b) for o in objectives]
    return all(x <= y for x, y in zip(fa, fb)) and any(x < y for x, y in zip(fa, fb))


def pareto_front(objectives: Sequence[Objective], evaluations: Sequence[Evaluation]) -> List[Evaluation]:
    """The successful, feasible evaluations no other one dominates, in id order (duplicate points all kept)."""
    pool = [e for e in evaluations if e.ok and violation(objectives, e) == 0]
    return [e for e in pool if not any(dominates(objectives, other, e) for other in pool)]


def extend_front(objectives: Sequence[Objective], front: List[Evaluation], e: Evaluation) -> List[Evaluation]:
    """The front of ``front`` plus ``e``: ``e`` joins unless dominated, and pushes out what it dominates."""
    if not e.ok or violation(objectives, e) > 0 or any(dominates(objectives, f, e) for f in front):
        return front
    return [f for f in front if not dominates(objectives, e, f)] + [e]


def scale_bounds(objectives: Sequence[Objective], evaluations: Sequence[Evaluation]) -> "tuple[list, list]":
    """Per objective, the lowest and highest minimized value over the successful evaluations (scales
    :func:`hypervolume`)."""
    pool = [e for e in evaluations if e.ok]
    lows, highs = [], []
    for o in objectives:
        values = [o.minimized(e) for e in pool if math.isfinite(o.minimized(e))] or [0.0]
        lows.append(min(values))
        highs.append(max(values))
    return lows, highs


HYPERVOLUME_BASIS = 5  # the successful evaluations (the first recorded) whose range scales the hypervolume


def hypervolume_bounds(objectives: Sequence[Objective], evaluations: Sequence[Evaluation]) -> "Optional[tuple]":
    """The one scale of a run's hypervolume, shared by TensorBoard and the report: per objective the range of the
    first :data:`HYPERVOLUME_BASIS` successful evaluations, fixed from then on, so the chart never rescales; None
    while there are fewer.

    ``evaluations`` in the order they were recorded (``history.jsonl``'s), which is the order TensorBoard charted
    them in: a result can reach rank 0 after one that ended later on another rank, so the end times may disagree.
    """
    first = [e for e in evaluations if e.ok and e.end is not None]
    if len(first) < HYPERVOLUME_BASIS:
        return None
    return scale_bounds(objectives, first[:HYPERVOLUME_BASIS])


def hypervolume(
    objectives: Sequence[Objective], front: Sequence[Evaluation], lows: Sequence[float], highs: Sequence[float]
) -> float:
    """The hypervolume (pymoo) of a front, each objective scaled to [0, 1] by ``lows``/``highs``, against
    the reference point 1.1 in every objective: 0 for an empty front, at most 1.1 ** len(objectives)."""
    import numpy as np
    from pymoo.indicators.hv import HV

    if not front:
        return 0.0
    span = [max(h - lo, 1e-12) for lo, h in zip(lows, highs)]
    points = np.array([[(o.minimized(e) - lo) / s for o, lo, s in zip(objectives, lows, span)] for e in front])
    return float(HV(ref_point=np.full(len(objectives), 1.1))(points))


def hypervolume_over_time(
    objectives: Sequence[Objective], evaluations: Sequence[Evaluation], bounds: "Optional[tuple]" = None
) -> "tuple[list, list]":
    """``(times, hypervolumes)``: the hypervolume of the front after each finished evaluation, in the order they
    were recorded (as TensorBoard charts it; see :func:`hypervolume_bounds`); a time is the latest end so far.

    ``bounds``: the ``(lows, highs)`` that scale the objectives (default: :func:`hypervolume_bounds`, the scale
    TensorBoard charts; nothing is charted before it is fixed); give the same bounds to compare runs.
    """
    fixed = bounds or hypervolume_bounds(objectives, evaluations)
    if fixed is None:
        return [], []
    lows, highs = fixed
    front: List[Evaluation] = []
    times, volumes = [], []
    ok = 0
    latest = -math.inf
    for e in evaluations:
        if e.end is None:
            continue
        front = extend_front(objectives, front, e)
        ok += e.ok
        latest = max(latest, e.end)
        if bounds is None and ok < HYPERVOLUME_BASIS:
            continue  # as TensorBoard: the scale is fixed by the first successful evaluations
        times.append(latest)
        volumes.append(hypervolume(objectives, front, lows, highs))
    return times, volumes
