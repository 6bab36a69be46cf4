"""The MPI orchestrator (paper Appendix A.1, Algorithm 1), steady-state by default.

Rank 0 runs the strategy and the dispatch loop *and* owns a worker slot like
every other rank, so no GPU idles.  A free rank gets a new architecture at
once (or, in generational mode, when the whole generation is in).  Results
arrive as records; an OOM, a crash or a timeout is a record, never the end of
the search.  Everything is logged as it happens (dispatch.jsonl,
history.jsonl) and a killed search resumes from those files.

Only mpi4py, the strategy and the slot live here: no torch, except what the
optional memory estimate (``evolve.memory``) and zero-cost pre-screen
(``evolve.prescreen``) import on rank 0 when they are configured.  With
``evolve.asha`` a task reports at its rungs and rank 0 answers go on or stop.

The :class:`Dispatcher` keeps the dispatch loop and reaches ranks through ``LocalRank`` / ``RemoteRank``;
what it spends (:class:`Budget`), what the memory gate refuses (:class:`TooBig`) and what it charts
(:class:`Charts`) are small collaborators it calls.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from hpcnas.board import Board
from hpcnas.config import Config
from hpcnas.distributed import available_cpus
from hpcnas.errors import SearchFailed, UserError
from hpcnas.execution.history import RunningTally, SearchLog
from hpcnas.execution.memory import MemoryGate, memory_limit
from hpcnas.execution.slot import WorkerSlot
from hpcnas.plugins import EVALUATORS
from hpcnas.records import (
    Decision,
    Evaluation,
    Origin,
    Result,
    RungReport,
    Status,
    Task,
    WorkerSetup,
    decode,
    encode,
)
from hpcnas.run import Run, as_run
from hpcnas.rundir import RunDir
from hpcnas.signals import ignore_stop_signals
from hpcnas.space.genotype import Genotype
from hpcnas.space.searchspace import SearchSpace
from hpcnas.strategies import STRATEGIES, Generational, Strategy
from hpcnas.strategies.asha import SuccessiveHalving, rung_epochs
from hpcnas.strategies.objectives import hypervolume, parse_objectives
from hpcnas.strategies.prescreen import Prescreen

log = logging.getLogger("hpcnas")

TAG_TASK, TAG_RESULT, TAG_STOP, TAG_DECISION = 1, 2, 3, 4
# How often a rank looks for MPI messages.  A rank expecting one soon (rank 0 between results, a worker
# waiting for its next task or a rung decision) polls every POLL_S; a worker whose child trains only expects a
# stop and polls every TRAINING_POLL_S (the child's result wakes it at once, see WorkerSlot.wait); a worker idle
# for longer than IDLE_S (the end of a search, a generation's barrier) backs off to IDLE_POLL_S.
POLL_S = 0.0001
TRAINING_POLL_S = 0.02
IDLE_S, IDLE_POLL_S = 0.05, 0.0005
COMMIT_S = 0.05  # group commit: the search log is fsynced at most this often (its lines are flushed every pass)


def make_strategy(
    cfg: Config, world: int, data: Optional[str] = None, screened: Optional[Dict[str, float]] = None
) -> Strategy:
    """The configured strategy inside its wrappers: the zero-cost pre-screen (scoring on ``data``, with the
    scores ``screened`` by an earlier run), the generational barrier, then successive halving."""
    ev = cfg.evolve
    objectives = parse_objectives(ev.objectives)
    strategy = STRATEGIES[ev.strategy.name].from_options(
        SearchSpace.from_config(cfg), cfg.seed, objectives, ev.strategy.options
    )
    screen = ev.prescreen
    if screen.score is not None:
        if screen.keep > screen.sample:
            raise UserError(
                f"keeps {screen.keep} of {screen.sample} sampled: keep must not exceed sample", key="evolve.prescreen"
            )
        strategy = Prescreen(strategy, lazy_scorer(cfg, data, screen.score), screen.score, screen.sample, screen.keep)
        strategy.remember(screened or {})
    if ev.strategy.mode == "generational":
        strategy = Generational(strategy, size=world)
    if ev.asha.min_resource is not None:
        rungs = rung_epochs(ev.asha.min_resource, ev.asha.reduction_factor, ev.evaluator.proxy_epochs)
        if not rungs:
            raise UserError(
                f"min_resource {ev.asha.min_resource} leaves no rung before the last of "
                f"{ev.evaluator.proxy_epochs} proxy epochs",
                key="evolve.asha.min_resource",
            )
        strategy = SuccessiveHalving(strategy, rungs, ev.asha.reduction_factor)
    return strategy


def lazy_scorer(cfg: Config, data: Optional[str], name: str) -> Callable[[Genotype], float]:
    """The pre-screen's score of a genotype; torch is imported at the first call, not when configs are checked."""
    scorer: List[Callable[[Genotype], float]] = []

    def score(genotype: Genotype) -> float:
        if not scorer:
            from hpcnas.train.zero_cost import GenotypeScorer

            assert data is not None, "scoring needs the data set"
            scorer.append(GenotypeScorer(cfg, data, [name], cfg.evolve.prescreen.batch, one_thread=True))
        return scorer[0](genotype)

    return score


