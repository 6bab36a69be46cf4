"""The dispatcher, replay and the search log in one process: a fake communicator and fake worker slots.

The mpirun tests cover the real thing end to end; these pin the bookkeeping
(budget, retries, re-queues, sequence numbers) exactly and quickly.
"""

from __future__ import annotations

import json
import logging
import random
from collections import deque

import pytest

from hpcnas.config import load_config
from hpcnas.execution.history import SearchLog
from hpcnas.execution.orchestrator import TAG_RESULT, TAG_STOP, TAG_TASK, Dispatcher, make_strategy, replay
from hpcnas.records import Evaluation, Origin, Result, Status, Task, decode, encode
from hpcnas.rundir import read_jsonl
from hpcnas.space.searchspace import SearchSpace

GENOTYPE = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2).sample(random.Random(0))


class FakeStatus:
    def __init__(self):
        self.source = None

    def Get_source(self):
        return self.source


def answer(task: Task) -> Result:
    """What a worker reports for a task: oom when asked to, else a fitness from its id."""
    if task.fault == "oom":
        return Result(task.id, Status.OOM, error="injected", start=1.0, end=2.0)
    return Result(task.id, Status.OK, fitness=task.id / 100, measured={"params": 10.0 * task.id}, start=1.0, end=2.0)


class FakeComm:
    """Ranks 1..world-1 answer every task at the next probe; what rank 0 sends is recorded."""

    def __init__(self, world):
        self.world = world
        self.sent = []  # (dest, tag, message)
        self.ready = deque()  # (source, result)

    def Get_size(self):
        return self.world

    def send(self, message, dest, tag):
        self.sent.append((dest, tag, message))
        if tag == TAG_TASK:  # the message as it crosses MPI: plain data, typed at each end
            self.ready.append((dest, encode(answer(decode(message)))))

    def Iprobe(self, source, tag, status):
        assert tag == TAG_RESULT
        if self.ready:
            status.source = self.ready[0][0]
            return True
        return False

    def recv(self, source, tag):
        got, result = self.ready.popleft()
        assert got == source
        return result


class FakeSlot:
    """Rank 0's own worker: answers at the next poll."""

    def __init__(self):
        self.task, self.submitted, self.closed = None, [], False

    @property
    def busy(self):
        return self.task is not None

    def submit(self, task):
        self.task = task
        self.submitted.append(task)

    def wait(self, timeout):
        pass  # the answer is ready at the next poll

    def poll(self):
        task, self.task = self.task, None
        return answer(task) if task is not None else None

    def kill(self):
        self.task = None

    def close(self):
        self.closed = True


def dispatcher(tmp_path, world=3, *overrides):
    cfg = load_config(None, ["evolve.strategy.name=random", "evolve.max_evaluations=7", *overrides])
    comm, slot = FakeComm(world), FakeSlot()
    log = SearchLog(tmp_path)
    strategy = make_strategy(cfg, world)
    replay(strategy, log)
    return Dispatcher(comm, slot, cfg, tmp_path, log, strategy, status=FakeStatus(), any_source=-1), comm, slot


def test_the_budget_is_dispatched_over_every_rank_and_every_result_recorded_once(tmp_path):
    d, comm, slot = dispatcher(tmp_path)
    assert d.run() is None
    history = read_jsonl(tmp_path / "history.jsonl")
    assert sorted(r["id"] for r in history) == list(range(7))
    assert {r["rank"] for r in history} == {0, 1, 2}  # rank 0 trains too
    assert all(r["objectives"] == {"miou": r["id"] / 100, "params": 10.0 * r["id"]} for r in history)
    assert [dest for dest, tag, _ in comm.sent if tag == TAG_STOP] == [1, 2]  # every serving rank released
    assert slot.closed and len(d.strategy.succeeded) == 7
    seqs = sorted(r["seq"] for r in history + read_jsonl(tmp_path / "dispatch.jsonl"))
    assert seqs == list(range(14))  # one sequence over both files: 7 asks, 7 tells


