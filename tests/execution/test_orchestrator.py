"""The MPI orchestrator for real: mpirun, child workers, injected faults, kill and resume, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hpcnas.records import Evaluation
from hpcnas.rundir import read_jsonl
from tests.conftest import MPI_ENV, MPIRUN, ROOT, needs_mpi, set_args

SMOKE_EVOLVE = str(ROOT / "configs" / "smoke-evolve.yaml")


def sets(*items):
    return set_args(items)


def evolve_cmd(np_, out, *overrides, resume=False):
    base = [MPIRUN, "-np", str(np_), "--oversubscribe", sys.executable, "-m", "hpcnas.cli", "evolve"]
    if resume:
        return base + ["--resume", str(out)] + sets(*overrides)
    return base + ["--config", SMOKE_EVOLVE, "--out", str(out)] + sets(*overrides)


def budget_used(history, proxy_epochs=2):
    """The evaluations' share of evolve.max_evaluations (smoke-evolve.yaml trains 2 proxy epochs)."""
    return sum(Evaluation.from_dict(r).budget_used(proxy_epochs) for r in history)


def run(cmd, timeout=420):
    return subprocess.run(
        cmd, cwd=ROOT, env=dict(os.environ, **MPI_ENV), capture_output=True, text=True, timeout=timeout
    )


# smoke-evolve.yaml with the memory estimate, the pre-screen and successive halving off: the plain orchestrator
PLAIN = ["evolve.memory.limit=null", "evolve.prescreen.score=null", "evolve.asha.min_resource=null"]
SLEEPY = [
    "evolve.evaluator.name=sleep",
    "evolve.evaluator.sleep_median=0.3",
    "evolve.evaluator.sleep_sigma=0.5",
    *PLAIN,
]


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize(
    "bad, message",
    [
        ("evolve.strategy.sample_size=9", "evolve.strategy.sample_size"),
        ("evolve.faults.inject=['3:melt']", "evolve.faults.inject"),
        ("evolve.strategy.population=50", "evolve.strategy.population"),
        ("evolve.asha.min_resource=2", "evolve.asha.min_resource"),  # no rung before the last of 2 epochs
        ("evolve.prescreen={score: naswot, sample: 2, keep: 3}", "evolve.prescreen"),
    ],
)
def test_a_bad_evolve_config_ends_every_rank_at_once(tmp_path, bad, message):
    """The check runs on rank 0 before any rank serves: exit 2, one line, nothing written, nothing left running."""
    out = tmp_path / "bad"
    t0 = time.time()
    proc = run(evolve_cmd(3, out, *SLEEPY, "evolve.max_evaluations=6", bad), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcnas: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in proc.stderr
    assert not out.exists() and time.time() - t0 < 100
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True)
    assert left.stdout.strip() == "", "processes left behind"