def check_evolve_config(cfg: Config, world: int) -> None:
    """Raise ``UserError`` for anything in ``cfg.evolve`` that would fail once the ranks are serving.

    Called on rank 0 before any rank starts, so a bad config stops the whole job at once.
    """
    make_strategy(cfg, world)
    EVALUATORS.check(cfg.evolve.evaluator.name)
    if isinstance(cfg.space.searchable, str):
        raise UserError(
            f"space.searchable={cfg.space.searchable} picks blocks by a supernet's warm-up, which evolve has not: "
            "name the groups it samples (a list), or leave it null for every block",
            key="space.searchable",
        )
    parse_faults(cfg.evolve.faults.inject)
    ev = cfg.evolve
    population = getattr(ev.strategy.options, "population", None)  # only a strategy with a population has one
    if population is not None and population > ev.max_evaluations:
        raise UserError(
            f"the population ({population}) must not exceed evolve.max_evaluations ({ev.max_evaluations}): "
            "the search would end before evolving",
            key="evolve.strategy.population",
        )


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
            raise UserError(f"'{item}' is not ID:oom|kill|hang|error", key="evolve.faults.inject")
        out[int(ident)] = kind
    return out


def replay(strategy: Strategy, search_log: SearchLog) -> None:
    """Rebuild the strategy by replaying every logged ask and tell in order."""
    for event in search_log.events():
        if isinstance(event, Evaluation):
            strategy.tell(event)
            continue
        proposal = strategy.ask()
        if proposal is None or proposal.genotype != event.genotype:
            log.warning(
                "replay diverged at evaluation %d (code or config changed?): continuing from the logged records",
                event.id,
            )


class LocalRank:
    """Rank 0's own worker slot, reached by calls."""

    def __init__(self, slot: WorkerSlot):
        self.slot = slot

    def submit(self, task: Task) -> None:
        self.slot.submit(task)

    def decide(self, go_on: bool) -> None:
        self.slot.decide(go_on)


class RemoteRank:
    """A serving rank, reached by MPI messages (typed, :func:`hpcnas.records.encode`)."""

    def __init__(self, comm, rank: int):
        self.comm, self.rank = comm, rank

    def submit(self, task: Task) -> None:
        self.comm.send(encode(task), dest=self.rank, tag=TAG_TASK)

    def decide(self, go_on: bool) -> None:
        self.comm.send(encode(Decision(go_on)), dest=self.rank, tag=TAG_DECISION)


