"""The discrete search's typed records: a task sent to a rank, a worker's result, one flat evaluation.

Typed dataclasses (a genotype is a :class:`~hpcnas.space.genotype.Genotype`) with a JSON round trip
at the process and file boundary (``to_dict`` / ``from_dict``), shared
by the strategies (which learn from :class:`Evaluation`), the orchestrator
(which sends :class:`Task` and receives :class:`Result`) and the report.
``history.jsonl`` holds one :class:`Evaluation` per line, ``dispatch.jsonl``
one :class:`Task` per line.  Between processes, :func:`encode` / :func:`decode` carry the typed
messages: :class:`Task`, :class:`Result`, :class:`RungReport`, :class:`Decision`, :class:`DeviceInfo`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any, Dict, List, Optional, Union

from hpcnas.space.genotype import Genotype


class Status(str, Enum):
    """How an evaluation ended (a ``str``, so it compares equal to and serializes as its value)."""

    OK = "ok"
    OOM = "oom"  # the allocator refused (CUDA or host)
    CRASHED = "crashed"  # an exception, a signal or an exit in the worker
    TIMEOUT = "timeout"  # no result within evolve.executor.task_timeout
    STOPPED = "stopped"  # stopped early at a rung by successive halving (evolve.asha)
    TOO_BIG = "too_big"  # not trained: its estimated memory exceeds evolve.memory.limit (policy skip)

    def __str__(self) -> str:
        return self.value


class Origin(str, Enum):
    """Why a task was dispatched."""

    STRATEGY = "strategy"  # a fresh proposal: replayed on resume
    REQUEUE = "requeue"  # in flight when the search was killed
    RETRY = "retry"  # the half-batch retry after an OOM

    def __str__(self) -> str:
        return self.value


def _fields(record: Any) -> Dict[str, Any]:
    """A record's fields as a dict for serializing; nested values are shared, not copied (``dataclasses.asdict``
    deep-copies every genotype, a cost on the path from one task's end to the next one's start)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def _known_fields(cls: type, raw: Dict[str, Any]) -> Dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


@dataclass
class Task:
    """One architecture sent to one rank."""

    id: int
    genotype: Genotype
    batch_size: int
    parent: Optional[int] = None  # the evaluation it was mutated from
    origin: Origin = Origin.STRATEGY
    retried: bool = False  # already retried at half batch after an OOM
    submit: Optional[float] = None  # time.time() at dispatch
    rank: Optional[int] = None
    fault: Optional[str] = None  # an injected fault (drills and tests)
    seq: Optional[int] = None  # the search log's common sequence number
    rungs: List[int] = field(default_factory=list)  # epochs after which to report and await a go-on (evolve.asha)
    estimate_mb: Optional[float] = None  # estimated peak training memory at batch_size (evolve.memory)
    shrunk_from: Optional[int] = None  # the configured batch, when the memory estimate made it smaller
    scores: Dict[str, float] = field(default_factory=dict)  # zero-cost scores from the pre-screen (evolve.prescreen)
    screened: Dict[str, float] = field(default_factory=dict)  # every candidate's score by genotype key, for replay

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data."""
        return dict(_fields(self), genotype=self.genotype.to_dict(), origin=self.origin.value)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "Task":
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        task = cls(**dict(_known_fields(cls, raw), genotype=Genotype.from_dict(raw["genotype"], source="task")))
        task.origin = Origin(task.origin)
        return task

    def again(self, origin: Origin, batch_size: Optional[int] = None) -> "Task":
        """The same architecture dispatched anew (re-queued, or retried at another batch size)."""
        return Task(
            self.id,
            self.genotype,
            batch_size or self.batch_size,
            self.parent,
            origin,
            retried=self.retried or origin is Origin.RETRY,
            rungs=self.rungs,
            estimate_mb=self.estimate_mb,
            shrunk_from=self.shrunk_from,
            scores=self.scores,
        )


@dataclass
class Result:
    """What a worker child reports for one task: its status and what it measured."""

    id: int
    status: Status
    fitness: Optional[float] = None  # the best validation mIoU of the proxy training
    measured: Dict[str, float] = field(default_factory=dict)  # params, flops, peak_memory, latency, ...
    start: Optional[float] = None
    end: Optional[float] = None
    error: Optional[str] = None
    epochs: Optional[int] = None  # epochs trained (fewer than the proxy's when stopped at a rung)
    rungs: Dict[str, float] = field(default_factory=dict)  # fitness reported at each rung, by epochs (as a string)
    paused: float = 0.0  # seconds spent waiting for rung decisions (not training)
    scores: Dict[str, float] = field(default_factory=dict)  # zero-cost scores measured by the child

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data."""
        return dict(_fields(self), status=self.status.value)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "Result":
        """The inverse of :meth:`to_dict` (unknown keys are ignored)."""
        result = cls(**_known_fields(cls, raw))
        result.status = Status(result.status)
        return result


