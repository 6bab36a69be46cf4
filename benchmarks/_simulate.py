"""A discrete-event model of the discrete search at scales this machine cannot run (thousands of ranks).

Workers run tasks of log-normal length; rank 0 is one server that handles each
result and dispatches the next task, one at a time, taking a cost drawn from
the passes of its loop measured here (:func:`measure_rank0_cost`).  Records are fsynced either with every
record (two per task: the dispatch and the result) or by group commit: at most
once per ``commit_every_s``, two fsyncs for everything written since, as
``SearchLog.commit`` does.  A worker waits from the end of its task until rank 0
has handled its result and sent it the next one; that wait, summed, is what
utilization loses.
"""

from __future__ import annotations

import heapq
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np


def measure_rank0_cost(tasks: int = 400, group_commit: bool = True) -> Dict[str, object]:
    """Rank 0's own time per task on this disk, pass by pass: what one pass of the dispatch loop does for one
    finished task in the steady state (the result message decoded, its evaluation, the strategy's tell, the
    running tally and its TensorBoard chart (``Board`` in the background, as the dispatcher has it), the next
    ask and task, both records handed to the operating system by the real ``SearchLog.write``, a log line,
    the heartbeat), without fsync, which the model adds by its own rule; and the time of one fsync.

    Returns the mean (``cost_s``), every pass's time (``costs_s``: the model draws from them, so a slow pass
    weighs as it does here), the bytes written during the timed passes (all of them: nothing waits for
    ``close``) and ``fsync_s``.
    """
    import logging
    import os

    from hpcnas.board import Board
    from hpcnas.config import load_config
    from hpcnas.execution.history import RunningTally, SearchLog
    from hpcnas.execution.orchestrator import make_strategy
    from hpcnas.records import Evaluation, Result, Status, Task
    from hpcnas.run import Heartbeat

    cfg = load_config(None, ["evolve.strategy.population=16", "evolve.strategy.sample_size=4"])
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder = Path(tmp)
        log = SearchLog(folder)
        strategy = make_strategy(cfg, 64)
        log._dispatch.group_commit = log._history.group_commit = group_commit
        heart = Heartbeat(folder, "evolve")
        board = Board(folder / "tb", background=True)
        tally = RunningTally(strategy.objectives, 64, time.time())
        lines = logging.getLogger("hpcnas.simulated-rank0")
        lines.propagate = False
        handler = logging.FileHandler(folder / "log.txt")
        lines.addHandler(handler)
        lines.setLevel(logging.INFO)
        costs = []
        pending: List[Task] = []
        for k in range(tasks):
            start = time.perf_counter()
            if pending:  # the result of the task sent one pass ago
                task = pending.pop()
                raw = Result(task.id, Status.OK, fitness=float(k % 97) / 97, start=0.0, end=1.0).to_dict()
                result = Result.from_dict(raw)  # as it arrives from a worker
                evaluation = Evaluation.of(task, result, 1)
                log.log_result(evaluation)
                strategy.tell(evaluation)
                tally.add(evaluation, time.time())
                chart = {"status": dict(tally.by_status), "best_fitness": tally.best_fitness}
                board.scalars_later(lambda chart=chart: chart, k, walltime=time.time())
                lines.info("evaluation %d: %s, fitness %.4f", task.id, result.status.value, result.fitness)
            proposal = strategy.ask()
            assert proposal is not None
            task = Task(log.new_id(), proposal.genotype, 8, proposal.parent)
            log.log_dispatch(task)
            pending.append(task)
            log.write()
            heart.beat(ranks=64, finished=k, in_flight=1)
            costs.append(time.perf_counter() - start)
        written = sum(p.stat().st_size for p in (folder / "dispatch.jsonl", folder / "history.jsonl"))
        log.close()
        board.close()
        lines.removeHandler(handler)
        handler.close()
        probe = folder / "probe"
        with open(probe, "w") as fh:
            t0 = time.perf_counter()
            for _ in range(50):
                fh.write("x\n")
                fh.flush()
                os.fsync(fh.fileno())
            fsync = (time.perf_counter() - t0) / 50
    costs = costs[10:]  # the first passes warm the strategy's caches up
    return {"cost_s": float(np.mean(costs)), "costs_s": costs, "bytes_written": written, "fsync_s": fsync}