def test_an_oom_is_retried_once_at_half_batch_on_the_same_rank(tmp_path):
    d, comm, slot = dispatcher(tmp_path, 1, "evolve.faults.inject=['2:oom']", "train.batch_size=4")
    d.run()
    dispatched = [r for r in read_jsonl(tmp_path / "dispatch.jsonl") if r["id"] == 2]
    assert [(r["origin"], r["batch_size"], r["retried"]) for r in dispatched] == [
        ("strategy", 4, False),
        ("retry", 2, True),
    ]
    (record,) = [r for r in read_jsonl(tmp_path / "history.jsonl") if r["id"] == 2]
    assert (
        record["status"] == "oom" and record["batch_size"] == 2 and record["retried"]
    )  # the fault stays: one retry only


def test_resume_requeues_what_was_in_flight_and_replays_the_strategy(tmp_path):
    d, comm, slot = dispatcher(tmp_path)
    d.log.close()
    log = SearchLog(tmp_path)  # a search killed after 3 dispatches and 1 result
    strategy = d.strategy.__class__(d.strategy.space, seed=0)
    tasks = []
    for _ in range(3):
        task = Task(log.new_id(), strategy.ask().genotype, 2)
        log.log_dispatch(task)
        tasks.append(task)
    log.log_result(Evaluation.of(tasks[1], answer(tasks[1]), rank=1))
    log.close()
    assert [t.id for t in SearchLog(tmp_path).in_flight()] == [0, 2]

    d, comm, slot = dispatcher(tmp_path)
    assert [t.id for t in d.requeue] == [0, 2]
    d.run()
    dispatched = read_jsonl(tmp_path / "dispatch.jsonl")
    assert [(r["id"], r["origin"]) for r in dispatched[3:5]] == [(0, "requeue"), (2, "requeue")]
    assert [r["id"] for r in dispatched[5:]] == [3, 4, 5, 6]  # fresh ids go on after the old ones
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "history.jsonl")) == list(range(7))
    # replay asked the strategy exactly as the first run did: the next proposals are the ones a fresh one makes
    fresh = d.strategy.__class__(d.strategy.space, seed=0)
    assert [fresh.ask().genotype.to_dict() for _ in range(7)] == [
        r["genotype"] for r in dispatched if r["origin"] == "strategy"
    ]


def test_replay_warns_once_the_log_and_the_strategy_disagree(tmp_path, caplog):
    log = SearchLog(tmp_path)
    other = make_strategy(load_config(None, ["evolve.strategy.name=random", "seed=99"]), 1)
    log.log_dispatch(Task(log.new_id(), other.ask().genotype, 2))
    with caplog.at_level(logging.WARNING, logger="hpcnas"):
        replay(make_strategy(load_config(None, ["evolve.strategy.name=random"]), 1), log)
    assert "replay diverged at evaluation 0" in caplog.text
    log.close()


def test_search_log_reopens_where_it_stopped(tmp_path):
    log = SearchLog(tmp_path)
    task = Task(log.new_id(), GENOTYPE, 4, origin=Origin.STRATEGY)
    log.log_dispatch(task)
    log.log_dispatch(task.again(Origin.RETRY, batch_size=2))
    log.close()
    again = SearchLog(tmp_path)
    assert (again.seq, again.next_id) == (2, 1)
    assert [(t.origin, t.batch_size) for t in again.dispatched] == [(Origin.STRATEGY, 4), (Origin.RETRY, 2)]
    assert [e.seq for e in again.events()] == [0]  # only a strategy's dispatch is an ask to replay
    assert [t.batch_size for t in again.in_flight()] == [2]  # the last dispatch of an unfinished task
    again.close()