class Budget:
    """What the search may still spend: ``evolve.max_evaluations`` counted in proxy schedules (an evaluation
    stopped at a rung spends the part it trained) and ``evolve.time_budget`` seconds from :meth:`start`.

    An evaluation in flight *commits* the budget it is sure to use, up to its next rung (all of it without
    rungs), so that ranks are not left idle for budget that stopping may yet give back."""

    def __init__(self, cfg: Config, rungs: List[int], finished: List[Evaluation]):
        self.max_evaluations, self.time_budget = cfg.evolve.max_evaluations, cfg.evolve.time_budget
        self.proxy_epochs = cfg.evolve.evaluator.proxy_epochs
        self.spent = sum(e.budget_used(self.proxy_epochs) for e in finished)
        self.committed: Dict[int, float] = {}  # rank -> the share its evaluation in flight is sure to use
        self.first_share = self.share(rungs[0] if rungs else None)  # what a new evaluation commits
        self.started = time.time()

    def start(self) -> None:
        """The time budget counts from now."""
        self.started = time.time()

    def share(self, epochs: Optional[int]) -> float:
        """The part of one evaluation that ``epochs`` of training are (``None``: the whole proxy schedule)."""
        return 1.0 if epochs is None else epochs / self.proxy_epochs

    def commit(self, rank: int, epochs: Optional[int]) -> None:
        """``rank``'s evaluation is sure to train ``epochs`` (``None``: all of them) from here."""
        self.committed[rank] = self.share(epochs)

    def spend(self, evaluation: Evaluation) -> None:
        """A finished evaluation: what it trained is spent."""
        self.spent += evaluation.budget_used(self.proxy_epochs)

    def release(self, rank: int) -> None:
        """``rank``'s evaluation has ended (finished, or retried afresh)."""
        self.committed.pop(rank, None)

    def out_of_time(self) -> bool:
        """Whether the time budget is spent."""
        return self.time_budget is not None and time.time() - self.started >= self.time_budget

    def allows_another(self) -> bool:
        """Whether a new evaluation fits beside those in flight."""
        if self.out_of_time():
            return False
        return self.spent + sum(self.committed.values()) + self.first_share <= self.max_evaluations + 1e-9

    def work_left(self) -> bool:
        """Whether a resume would have evaluations left to run (those in flight aside)."""
        return self.spent + self.first_share <= self.max_evaluations + 1e-9 and not self.out_of_time()


class Charts:
    """TensorBoard of a discrete search, in the background (the dispatcher only queues what to chart): per
    finished evaluation its objectives, the best so far, counts by status, the ranks' utilization and, for
    several objectives, the front's size and hypervolume."""

    def __init__(self, run: Run, objectives, world: int, finished: List[Evaluation]):
        self.board = Board(run.dir.tb, background=True)
        self.started = time.time()
        self.tally = RunningTally(objectives, world, self.started)
        for earlier in finished:  # a resumed search's records
            self.tally.add(earlier, self.started)

    def add(self, evaluation: Evaluation, finished: int) -> None:
        """Chart ``evaluation``, the ``finished``-th to finish."""
        tally, now = self.tally, time.time()
        tally.add(evaluation, now)
        out: Dict[str, Any] = {
            "status": dict(tally.by_status),
            "evaluation": dict(evaluation.objectives) if evaluation.ok else {},
            "utilization": tally.utilization(now),
        }
        if tally.best_fitness is not None:
            out["best_fitness"] = tally.best_fitness
        objectives, front, scale = tally.objectives, list(tally.front), tally.hypervolume_bounds()

        def values() -> Dict[str, Any]:  # the hypervolume, the one costly figure, in the board's thread
            if len(objectives) > 1:
                out["front"] = {"size": len(front)}
                if scale is not None:  # the report's definition: a scale fixed by the first evaluations
                    out["front"]["hypervolume"] = hypervolume(objectives, front, *scale)
            return out

        self.board.scalars_later(values, finished, walltime=evaluation.end)

    def close(self) -> None:
        """Write what is queued and close the event file."""
        self.board.close()


class TooBig:
    """The memory gate's side of dispatching: which proposals it refuses, and when a search whose proposals it
    keeps refusing gives up (the space hardly fits ``evolve.memory.limit``)."""

    def __init__(self, gate: Optional[MemoryGate], max_evaluations: int):
        self.gate = gate
        self.in_a_row = 0
        self.limit = max(100, max_evaluations)  # refusals in a row after which the search gives up

    def admits(self, task: Task) -> bool:
        """Whether ``task`` may train (it fits, or there is no gate); counts the refusals in a row."""
        if self.gate is None or self.gate.admit(task):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        return False

    def refusal(self, task: Task) -> Result:
        """The too_big result of a refused task, with the estimate that refused it."""
        assert self.gate is not None  # only the gate refuses
        error = (
            f"estimated {task.estimate_mb:.0f} MB at batch {task.batch_size}, "
            f"over the limit of {self.gate.limit / 2**20:.0f} MB"
        )
        return Result(task.id, Status.TOO_BIG, error=error, start=task.submit, end=task.submit, epochs=0)

    def gave_up(self) -> bool:
        """Whether the search stopped because nothing it proposed fitted the memory limit."""
        return self.in_a_row >= self.limit


