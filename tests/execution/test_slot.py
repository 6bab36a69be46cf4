"""A rank's worker slot with a real child process (the sleep evaluator): waiting wakes on the child's lines."""

from __future__ import annotations

import random

from hpcnas.execution.slot import WorkerSlot
from hpcnas.records import Result, RungReport, Status, Task, WorkerSetup
from hpcnas.space.searchspace import SearchSpace

GENOTYPE = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2).sample(random.Random(0))
LONG = 600.0  # a wait that only the child's line may end: if the wake-up were lost, the test fails, not passes


def slot(tmp_path, epochs: int = 1) -> WorkerSlot:
    setup = WorkerSetup(
        config="",
        data="",
        run_dir=str(tmp_path),
        evaluator="sleep",
        proxy_epochs=epochs,
        evaluator_options={"sleep_median": 0.05},
    )
    return WorkerSlot(setup.to_dict(), tmp_path / "worker.log", timeout=LONG)


def task(ident: int, rungs=(), fault=None) -> Task:
    return Task(ident, GENOTYPE, 2, rungs=list(rungs), fault=fault)


def test_a_result_wakes_the_waiting_rank(tmp_path):
    s = slot(tmp_path)
    try:
        s.prestart()
        assert s.device_memory(timeout=LONG) is not None  # the start-up line is not a task's: no wake-up for it
        assert not s.wait(0.001) and s.poll() is None  # nothing submitted: nothing to wait for
        s.submit(task(1))
        assert s.training
        assert s.wait(LONG)
        record = s.poll()
        assert isinstance(record, Result) and record.status is Status.OK and record.id == 1
        assert not s.busy and not s.training
    finally:
        s.close()


def test_a_rung_report_wakes_the_rank_and_pauses_the_task(tmp_path):
    s = slot(tmp_path, epochs=3)
    try:
        s.submit(task(2, rungs=[1]))
        assert s.wait(LONG)
        report = s.poll()
        assert isinstance(report, RungReport) and (report.id, report.rung) == (2, 1)
        assert s.busy and not s.training  # waiting for the decision
        s.decide(False)
        assert s.training
        assert s.wait(LONG)
        record = s.poll()
        assert isinstance(record, Result) and record.status is Status.STOPPED and record.epochs == 1
    finally:
        s.close()


def test_a_dying_child_wakes_the_rank(tmp_path):
    s = slot(tmp_path)
    try:
        s.submit(task(3, fault="kill"))
        assert s.wait(LONG)  # the end of its output
        record = s.poll()
        while record is None:  # the exit may be seen a moment after the end of the stream
            s.wait(0.01)
            record = s.poll()
        assert record.status is Status.CRASHED and "SIGKILL" in record.error and record.id == 3
    finally:
        s.close()