def simulate(
    workers: int,
    median_s: float,
    sigma: float,
    tasks_per_worker: int,
    cost_s: Union[float, Sequence[float]],
    fsync_s: float,
    group_commit_s: float = 0.0,
    generational: bool = False,
    seed: int = 0,
) -> Dict[str, float]:
    """Utilization (whole run and steady state: up to the last dispatch) and the mean wait per task.

    ``cost_s`` is rank 0's work per task without fsync: one figure, or measured passes that each task draws
    its cost from; with ``group_commit_s`` = 0 each task adds two fsyncs, otherwise rank 0 commits (two
    fsyncs) at most once per ``group_commit_s``.
    """
    rng = np.random.default_rng(seed)
    budget = workers * tasks_per_worker
    durations = iter(rng.lognormal(np.log(median_s), sigma, budget).tolist())
    samples = np.atleast_1d(np.asarray(cost_s, dtype=float))
    fsyncs = 0.0 if group_commit_s else 2 * fsync_s
    costs = iter((rng.choice(samples, 2 * budget + workers) + fsyncs).tolist())
    intervals: List[tuple] = []  # (start, end) of every task
    waits: List[float] = []
    rank0_busy = 0.0
    clock, last_commit, pending = 0.0, 0.0, 0
    dispatched = 0
    last_dispatch = 0.0
    ends: List[tuple] = []  # (end time, worker)

    def serve(now: float, work: float) -> float:
        """Rank 0 spends ``work`` seconds from ``now`` (then commits, when a group commit is due)."""
        nonlocal last_commit, pending, rank0_busy
        now += work
        rank0_busy += work
        if group_commit_s and pending and now - last_commit >= group_commit_s:
            now += 2 * fsync_s
            rank0_busy += 2 * fsync_s
            last_commit, pending = now, 0
        return now

    def dispatch(worker: int, now: float) -> None:
        nonlocal dispatched, last_dispatch
        length = next(durations)
        dispatched += 1
        last_dispatch = now
        intervals.append((now, now + length))
        heapq.heappush(ends, (now + length, worker))

    if generational:
        while dispatched < budget:
            batch = min(workers, budget - dispatched)
            for w in range(batch):
                pending += 1
                clock = serve(clock, next(costs) / 2)  # sending a generation, one task at a time
                dispatch(w, clock)
            finished = sorted(heapq.heappop(ends) for _ in range(batch))
            for end, _ in finished:  # rank 0 handles the results as they arrive
                pending += 1
                clock = serve(max(clock, end), next(costs) / 2)
            waits.extend(clock - end for end, _ in finished)
    else:
        for w in range(workers):
            pending += 1
            clock = serve(clock, next(costs) / 2)
            dispatch(w, clock)
        while ends:
            end, worker = heapq.heappop(ends)
            pending += 2
            clock = serve(max(clock, end), next(costs))  # handle the result, send the next task
            if dispatched < budget:
                dispatch(worker, clock)
                waits.append(clock - end)
    span_end = max(end for _, end in intervals)
    return {
        "utilization": _busy(intervals, span_end) / (workers * span_end),
        "utilization_steady": _busy(intervals, last_dispatch) / (workers * last_dispatch),
        "wait_ms_mean": 1000 * float(np.mean(waits)) if waits else 0.0,
        "rank0_busy": rank0_busy / span_end,
    }


def _busy(intervals: List[tuple], until: float) -> float:
    """Worker-seconds busy between 0 and ``until``."""
    return sum(max(0.0, min(end, until) - start) for start, end in intervals)
