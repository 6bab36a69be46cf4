"""One writer per run directory: a second start or a resume of a live run is refused; a killed run's lock is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_cli, set_args

SMOKE = str(ROOT / "configs" / "smoke.yaml")
LONG = [
    "data.synth.n=16",
    "data.synth.size=32",
    "space.channels=8",
    "space.depth=2",
    "space.nodes=2",
    "search.epochs=200",
    "search.batch_size=4",
    "device=cpu",
]


def start_search(out) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hpcnas.cli", "search", "--config", SMOKE, *set_args(LONG), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_live_run_refuses_a_second_writer_and_a_killed_one_does_not(tmp_path):
    out = tmp_path / "run"
    first = start_search(out)
    try:
        wait_for(out / "metrics.jsonl")
        resumed = run_cli("search", "--resume", str(out), timeout=120)
        assert resumed.returncode == 2
        assert resumed.stderr.strip().splitlines() == [
            f"hpcnas: error: {out}: in use by pid {first.pid} on {os.uname().nodename}: one writer per run directory"
        ]
        again = run_cli("search", "--config", SMOKE, "--out", str(out), timeout=120)
        assert again.returncode == 2 and "already holds a run" in again.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    ok = run_cli(
        "search", "--resume", str(out), *set_args(["search.epochs=1", "search.arch_start_epoch=1"]), timeout=300
    )
    assert ok.returncode == 0, ok.stderr  # the kernel dropped the dead process's lock
    assert (out / "genotype.json").exists()


@pytest.mark.slow
def test_two_starts_at_once_leave_one_run(tmp_path):
    out = tmp_path / "run"
    procs = [start_search(out) for _ in range(2)]
    try:
        wait_for(out / "metrics.jsonl")
        t0 = time.time()  # the loser may still be importing torch on a loaded machine: wait for it, not a fixed time
        while all(p.poll() is None for p in procs):
            assert time.time() - t0 < 120, "neither start was refused"
            time.sleep(0.2)
        time.sleep(1)  # the winner trains 200 epochs: it is still running
        finished = [p for p in procs if p.poll() is not None]
        assert len(finished) == 1, "exactly one start must be refused"
        loser = finished[0]
        assert loser.returncode == 2
        err = loser.stderr.read()
        assert "in use by " in err or "already holds a run" in err  # by pid N, or "another process" before it says
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


@pytest.mark.slow
def test_a_refused_resume_of_a_live_run_leaves_that_run_s_files_to_it(tmp_path, monkeypatch):
    """While the refused command meets the lock, the live writer appends to log.txt and beats: the refusal puts
    nothing back over it (it restores only files it touched as the writer, and here it never was one)."""
    from hpcnas import pipeline
    from hpcnas.errors import UserError
    from hpcnas.run import RunScope

    out = tmp_path / "run"
    done = run_cli(
        "search",
        "--config",
        SMOKE,
        *set_args(LONG[:-3] + ["search.epochs=1", "search.arch_start_epoch=1", "device=cpu"]),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-2000:]

    def held_by_a_live_writer(scope, path):
        with open(out / "log.txt", "a") as log:  # what the live run writes at this very moment
            log.write("a line of the live run\n")
        (out / "heartbeat.json").write_text('{"state": "running"}\n')
        raise UserError("in use by pid 1 on elsewhere: one writer per run directory", source=str(path))

    monkeypatch.setattr(RunScope, "lock", held_by_a_live_writer)
    with pytest.raises(UserError, match="one writer per run directory"):
        pipeline.search(None, [], resume=str(out))
    assert (out / "log.txt").read_text().endswith("a line of the live run\n")
    assert (out / "heartbeat.json").read_text() == '{"state": "running"}\n'