def test_single_process_without_mpirun(tmp_path):
    """Launched alone, rank 0 is the whole job: it dispatches to its own slot."""
    out = tmp_path / "solo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hpcnas.cli",
            "evolve",
            "--config",
            SMOKE_EVOLVE,
            "--out",
            str(out),
            *sets(*SLEEPY, "evolve.max_evaluations=4", "evolve.evaluator.sleep_median=0.05"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    history = read_jsonl(out / "history.jsonl")
    assert sorted(r["id"] for r in history) == [0, 1, 2, 3] and {r["rank"] for r in history} == {0}
    for r in history:
        assert r["submit"] <= r["start"] <= r["end"]
    assert (out / "genotype.json").exists()


@needs_mpi
@pytest.mark.slow
def test_search_finishes_its_budget_with_real_training(tmp_path):
    out = tmp_path / "ev"
    proc = run(
        evolve_cmd(
            3,
            out,
            *PLAIN,
            "evolve.max_evaluations=6",
            "evolve.strategy.population=2",
            "evolve.strategy.sample_size=2",
            "evolve.evaluator.zero_cost=true",
        )
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = read_jsonl(out / "history.jsonl")
    assert len(history) == 6 and len({r["id"] for r in history}) == 6
    for r in history:  # each child scored its network at initialization
        assert set(r["scores"]) == {"grad_norm", "synflow", "naswot", "params"}, r["scores"]
        assert r["scores"]["params"] == r["objectives"]["params"]
    assert {r["rank"] for r in history} == {0, 1, 2}  # rank 0 trains too
    for r in history:
        o = r["objectives"]
        assert r["status"] == "ok" and 0 <= r["fitness"] <= 1 and o["miou"] == r["fitness"]
        assert o["params"] > 0 and o["flops"] > 0 and o["peak_memory"] > 0 and o["latency"] > 0
        assert r["submit"] <= r["start"] <= r["end"]
    assert any(r["parent"] is not None for r in history)  # evolution went past its random phase
    assert (out / "genotype.json").exists()


@needs_mpi
@pytest.mark.slow
def test_faults_are_results_not_the_end(tmp_path):
    """A real OOM in the child and a SIGKILLed child, while training for real: recorded, and the search completes."""
    out = tmp_path / "faults"
    proc = run(evolve_cmd(3, out, *PLAIN, "evolve.max_evaluations=6", "evolve.faults.inject=['1:oom', '2:kill']"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = {r["id"]: r for r in read_jsonl(out / "history.jsonl")}
    assert sorted(history) == list(range(6))
    assert (
        history[1]["status"] == "oom" and history[1]["retried"] and history[1]["batch_size"] == 2
    )  # retried once at half batch
    assert "allocate" in history[1]["error"] or "memory" in history[1]["error"]
    assert history[2]["status"] == "crashed" and "SIGKILL" in history[2]["error"]
    assert all(history[i]["status"] == "ok" for i in (0, 3, 4, 5))
    dispatches = read_jsonl(out / "dispatch.jsonl")
    assert [d["id"] for d in dispatches].count(1) == 2  # first try + the half-batch retry


@needs_mpi
@pytest.mark.slow
def test_a_hung_child_is_killed_at_the_timeout_and_the_search_completes(tmp_path):
    # the sleep evaluator, so that a short timeout cannot catch a healthy evaluation on a loaded machine
    out = tmp_path / "hang"
    timeout = "evolve.executor.task_timeout=8"
    proc = run(evolve_cmd(3, out, *SLEEPY, "evolve.max_evaluations=6", timeout, "evolve.faults.inject=['3:hang']"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = {r["id"]: r for r in read_jsonl(out / "history.jsonl")}
    assert sorted(history) == list(range(6))
    assert history[3]["status"] == "timeout" and "no result after 8 s" in history[3]["error"], history[3]
    assert all(history[i]["status"] == "ok" for i in (0, 1, 2, 4, 5))
    assert not any(r["retried"] for r in history.values())  # a hang is not retried as an OOM is


def _wait_for_lines(path, count, proc, deadline):
    while time.time() < deadline and proc.poll() is None:
        if len(read_jsonl(path)) >= count:
            return True
        time.sleep(0.05)
    return False


def kill_job(proc):
    """SIGKILL the whole job at once, as a scheduler kills a step: every rank, then mpirun (ranks are its children)."""
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in ranks + [str(proc.pid)]:
        os.kill(int(pid), signal.SIGKILL)
    proc.wait()


@needs_mpi
@pytest.mark.slow
def test_killed_mpirun_resumes_without_retraining(tmp_path):
    out = tmp_path / "killed"
    cmd = evolve_cmd(4, out, *SLEEPY, "evolve.max_evaluations=16", "evolve.evaluator.sleep_median=0.6")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ, **MPI_ENV), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert _wait_for_lines(out / "history.jsonl", 5, proc, time.time() + 180), "no progress before the kill"
    kill_job(proc)
    before = read_jsonl(out / "history.jsonl")
    finished_before = {r["id"] for r in before}
    dispatched_before = len(read_jsonl(out / "dispatch.jsonl"))
    assert 5 <= len(before) < 16
    time.sleep(1.5)  # orphaned children notice their rank is gone
    leftover = subprocess.run(["pgrep", "-f", f"hpcnas.execution.worker.*{out}"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "worker children outlived the killed job"

    done = run(evolve_cmd(4, out, resume=True))
    assert done.returncode == 0, done.stderr[-3000:]
    history = read_jsonl(out / "history.jsonl")
    ids = [r["id"] for r in history]
    assert sorted(ids) == list(range(16)), "every evaluation exactly once"
    new_dispatches = read_jsonl(out / "dispatch.jsonl")[dispatched_before:]
    assert not {d["id"] for d in new_dispatches} & finished_before, "a finished evaluation was trained again"
    assert any(d["origin"] == "requeue" for d in new_dispatches)  # what was in flight was re-queued


@needs_mpi
@pytest.mark.slow
def test_sigusr2_stops_cleanly_with_grace(tmp_path):
    """SLURM's warning signal: no new dispatch, in-flight results kept, exit 75 (work left: requeue
    me), history consistent; --resume-existing then finishes the budget."""
    out = tmp_path / "signalled"
    cmd = evolve_cmd(
        3,
        out,
        "evolve.evaluator.name=sleep",
        "evolve.evaluator.sleep_median=1.5",
        "evolve.evaluator.sleep_sigma=0.1",
        "evolve.max_evaluations=30",
        "evolve.executor.grace_period=30",
    )
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=dict(os.environ, **MPI_ENV), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert _wait_for_lines(out / "history.jsonl", 3, proc, time.time() + 120)
    proc.send_signal(signal.SIGUSR2)  # mpirun forwards SIGUSR2 to every rank
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 75, stderr[-3000:]
    assert f"stopped by SIGUSR2 with evaluations left: state saved in {out.resolve()}" in stderr
    history = read_jsonl(out / "history.jsonl")
    dispatched = {d["id"] for d in read_jsonl(out / "dispatch.jsonl")}
    assert {r["id"] for r in history} == dispatched, "every in-flight evaluation finished within the grace period"
    assert len(history) < 30 and "SIGUSR2 received" in (out / "log.txt").read_text()
    for line in (out / "history.jsonl").read_text().splitlines():
        json.loads(line)
    cmd = evolve_cmd(
        3,
        out,
        "evolve.evaluator.name=sleep",
        "evolve.evaluator.sleep_median=0.05",
        "evolve.evaluator.sleep_sigma=0.1",
        "evolve.max_evaluations=30",
    ) + ["--resume-existing"]
    finished = subprocess.run(
        cmd, cwd=ROOT, env=dict(os.environ, **MPI_ENV), capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    used = budget_used(read_jsonl(out / "history.jsonl"))
    assert 29.5 < used <= 30 + 3 * 0.5  # halving stops some: the budget counts epochs


@needs_mpi
@pytest.mark.slow
def test_mpirun_starts_beside_a_listener_on_tensorboards_port(tmp_path):
    """A socket that listens on 127.0.0.1:6006 and never answers, as TensorBoard does to an X client: with the
    launch environment hpcnas documents (MPI_ENV holds it), mpirun and a 2-rank evolve start and finish."""
    import errno
    import socket

    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 6006))
        listener.listen(16)
    except OSError as exc:  # something listens there already: it plays the part
        assert exc.errno == errno.EADDRINUSE, exc
    try:
        assert run([MPIRUN, "-np", "1", "true"], timeout=60).returncode == 0
        done = run(evolve_cmd(2, tmp_path / "e", *SLEEPY, "evolve.max_evaluations=4"), timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(read_jsonl(tmp_path / "e" / "history.jsonl")) == 4
    finally:
        listener.close()
