"""The discrete search's records: dispatch.jsonl (what was sent) and history.jsonl (what finished).

Both files are appended one line per record, written in sequence order once
rank 0 has dispatched (see :meth:`SearchLog.write`) and fsynced in groups
(:meth:`SearchLog.commit`); they carry a common sequence number, so replaying
them in ``seq`` order rebuilds the strategy exactly (asks and tells in their
original order), and the tasks dispatched but never finished are the ones in
flight when the search was killed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from hpcnas.records import Evaluation, Origin, Status, Task
from hpcnas.rundir import JsonlWriter, RunDir, read_jsonl
from hpcnas.strategies.objectives import (
    HYPERVOLUME_BASIS,
    Objective,
    extend_front,
    pareto_front,
    parse_objectives,
    scale_bounds,
)


class SearchLog:
    """Appends dispatches and results with a shared sequence number."""

    def __init__(self, run_dir: Path):
        files = RunDir(run_dir)
        self.dispatched: List[Task] = [Task.from_dict(r) for r in read_jsonl(files.dispatch)]
        self.finished: List[Evaluation] = [Evaluation.from_dict(r) for r in read_jsonl(files.history)]
        seqs = [t.seq for t in self.dispatched if t.seq is not None] + [
            e.seq for e in self.finished if e.seq is not None
        ]
        self.seq = max(seqs, default=-1) + 1
        # results count too: after a machine crash a result's line may have reached the disk without its dispatch
        ids = [t.id for t in self.dispatched] + [e.id for e in self.finished]
        self.next_id = max(ids, default=-1) + 1
        self._dispatch = JsonlWriter(files.dispatch, group_commit=True)
        self._history = JsonlWriter(files.history, group_commit=True)
        self._unwritten: List[Tuple[JsonlWriter, Union[Task, Evaluation]]] = []  # logged, in sequence order
        self.last_commit = time.monotonic()

    def events(self) -> List[Union[Task, Evaluation]]:
        """Every logged ask (a strategy's task) and tell (an evaluation), in their original order."""
        asks: List[Union[Task, Evaluation]] = [t for t in self.dispatched if t.origin is Origin.STRATEGY]
        return sorted(asks + list(self.finished), key=lambda r: r.seq if r.seq is not None else -1)

    def in_flight(self) -> List[Task]:
        """The last dispatch of every task that has no result (to re-queue on resume)."""
        done = {e.id for e in self.finished}
        last: Dict[int, Task] = {}
        for task in self.dispatched:
            if task.id not in done:
                last[task.id] = task
        return [last[k] for k in sorted(last)]

    def screened(self) -> Dict[str, float]:
        """Every zero-cost score the pre-screen logged, by genotype key (a resumed search does not score again)."""
        out: Dict[str, float] = {}
        for task in self.dispatched:
            out.update(task.screened)
        return out

    def new_id(self) -> int:
        """A fresh evaluation id."""
        self.next_id += 1
        return self.next_id - 1

    def log_dispatch(self, task: Task) -> None:
        """A task sent to a rank (stamped with the next sequence number)."""
        task.seq, self.seq = self.seq, self.seq + 1
        self.dispatched.append(task)
        self._unwritten.append((self._dispatch, task))

    def log_result(self, evaluation: Evaluation) -> None:
        """A finished evaluation, any status (stamped with the next sequence number)."""
        evaluation.seq, self.seq = self.seq, self.seq + 1
        self.finished.append(evaluation)
        self._unwritten.append((self._history, evaluation))

    def write(self) -> None:
        """Hand the records logged since the last call to the operating system, one flushed line each, in
        sequence order.

        Rank 0 calls this after it has dispatched, so that serializing and writing are not between a
        worker's result and its next task.  A killed rank 0 loses at most the records of that one pass
        (results being handled and tasks just sent), and resume handles both: the task whose result is
        lost is in flight and runs again, a lost dispatch is asked again.  Written in order, a tell is
        never on disk without the asks before it.
        """
        for writer, record in self._unwritten:
            writer.write(record.to_dict())
        self._unwritten.clear()

    def commit(self, every_s: float = 0.0) -> None:
        """Write what is logged, then fsync both files (dispatches first), at most once per ``every_s`` seconds.

        Group commit: at thousands of ranks results arrive faster than a disk fsyncs, so rank 0 makes a
        burst of records durable at once.  A crash of the machine loses at most the last ``every_s`` of
        records, and a lost dispatch is simply asked again on resume.
        """
        self.write()
        now = time.monotonic()
        if now - self.last_commit >= every_s and (self._dispatch.pending or self._history.pending):
            self._dispatch.commit()
            self._history.commit()
            self.last_commit = now

    def close(self) -> None:
        """Write, commit and close both files."""
        self.write()
        self._dispatch.close()
        self._history.close()


def utilization(evaluations: Sequence[Evaluation], ranks: int, since: float, until: float) -> Optional[float]:
    """Busy worker-seconds of the finished evaluations between ``since`` and ``until``, over ``ranks`` x that span
    (time an evaluation waited for a rung decision is not busy)."""
    if ranks < 1 or until <= since:
        return None

    busy = sum(busy_seconds(e, since, until) for e in evaluations)
    return busy / (ranks * (until - since))


def busy_seconds(e: Evaluation, since: float, until: float) -> float:
    """The seconds ``e`` kept its rank busy between ``since`` and ``until`` (less the time paused at rungs)."""
    start = until if e.start is None else e.start  # never started: nothing; still running: up to `until`
    end = until if e.end is None else min(e.end, until)
    return max(0.0, end - max(start, since) - e.paused)


class RunningTally:
    """What the dispatcher charts after each finished evaluation (counts by status, the best fitness, the ranks'
    utilization, the front), brought up to date per evaluation instead of recomputed over the whole history:
    at thousands of evaluations that would cost rank 0 more than dispatching does."""

    def __init__(self, objectives: Sequence[Objective], ranks: int, since: float):
        self.objectives, self.ranks, self.since = list(objectives), ranks, since
        self.by_status: Dict[str, int] = {}
        self.best_fitness: Optional[float] = None
        self.busy = 0.0  # worker-seconds since `since`, of the evaluations finished so far
        self.front: List[Evaluation] = []
        self.basis: List[Evaluation] = []  # the first successful evaluations: the hypervolume's fixed scale

    def add(self, e: Evaluation, now: float) -> None:
        """Count one finished evaluation (``now``: when it was recorded, the end of a rank's busy time)."""
        self.by_status[str(e.status)] = self.by_status.get(str(e.status), 0) + 1
        self.busy += busy_seconds(e, self.since, now)
        if not e.ok:
            return
        if e.fitness is not None:
            self.best_fitness = e.fitness if self.best_fitness is None else max(self.best_fitness, e.fitness)
        if len(self.basis) < HYPERVOLUME_BASIS:
            self.basis.append(e)
        if len(self.objectives) > 1:
            self.front = extend_front(self.objectives, self.front, e)

    def hypervolume_bounds(self) -> Optional[Tuple[List[float], List[float]]]:
        """The hypervolume's fixed scale (:func:`~hpcnas.strategies.objectives.hypervolume_bounds`), None before."""
        return scale_bounds(self.objectives, self.basis) if len(self.basis) == HYPERVOLUME_BASIS else None

    def utilization(self, now: float) -> Optional[float]:
        """Busy worker-seconds over ``ranks`` x the time since ``since``: :func:`utilization` of what was added."""
        if self.ranks < 1 or now <= self.since:
            return None
        return self.busy / (self.ranks * (now - self.since))


@dataclass
class FinishedSearch:
    """A discrete search's records read back: its objectives, every evaluation, and the Pareto front."""

    run_dir: Path
    objectives: List[Objective]
    evaluations: List[Evaluation]
    proxy_epochs: int = 5

    def spending(self) -> str:
        """One line on the GPU time it spared: out-of-memory runs the memory estimate avoided, and the proxy
        epochs successive halving did not train."""
        avoided = [e for e in self.evaluations if e.memory_saved]
        too_big = sum(e.status is Status.TOO_BIG for e in avoided)
        ooms = sum(e.status is Status.OOM for e in self.evaluations)
        stopped = [e for e in self.evaluations if e.status is Status.STOPPED]
        trained = [e for e in self.evaluations if e.status is not Status.TOO_BIG]
        saved = sum(self.proxy_epochs - (e.epochs or 0) for e in stopped)
        return (
            f"OOMs avoided by the memory estimate: {len(avoided)} ({too_big} too big, "
            f"{len(avoided) - too_big} at a smaller batch); out of memory: {ooms}; stopped at a rung: {len(stopped)}, "
            f"{saved} of {len(trained) * self.proxy_epochs} proxy epochs saved"
        )

    @property
    def front(self) -> List[Evaluation]:
        """The feasible evaluations no other one dominates (one objective: the best ones)."""
        return pareto_front(self.objectives, self.evaluations)


def read_search(run_dir: Path) -> Optional[FinishedSearch]:
    """The records of the discrete search in ``run_dir``, or ``None`` when it holds no ``history.jsonl``."""
    from hpcnas.config import load_config

    run_dir = Path(run_dir)
    raw = read_jsonl(RunDir(run_dir).history)
    if not raw:
        return None
    config = RunDir(run_dir).config
    cfg = load_config(str(config)) if config.exists() else None
    names = cfg.evolve.objectives if cfg else ["miou"]
    proxy_epochs = cfg.evolve.evaluator.proxy_epochs if cfg else 5
    return FinishedSearch(run_dir, parse_objectives(names), [Evaluation.from_dict(r) for r in raw], proxy_epochs)