class Dispatcher:
    """Rank 0: ask the strategy, hand tasks to free ranks, record results."""

    def __init__(
        self,
        comm,
        slot: WorkerSlot,
        cfg: Config,
        run: "Run | Path",
        search_log: SearchLog,
        strategy: Strategy,
        status=None,
        any_source=None,
        gate: Optional[MemoryGate] = None,
    ):
        run = as_run(run)
        self.comm, self.slot, self.cfg, self.run_dir = comm, slot, cfg, run.path
        self.rungs = strategy.rungs if isinstance(strategy, SuccessiveHalving) else []
        self.budget = Budget(cfg, self.rungs, search_log.finished)
        self.too_big = TooBig(gate, cfg.evolve.max_evaluations)
        # log lines of the results in hand, written after the next dispatch (stderr is a pipe to mpirun)
        self.said: List[Tuple[str, tuple]] = []
        self.log, self.strategy = search_log, strategy
        self.world = comm.Get_size()
        self.ranks: List[Union[LocalRank, RemoteRank]] = [LocalRank(slot)]  # rank 0 trains too
        self.ranks += [RemoteRank(comm, rank) for rank in range(1, self.world)]
        self.faults = parse_faults(cfg.evolve.faults.inject)
        self.requeue: Deque[Task] = deque(search_log.in_flight())
        self.inflight: Dict[int, Task] = {}
        self.idle: List[int] = list(range(self.world))
        self.stop, self.heart = run.stop, run.heart
        charted = self.heart is not None and cfg.monitor.tensorboard
        self.charts = Charts(run, strategy.objectives, self.world, search_log.finished) if charted else None
        if status is None:
            from mpi4py import MPI  # imported here, not at module level: importing it initializes MPI

            status, any_source = MPI.Status(), MPI.ANY_SOURCE
        self.status, self.any_source = status, any_source  # reused by every poll of the dispatch loop

    # -- tasks ---------------------------------------------------------------

    def _next_task(self) -> Optional[Task]:
        if self.requeue:
            return self.requeue.popleft().again(Origin.REQUEUE)
        while True:
            proposal = self.strategy.ask()
            if proposal is None:
                return None
            task = Task(
                self.log.new_id(),
                proposal.genotype,
                self.cfg.train.batch_size,
                proposal.parent,
                rungs=list(self.rungs),
                scores=dict(proposal.scores),
                screened=dict(proposal.screened),
            )
            if self.too_big.admits(task):
                return task
            self._record_too_big(task)
            if self.too_big.gave_up():
                log.error(
                    "the last %d proposals were all too big for the memory limit: stopping", self.too_big.in_a_row
                )
                return None

    def gave_up(self) -> bool:
        """Whether the search stopped because nothing it proposed fitted the memory limit."""
        return self.too_big.gave_up()

    def _record_too_big(self, task: Task) -> None:
        """Log the ask and its too_big result at once: the strategy learns it, no rank trains it."""
        task.submit = time.time()
        self.log.log_dispatch(task)
        evaluation = Evaluation.of(task, self.too_big.refusal(task), rank=-1)
        evaluation.rank = None
        self._finished(evaluation)

    def _send(self, rank: int, task: Task) -> None:
        task.submit, task.rank, task.fault = time.time(), rank, self.faults.get(task.id)
        self.log.log_dispatch(task)
        self.inflight[rank] = task
        self.budget.commit(rank, task.rungs[0] if task.rungs else None)
        self.ranks[rank].submit(task)

    def _collect(self) -> List[Tuple[int, Union[Result, RungReport]]]:
        results: List[Tuple[int, Union[Result, RungReport]]] = []
        message = self.slot.poll()
        if message is not None:
            results.append((0, message))
        status = self.status
        while self.comm.Iprobe(source=self.any_source, tag=TAG_RESULT, status=status):
            source = status.Get_source()
            said = decode(self.comm.recv(source=source, tag=TAG_RESULT))
            assert isinstance(said, (Result, RungReport)), said
            results.append((source, said))
        return results

    def _decide(self, rank: int, report: RungReport) -> None:
        """A rung report: ask the strategy whether the evaluation goes on, and tell its rank."""
        task = self.inflight[rank]
        go_on = self.strategy.report(task.id, report.rung, report.fitness)
        if go_on:
            later = [r for r in task.rungs if r > report.rung]
            self.budget.commit(rank, later[0] if later else None)
        self.ranks[rank].decide(go_on)
        self.said.append(
            (
                "evaluation %d on rank %d: fitness %.4f after %d epoch(s): %s",
                (task.id, rank, report.fitness, report.rung, "goes on" if go_on else "stopped"),
            )
        )

    def _handle(self, rank: int, message: Union[Result, RungReport]) -> None:
        if isinstance(message, RungReport):
            self._decide(rank, message)
            return
        task = self.inflight.pop(rank)
        self.budget.release(rank)
        result = message
        if result.end is None:
            result.end = time.time()
        if (
            result.status is Status.OOM
            and self.cfg.evolve.faults.retry_oom_half_batch
            and not task.retried
            and task.batch_size > 1
        ):
            log.info(
                "evaluation %d: out of memory at batch %d on rank %d, retrying at batch %d",
                task.id,
                task.batch_size,
                rank,
                task.batch_size // 2,
            )
            self._send(rank, task.again(Origin.RETRY, batch_size=task.batch_size // 2))
            return
        evaluation = Evaluation.of(task, result, rank)
        self._finished(evaluation)
        self.idle.append(rank)
        fit = f"{evaluation.fitness:.4f}" if evaluation.fitness is not None else "-"
        self.said.append(
            ("evaluation %d on rank %d: %s, fitness %s (%d done)", (evaluation.id, rank, evaluation.status, fit,
             len(self.log.finished)))
        )  # fmt: skip

    def _finished(self, evaluation: Evaluation) -> None:
        self.log.log_result(evaluation)
        self.budget.spend(evaluation)
        self.strategy.tell(evaluation)
        if self.charts is not None:
            self.charts.add(evaluation, len(self.log.finished))

    # -- loop ----------------------------------------------------------------

    def _may_dispatch(self) -> bool:
        return not self.stop.signal and self.budget.allows_another()

    def run(self) -> Optional[str]:
        """Dispatch until the budget is spent (or a signal), then stop every rank.

        Returns the signal's name when one cut the search short (work is left for ``--resume``).
        """
        self.budget.start()
        try:
            with self.stop:
                self._dispatch_loop()
        finally:
            stop_serving(self.comm)
            if self.charts is not None:
                self.charts.close()
            if self.slot.busy:
                self.slot.kill()
            self.slot.close()
            self.log.close()
        if not self.stop.requested:
            return None
        work_left = bool(self.inflight) or self.budget.work_left()
        return self.stop.signal if work_left else None

    def _dispatch_loop(self) -> None:
        stop_deadline = None
        while True:
            results = self._collect()
            for rank, result in results:
                self._handle(rank, result)
            dispatched = 0
            while self.idle and self._may_dispatch():
                task = self._next_task()
                if task is None:
                    break
                self._send(self.idle.pop(0), task)
                dispatched += 1
            # after the dispatch, so that a worker waiting for its next task does not wait for them: the
            # records reach the disk, the log lines are written
            self.log.commit(every_s=COMMIT_S)
            for message, args in self.said:
                log.info(message, *args)
            self.said.clear()
            if self.heart is not None:
                self.heart.beat(ranks=self.world, finished=len(self.log.finished), in_flight=len(self.inflight))
            if not self.inflight and (not self._may_dispatch() or not (dispatched or results)):
                break  # budget spent, or nothing in flight and nothing left to propose
            if self.stop.signal and stop_deadline is None:
                stop_deadline = time.time() + self.cfg.evolve.executor.grace_period
                log.info(
                    "%s received: no new dispatch; waiting up to %.0f s for %d evaluation(s) in flight",
                    self.stop.signal,
                    self.cfg.evolve.executor.grace_period,
                    len(self.inflight),
                )
            if stop_deadline is not None and time.time() > stop_deadline:
                log.info(
                    "grace period over: %d evaluation(s) left in flight are re-queued on --resume", len(self.inflight)
                )
                break
            if not results:
                self.slot.wait(POLL_S)


def serve(comm, slot: WorkerSlot) -> None:
    """Ranks > 0: run the tasks rank 0 sends until it says stop."""
    from mpi4py import MPI

    ignore_stop_signals()  # rank 0 coordinates the stop
    status = MPI.Status()
    idle_since = time.monotonic()
    try:
        while True:
            if comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status):
                tag = status.Get_tag()
                message = comm.recv(source=0, tag=tag)
                if tag == TAG_STOP:
                    return
                said = decode(message)
                if isinstance(said, Decision):
                    slot.decide(said.go_on)
                else:
                    assert isinstance(said, Task), said
                    slot.submit(said)
            record = slot.poll()
            if record is not None:
                comm.send(encode(record), dest=0, tag=TAG_RESULT)
                idle_since = time.monotonic()
                continue
            if slot.busy:
                idle_since = time.monotonic()
            slot.wait(poll_interval(slot, time.monotonic() - idle_since))
    finally:
        if slot.busy:
            slot.kill()
        slot.close()


def poll_interval(slot: WorkerSlot, idle_s: float) -> float:
    """How long a worker rank waits before it looks for rank 0's messages again (see ``POLL_S``)."""
    if slot.training:
        return TRAINING_POLL_S
    if slot.busy or idle_s < IDLE_S:
        return POLL_S
    return IDLE_POLL_S


def worker_setup(cfg: Config, run_dir: Path, data: str, local_rank: int, local_size: int) -> WorkerSetup:
    """What every child of this rank needs to know."""
    ev = cfg.evolve
    threads = ev.executor.threads_per_rank or max(1, available_cpus()[0] // max(local_size, 1))
    e = ev.evaluator
    return WorkerSetup(
        config=str(RunDir(run_dir).config),
        data=data,
        run_dir=str(run_dir),
        local_rank=local_rank,
        threads=threads,
        evaluator=e.name,
        proxy_epochs=e.proxy_epochs,
        keep_checkpoints=e.keep_checkpoints,
        latency_runs=e.latency_runs,
        evaluator_options=dataclasses.asdict(e.options),
        zero_cost=e.zero_cost,
        local_size=local_size,
    )


def run_orchestrator(comm, cfg: Config, run: "Run | Path", data: str) -> Optional[str]:
    """Every rank calls this: rank 0 dispatches (and trains), the others serve.  ``run`` is rank 0's open run
    (its heartbeat) or, on the others, the run directory.

    Returns, on rank 0, the signal that stopped the search with work left (else ``None``).
    """
    from mpi4py import MPI

    run = as_run(run)
    run_dir = run.path
    rank = comm.Get_rank()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    setup = worker_setup(cfg, run_dir, data, local.Get_rank(), local.Get_size())
    slot = WorkerSlot(setup.to_dict(), RunDir(run_dir).worker_log(rank), cfg.evolve.executor.task_timeout)
    slot.prestart()
    # every rank's child reports its device's memory; with limit auto rank 0 needs them before any dispatch
    reported = comm.gather(slot.device_memory() if cfg.evolve.memory.limit == "auto" else None, root=0)
    if rank != 0:
        serve(comm, slot)
        return None
    try:
        search_log = SearchLog(run_dir)
        strategy = make_strategy(cfg, comm.Get_size(), data, search_log.screened())
        replay(strategy, search_log)
        limit = memory_limit(cfg, reported)
        gate = MemoryGate(cfg, data, limit) if limit is not None else None
        dispatcher = Dispatcher(comm, slot, cfg, run, search_log, strategy, gate=gate)
    except BaseException:  # the other ranks are serving already: release them before failing
        stop_serving(comm)
        slot.close()
        raise
    done, pending = len(search_log.finished), len(search_log.in_flight())
    if done or pending:
        log.info("resuming: %d evaluation(s) done, %d re-queued", done, pending)
    log.info(
        "evolve (%s, %s) on %d rank(s): budget %d evaluations -> %s",
        cfg.evolve.strategy.name,
        cfg.evolve.strategy.mode,
        comm.Get_size(),
        cfg.evolve.max_evaluations,
        run_dir,
    )
    interrupted = dispatcher.run()
    best = strategy.best()
    if best is None and dispatcher.gave_up():  # the ranks are released: the others wait for the verdict only
        assert gate is not None  # only the gate refuses
        smallest = 1 if cfg.evolve.memory.policy == "shrink_batch" else cfg.train.batch_size
        raise SearchFailed(
            f"the last {dispatcher.too_big.in_a_row} proposals were all estimated over evolve.memory.limit "
            f"({gate.limit / 2**20:.0f} MB) at batch {smallest} and nothing was trained: raise the limit or make "
            f"the space smaller (the estimates are in {RunDir(run_dir).history})"
        )
    if best is not None:
        best.genotype.save(RunDir(run_dir).genotype)
        log.info("best: evaluation %d, fitness %.4f -> %s", best.id, best.fitness, RunDir(run_dir).genotype)
    if len(strategy.objectives) > 1:
        front = strategy.front()
        log.info(
            "Pareto front of %s: %d evaluation(s) (hpcnas pareto %s)",
            ", ".join(map(str, strategy.objectives)),
            len(front),
            run_dir,
        )
    return interrupted
