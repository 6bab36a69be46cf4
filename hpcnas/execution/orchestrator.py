"""The MPI orchestrator (paper Appendix A.1, Algorithm 1), steady-state by default.

Rank 0 runs the strategy and the dispatch loop *and* owns a worker slot like
every other rank, so no GPU idles.  A free rank gets a new architecture at
once (or, in generational mode, when the whole generation is in).  Results
arrive as records; an OOM, a crash or a timeout is a record, never the end of
the search.  Everything is logged as it happens (dispatch.jsonl,
history.jsonl) and a killed search resumes from those files.

Only mpi4py, the strategy and the slot live here: no torch.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

from hpcnas.config import Config
from hpcnas.errors import UserError
from hpcnas.execution.history import SearchLog
from hpcnas.execution.slot import WorkerSlot
from hpcnas.signals import STOP, ignore_stop_signals
from hpcnas.space.genotype import Genotype
from hpcnas.strategies.base import Generational, SpaceShape, Strategy
from hpcnas.strategies.evolution import RegularizedEvolution
from hpcnas.strategies.random import RandomSearch

log = logging.getLogger("hpcnas")

TAG_TASK, TAG_RESULT, TAG_STOP = 1, 2, 3
POLL_S = 0.0005


def make_strategy(cfg: Config, world: int) -> Strategy:
    """The configured strategy, wrapped in the generational barrier if asked."""
    sp, ev = cfg.space, cfg.evolve
    shape = SpaceShape(sp.topology, sp.op_set, sp.nodes, sp.towers, sp.tower_depth, sp.depth, cfg.search.decode.edges_per_node)
    if ev.strategy == "random":
        strategy: Strategy = RandomSearch(shape, seed=cfg.seed)
    else:
        if ev.sample_size > ev.population:
            raise UserError(f"must be <= evolve.population ({ev.population})", key="evolve.sample_size")
        strategy = RegularizedEvolution(shape, seed=cfg.seed, population=ev.population, sample_size=ev.sample_size)
    return Generational(strategy, size=world) if ev.mode == "generational" else strategy


def check_evolve_config(cfg: Config, world: int) -> None:
    """Raise ``UserError`` for anything in ``cfg.evolve`` that would fail once the ranks are serving.

    Called on rank 0 before any rank starts, so a bad config stops the whole job at once.
    """
    make_strategy(cfg, world)
    parse_faults(cfg.evolve.inject_faults)
    ev = cfg.evolve
    if ev.strategy == "evolution" and ev.population > ev.max_evaluations:
        raise UserError(f"the population ({ev.population}) must not exceed evolve.max_evaluations ({ev.max_evaluations}): "
                        "the search would end before evolving", key="evolve.population")


def stop_serving(comm) -> None:
    """Tell every rank > 0 to leave :func:`serve`."""
    for rank in range(1, comm.Get_size()):
        comm.send(None, dest=rank, tag=TAG_STOP)


def parse_faults(items: List[str]) -> Dict[int, str]:
    """``["3:oom", "5:kill"]`` -> ``{3: "oom", 5: "kill"}``."""
    out = {}
    for item in items:
        ident, _, kind = str(item).partition(":")
        if not ident.strip().isdigit() or kind not in ("oom", "kill", "hang", "error"):
            raise UserError(f"'{item}' is not ID:oom|kill|hang|error", key="evolve.inject_faults")
        out[int(ident)] = kind
    return out


def replay(strategy: Strategy, search_log: SearchLog) -> None:
    """Rebuild the strategy by replaying every logged ask and tell in order."""
    for event in search_log.events():
        if event["kind"] == "tell":
            strategy.tell(event)
            continue
        proposal = strategy.ask()
        if proposal is None or proposal.genotype.to_dict() != event["genotype"]:
            log.warning("replay diverged at evaluation %d (code or config changed?): continuing from the logged records", event["id"])


class Dispatcher:
    """Rank 0: ask the strategy, hand tasks to free ranks, record results."""

    def __init__(self, comm, slot: WorkerSlot, cfg: Config, run_dir: Path, search_log: SearchLog, strategy: Strategy):
        self.comm, self.slot, self.cfg, self.run_dir = comm, slot, cfg, run_dir
        self.log, self.strategy = search_log, strategy
        self.world = comm.Get_size()
        self.faults = parse_faults(cfg.evolve.inject_faults)
        self.requeue: Deque[Dict[str, Any]] = deque(search_log.in_flight())
        self.inflight: Dict[int, Dict[str, Any]] = {}
        self.idle: List[int] = list(range(self.world))
        self.stop = STOP
        from mpi4py import MPI  # imported here, not at module level: importing it initializes MPI

        self.status, self.any_source = MPI.Status(), MPI.ANY_SOURCE  # reused by every poll of the dispatch loop

    # -- tasks ---------------------------------------------------------------

    def _next_task(self) -> Optional[Dict[str, Any]]:
        if self.requeue:
            old = self.requeue.popleft()
            return {k: old[k] for k in ("id", "genotype", "parent", "batch_size")} | {"origin": "requeue", "retried": old.get("retried", False)}
        proposal = self.strategy.ask()
        if proposal is None:
            return None
        return {"id": self.log.new_id(), "genotype": proposal.genotype.to_dict(), "parent": proposal.parent, "batch_size": self.cfg.train.batch_size, "origin": "strategy", "retried": False}

    def _send(self, rank: int, task: Dict[str, Any]) -> None:
        task = dict(task, submit=time.time(), rank=rank, fault=self.faults.get(task["id"]))
        self.log.log_dispatch(task)
        self.inflight[rank] = task
        if rank == 0:
            self.slot.submit(task)
        else:
            self.comm.send(task, dest=rank, tag=TAG_TASK)

    def _collect(self) -> List[tuple]:
        results = []
        record = self.slot.poll()
        if record is not None:
            results.append((0, record))
        status = self.status
        while self.comm.Iprobe(source=self.any_source, tag=TAG_RESULT, status=status):
            source = status.Get_source()
            results.append((source, self.comm.recv(source=source, tag=TAG_RESULT)))
        return results

    def _handle(self, rank: int, result: Dict[str, Any]) -> None:
        task = self.inflight.pop(rank)
        ev = self.cfg.evolve
        if result["status"] == "oom" and ev.retry_oom_half_batch and not task.get("retried") and task["batch_size"] > 1:
            log.info("evaluation %d: out of memory at batch %d on rank %d, retrying at batch %d", task["id"], task["batch_size"], rank, task["batch_size"] // 2)
            retry = {k: task[k] for k in ("id", "genotype", "parent")} | {"batch_size": task["batch_size"] // 2, "origin": "retry", "retried": True}
            self._send(rank, retry)
            return
        record = {
            "id": task["id"], "genotype": task["genotype"], "parent": task["parent"], "status": result["status"],
            "fitness": result.get("fitness"), "params": result.get("params"), "flops": result.get("flops"),
            "peak_memory_mb": result.get("peak_memory_mb"), "rank": rank, "batch_size": task["batch_size"], "retried": task.get("retried", False),
            "submit": task["submit"], "start": result.get("start"), "end": result.get("end", time.time()), "error": result.get("error"),
        }
        self.log.log_result(record)
        self.strategy.tell(record)
        self.idle.append(rank)
        fit = f"{record['fitness']:.4f}" if record["fitness"] is not None else "-"
        log.info("evaluation %d on rank %d: %s, fitness %s (%d done)", record["id"], rank, record["status"], fit, len(self.log.finished))

    # -- loop ----------------------------------------------------------------

    def _out_of_time(self, started: float) -> bool:
        budget = self.cfg.evolve.time_budget
        return budget is not None and time.time() - started >= budget

    def _budget_left(self, started: float) -> bool:
        if self.stop.signal or self._out_of_time(started):
            return False
        return len(self.log.finished) + len(self.inflight) < self.cfg.evolve.max_evaluations

    def run(self) -> Optional[str]:
        """Dispatch until the budget is spent (or a signal), then stop every rank.

        Returns the signal's name when one cut the search short (work is left for ``--resume``).
        """
        started = time.time()
        try:
            with self.stop:
                self._dispatch_loop(started)
        finally:
            stop_serving(self.comm)
            if self.slot.busy:
                self.slot.kill()
            self.slot.close()
            self.log.close()
        if not self.stop.requested:
            return None
        work_left = bool(self.inflight) or (len(self.log.finished) < self.cfg.evolve.max_evaluations and not self._out_of_time(started))
        return self.stop.signal if work_left else None

    def _dispatch_loop(self, started: float) -> None:
        stop_deadline = None
        while True:
            dispatched = 0
            while self.idle and self._budget_left(started):
                task = self._next_task()
                if task is None:
                    break
                self._send(self.idle.pop(0), task)
                dispatched += 1
            results = self._collect()
            for rank, result in results:
                self._handle(rank, result)
            if not self.inflight and (not self._budget_left(started) or not (dispatched or results)):
                break  # budget spent, or nothing in flight and nothing left to propose
            if self.stop.signal and stop_deadline is None:
                stop_deadline = time.time() + self.cfg.evolve.grace_period
                log.info("%s received: no new dispatch; waiting up to %.0f s for %d evaluation(s) in flight", self.stop.signal, self.cfg.evolve.grace_period, len(self.inflight))
            if stop_deadline is not None and time.time() > stop_deadline:
                log.info("grace period over: %d evaluation(s) left in flight are re-queued on --resume", len(self.inflight))
                break
            if not results:
                time.sleep(POLL_S)


def serve(comm, slot: WorkerSlot) -> None:
    """Ranks > 0: run the tasks rank 0 sends until it says stop."""
    from mpi4py import MPI

    ignore_stop_signals()  # rank 0 coordinates the stop
    status = MPI.Status()
    try:
        while True:
            if comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status):
                tag = status.Get_tag()
                message = comm.recv(source=0, tag=tag)
                if tag == TAG_STOP:
                    return
                slot.submit(message)
            record = slot.poll()
            if record is not None:
                comm.send(record, dest=0, tag=TAG_RESULT)
            else:
                time.sleep(POLL_S)
    finally:
        if slot.busy:
            slot.kill()
        slot.close()


def worker_setup(cfg: Config, run_dir: Path, data: str, local_rank: int, local_size: int) -> Dict[str, Any]:
    """What every child of this rank needs to know (JSON, passed on its command line)."""
    ev = cfg.evolve
    threads = ev.threads_per_rank or max(1, (os.cpu_count() or 1) // max(local_size, 1))
    return {
        "config": str(run_dir / "config.yaml"), "data": data, "run_dir": str(run_dir), "local_rank": local_rank, "threads": threads,
        "proxy_epochs": ev.proxy_epochs, "keep_checkpoints": ev.keep_checkpoints, "evaluator": ev.evaluator,
        "sleep_median": ev.sleep_median, "sleep_sigma": ev.sleep_sigma,
    }


def run_orchestrator(comm, cfg: Config, run_dir: Path, data: str) -> Optional[str]:
    """Every rank calls this: rank 0 dispatches (and trains), the others serve.

    Returns, on rank 0, the signal that stopped the search with work left (else ``None``).
    """
    from mpi4py import MPI

    rank = comm.Get_rank()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    setup = worker_setup(cfg, run_dir, data, local.Get_rank(), local.Get_size())
    slot = WorkerSlot(setup, run_dir / "workers" / f"rank-{rank:03d}.log", cfg.evolve.task_timeout)
    slot.prestart()
    if rank != 0:
        serve(comm, slot)
        return None
    try:
        search_log = SearchLog(run_dir)
        strategy = make_strategy(cfg, comm.Get_size())
        replay(strategy, search_log)
        dispatcher = Dispatcher(comm, slot, cfg, run_dir, search_log, strategy)
    except BaseException:  # the other ranks are serving already: release them before failing
        stop_serving(comm)
        slot.close()
        raise
    done, pending = len(search_log.finished), len(search_log.in_flight())
    if done or pending:
        log.info("resuming: %d evaluation(s) done, %d re-queued", done, pending)
    log.info("evolve (%s, %s) on %d rank(s): budget %d evaluations -> %s", cfg.evolve.strategy, cfg.evolve.mode, comm.Get_size(), cfg.evolve.max_evaluations, run_dir)
    interrupted = dispatcher.run()
    ok = [r for r in search_log.finished if r["status"] == "ok" and r["fitness"] is not None]
    if ok:
        best = max(ok, key=lambda r: r["fitness"])
        Genotype.from_dict(best["genotype"]).save(run_dir / "genotype.json")
        log.info("best: evaluation %d, fitness %.4f -> %s", best["id"], best["fitness"], run_dir / "genotype.json")
    return interrupted