@pytest.mark.parametrize(
    "raw",
    [
        {
            "id": 3,
            "genotype": GENOTYPE.to_dict(),
            "status": "ok",
            "fitness": 0.5,
            "params": 12,
            "flops": 99,
            "peak_memory_mb": 7.5,
        },
    ],
)
def test_history_written_before_objectives_reads_into_objectives(raw):
    e = Evaluation.from_dict(raw)
    assert e.objectives == {"miou": 0.5, "params": 12.0, "flops": 99.0, "peak_memory": 7.5}
    assert Evaluation.from_dict(e.to_dict()) == e


def test_records_are_written_after_the_dispatch_and_fsynced_in_a_burst(tmp_path, monkeypatch):
    import os

    import hpcnas.rundir as rundir

    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(rundir.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    log = SearchLog(tmp_path)
    for _ in range(5):
        task = Task(log.new_id(), GENOTYPE, 4, origin=Origin.STRATEGY)
        log.log_dispatch(task)
        log.log_result(Evaluation.of(task, answer(task), 1))
    assert read_jsonl(tmp_path / "dispatch.jsonl") == read_jsonl(tmp_path / "history.jsonl") == []  # logged only
    log.write()
    assert synced == []  # nothing fsynced yet...
    dispatched, finished = read_jsonl(tmp_path / "dispatch.jsonl"), read_jsonl(tmp_path / "history.jsonl")
    assert [r["seq"] for r in dispatched] == [0, 2, 4, 6, 8] and [r["seq"] for r in finished] == [1, 3, 5, 7, 9]
    log.commit(every_s=3600)
    assert synced == []  # the last commit is too recent
    log.commit()
    assert len(synced) == 2  # one fsync per file for the whole burst
    log.commit()
    assert len(synced) == 2  # nothing pending: no fsync
    task = Task(log.new_id(), GENOTYPE, 4, origin=Origin.STRATEGY)
    log.log_dispatch(task)
    log.close()
    assert len(read_jsonl(tmp_path / "dispatch.jsonl")) == 6 and len(synced) == 3  # closing writes and fsyncs


def test_a_result_whose_dispatch_was_lost_keeps_its_id(tmp_path):
    """A machine crash can keep a result's line and lose its dispatch's: no new task may reuse that id."""
    log = SearchLog(tmp_path)
    task = Task(log.new_id(), GENOTYPE, 4, origin=Origin.STRATEGY)
    log.log_dispatch(task)
    log.log_result(Evaluation.of(task, answer(task), 1))
    log.close()
    (tmp_path / "dispatch.jsonl").write_text("")
    assert SearchLog(tmp_path).next_id == 1


def test_utilization_counts_busy_rank_seconds_less_the_rung_waits():
    from hpcnas.execution.history import utilization

    def ran(start, end, paused=0.0):
        return Evaluation(0, {}, Status.OK, start=start, end=end, paused=paused)

    # two ranks over [0, 2]: one busy 0-2, the other 1-3 (cut at 2) with 0.25 s waiting for a rung decision
    assert utilization([ran(0.0, 2.0), ran(1.0, 3.0, paused=0.25)], 2, 0.0, 2.0) == (2.0 + 0.75) / 4.0
    assert utilization([], 2, 0.0, 2.0) == 0.0 and utilization([ran(0.0, 1.0)], 2, 1.0, 1.0) is None


def test_the_running_tally_charts_what_a_recount_of_the_whole_history_gives():
    import random

    from hpcnas.execution.history import RunningTally, utilization
    from hpcnas.strategies.objectives import (
        hypervolume,
        hypervolume_bounds,
        hypervolume_over_time,
        pareto_front,
        parse_objectives,
    )

    objectives = parse_objectives(["miou", "params <= 60"])
    rng = random.Random(3)
    tally, finished, charted, now = RunningTally(objectives, ranks=3, since=10.0), [], [], 0.0
    for i in range(60):
        status = rng.choice([Status.OK] * 4 + [Status.OOM, Status.TOO_BIG])
        miou = round(rng.random(), 2)  # rounded: equal points too
        e = Evaluation(
            i,
            {},
            status,
            fitness=miou if status is Status.OK else None,
            objectives={"miou": miou, "params": rng.randint(10, 80)} if status is Status.OK else {},
            end=8.0 + i + rng.uniform(-1.5, 1.5),  # some arrive after one that ended later; some began before `since`
            paused=rng.choice([0.0, 0.5]),
        )
        e.start = e.end - rng.uniform(1.0, 5.0)
        now = max(now, e.end + 0.1)  # rank 0 records a result after it ended, and after every earlier one
        tally.add(e, now)
        finished.append(e)
        counts = {}
        for f in finished:
            counts[str(f.status)] = counts.get(str(f.status), 0) + 1
        assert tally.by_status == counts
        fitnesses = [f.fitness for f in finished if f.ok and f.fitness is not None]
        assert tally.best_fitness == (max(fitnesses) if fitnesses else None)
        assert tally.utilization(now) == pytest.approx(utilization(finished, 3, 10.0, now))
        front = pareto_front(objectives, finished)
        assert sorted(f.id for f in tally.front) == [f.id for f in front]
        # TensorBoard's hypervolume is the report's: one scale, fixed by the first successful evaluations
        assert tally.hypervolume_bounds() == hypervolume_bounds(objectives, finished)
        if tally.hypervolume_bounds() is not None:
            charted.append(hypervolume(objectives, tally.front, *tally.hypervolume_bounds()))
    assert len(tally.front) > 1 and 0 < tally.utilization(now) < 1
    _, report = hypervolume_over_time(objectives, finished)
    assert charted == pytest.approx(report) and len(charted) > 30
    assert charted == sorted(charted)  # a fixed scale: the front only ever gains


def test_every_message_crosses_a_process_boundary_as_its_own_type():
    from hpcnas.records import Decision, DeviceInfo, RungReport

    messages = [Task(4, GENOTYPE, 2, rungs=[1]), answer(Task(5, GENOTYPE, 2)), RungReport(4, 1, 0.25),
                Decision(False), DeviceInfo(2**30)]  # fmt: skip
    for message in messages:
        raw = json.loads(json.dumps(encode(message)))
        assert type(decode(raw)) is type(message) and decode(raw) == message
    with pytest.raises(ValueError, match="not an hpcnas message"):
        decode({"id": 1, "rung": 2, "fitness": 0.5})  # told apart by its type, never by its keys


def test_the_budget_counts_what_evaluations_in_flight_are_sure_to_spend():
    from hpcnas.config import load_config
    from hpcnas.execution.orchestrator import Budget

    cfg = load_config(None, ["evolve.max_evaluations=2", "evolve.evaluator.proxy_epochs=9"])

    class Stopped:  # an evaluation stopped at its first rung: a third of the proxy schedule
        def budget_used(self, proxy_epochs):
            return 3 / proxy_epochs

    budget = Budget(cfg, rungs=[3, 9], finished=[])
    assert budget.first_share == pytest.approx(1 / 3)
    for rank in range(5):  # each new evaluation commits its first rung only
        budget.commit(rank, 3)
    assert budget.allows_another()  # 5/3 + 1/3 = 2
    budget.commit(5, 3)
    assert not budget.allows_another()
    budget.commit(0, None)  # rank 0's evaluation went on past its rung: the rest of its schedule is committed
    budget.release(5)
    assert not budget.allows_another()  # 1 + 4/3 + 1/3 > 2
    for rank in range(1, 5):
        budget.release(rank)
        budget.spend(Stopped())
    assert budget.spent == pytest.approx(4 / 3) and budget.work_left()  # 4/3 + 1/3 <= 2
    budget.release(0)
    assert budget.allows_another() and budget.work_left()
    timed = Budget(load_config(None, ["evolve.time_budget=0"]), rungs=[], finished=[])
    assert timed.out_of_time() and not timed.allows_another() and not timed.work_left()