class _PlainMessage:
    """A message of plain fields: its JSON is its fields."""

    def to_dict(self) -> Dict[str, Any]:
        return _fields(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> Any:
        return cls(**_known_fields(cls, raw))


@dataclass
class RungReport(_PlainMessage):
    """A task's fitness after one of its rungs; its child then waits for a :class:`Decision`."""

    id: int
    rung: int  # epochs trained
    fitness: float


@dataclass
class Decision(_PlainMessage):
    """Rank 0's answer to a rung report: train on, or stop and report."""

    go_on: bool


@dataclass
class DeviceInfo(_PlainMessage):
    """What a worker child says once, at start-up: the bytes of memory one evaluation may use."""

    memory: int


Message = Union[Task, Result, RungReport, Decision, DeviceInfo]
MESSAGES: Dict[str, Any] = {
    "task": Task,
    "result": Result,
    "rung": RungReport,
    "decision": Decision,
    "device": DeviceInfo,
}


def encode(message: Message) -> Dict[str, Any]:
    """A message between the dispatcher, its ranks and their worker children, as plain data: its fields and
    its ``type``, so that a reader never tells messages apart by which keys they happen to hold."""
    kind = next(name for name, cls in MESSAGES.items() if isinstance(message, cls))
    return dict(message.to_dict(), type=kind)


def decode(raw: Dict[str, Any]) -> Message:
    """The typed message :func:`encode` wrote."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in MESSAGES:
        raise ValueError(f"not an hpcnas message: {str(raw)[:200]}")
    return MESSAGES[kind].from_dict({k: v for k, v in raw.items() if k != "type"})


def send(stream: IO[str], message: Message) -> None:
    """One message to the other end, one JSON line, at once."""
    stream.write(json.dumps(encode(message)) + "\n")
    stream.flush()


def receive(stream: IO[str]) -> Optional[Message]:
    """The other end's next message, or ``None`` when it closed the stream."""
    line = stream.readline()
    return decode(json.loads(line)) if line else None


# measured quantities that history records written before objectives existed kept as top-level keys
_LEGACY_MEASURES = {"params": "params", "flops": "flops", "peak_memory_mb": "peak_memory"}


@dataclass
class Evaluation:
    """One finished evaluation, any status: the flat record of ``history.jsonl`` that strategies learn from.

    ``objectives`` holds every measured quantity by objective name: ``miou`` (the
    fitness), ``params``, ``flops``, ``peak_memory`` (MB), ``latency`` (ms).
    """

    id: int
    genotype: Genotype
    status: Status
    fitness: Optional[float] = None
    objectives: Dict[str, float] = field(default_factory=dict)
    parent: Optional[int] = None
    rank: Optional[int] = None
    batch_size: Optional[int] = None
    retried: bool = False
    submit: Optional[float] = None
    start: Optional[float] = None
    end: Optional[float] = None
    error: Optional[str] = None
    seq: Optional[int] = None
    epochs: Optional[int] = None  # epochs trained; None: the whole proxy schedule (or nothing, when too_big)
    rungs: Dict[str, float] = field(default_factory=dict)  # fitness at each rung reached, by epochs (as a string)
    paused: float = 0.0  # seconds between start and end spent waiting for rung decisions
    estimate_mb: Optional[float] = None  # estimated peak training memory at batch_size
    shrunk_from: Optional[int] = None  # the configured batch, when the memory estimate made it smaller
    scores: Dict[str, float] = field(default_factory=dict)  # zero-cost scores (pre-screen, or the child's)

    @property
    def ok(self) -> bool:
        """Whether it trained to the end with a fitness."""
        return self.status is Status.OK and self.fitness is not None

    def budget_used(self, proxy_epochs: int) -> float:
        """How much of ``evolve.max_evaluations`` it used: a share by epochs when stopped at a rung, nothing when
        never trained (too_big), one whole evaluation otherwise."""
        if self.status is Status.TOO_BIG:
            return 0.0
        if self.status is Status.STOPPED and self.epochs is not None:
            return min(1.0, self.epochs / max(proxy_epochs, 1))
        return 1.0

    @property
    def memory_saved(self) -> bool:
        """Whether the memory estimate kept it from an out-of-memory: skipped as too big, or run at a smaller batch."""
        return self.status is Status.TOO_BIG or self.shrunk_from is not None

    @classmethod
    def of(cls, task: Task, result: Result, rank: int) -> "Evaluation":
        """The record of ``task`` finished with ``result`` on ``rank``."""
        objectives = {k: float(v) for k, v in result.measured.items() if v is not None}
        if result.fitness is not None:
            objectives["miou"] = float(result.fitness)
        return cls(
            task.id,
            task.genotype,
            result.status,
            result.fitness,
            objectives,
            task.parent,
            rank,
            task.batch_size,
            task.retried,
            task.submit,
            result.start,
            result.end,
            result.error,
            epochs=result.epochs,
            rungs=dict(result.rungs),
            paused=result.paused,
            estimate_mb=task.estimate_mb,
            shrunk_from=task.shrunk_from,
            scores={**task.scores, **result.scores},
        )

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data."""
        return dict(_fields(self), genotype=self.genotype.to_dict(), status=self.status.value)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "Evaluation":
        """The inverse of :meth:`to_dict`; also reads records written before ``objectives`` existed."""
        genotype = Genotype.from_dict(raw["genotype"], source=f"evaluation {raw.get('id')}")
        evaluation = cls(**dict(_known_fields(cls, raw), genotype=genotype))
        evaluation.status = Status(evaluation.status)
        objectives = dict(evaluation.objectives or {})
        for old, name in _LEGACY_MEASURES.items():
            if raw.get(old) is not None:
                objectives.setdefault(name, float(raw[old]))
        if evaluation.fitness is not None:
            objectives.setdefault("miou", float(evaluation.fitness))
        evaluation.objectives = objectives
        return evaluation


@dataclass
class WorkerSetup:
    """What every worker child of a rank needs to know (JSON, passed on its command line)."""

    config: str  # the run's config.yaml
    data: str  # the HDF5 data set
    run_dir: str
    local_rank: int = 0  # the rank's index on its node: picks the GPU
    threads: int = 1  # CPU threads of the child
    evaluator: str = "train"  # a name registered in hpcnas.plugins.EVALUATORS
    proxy_epochs: int = 5
    keep_checkpoints: bool = False
    latency_runs: int = 10  # timed forward passes for the latency objective (0: not measured)
    evaluator_options: Dict[str, Any] = field(default_factory=dict)  # the evaluator's Options, as plain data
    zero_cost: bool = False  # also score each architecture at initialization (grad-norm, SynFlow, NASWOT)
    local_size: int = 1  # ranks on this node: they share its host memory

    def to_dict(self) -> Dict[str, Any]:
        """Plain JSON-able data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "WorkerSetup":
        """The inverse of :meth:`to_dict`."""
        return cls(**_known_fields(cls, raw))
