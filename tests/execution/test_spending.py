"""Spending GPU time well, for real (mpirun, worker children): the memory estimate before dispatch, the
zero-cost pre-screen and successive halving, as configs/smoke-evolve.yaml runs them; kill and resume."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from hpcnas.rundir import read_jsonl
from tests.conftest import ROOT, run_cli
from tests.execution.test_orchestrator import (
    MPI_ENV,
    _wait_for_lines,
    budget_used,
    evolve_cmd,
    kill_job,
    needs_mpi,
    run,
)


@needs_mpi
@pytest.mark.slow
def test_smoke_evolve_estimates_screens_and_halves_with_real_training(tmp_path):
    out = tmp_path / "ev"
    proc = run(evolve_cmd(3, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = read_jsonl(out / "history.jsonl")
    dispatches = read_jsonl(out / "dispatch.jsonl")
    assert 7.5 < budget_used(history) <= 8 + 3 * 0.5 and len({r["id"] for r in history}) == len(history)
    assert {r["status"] for r in history} <= {"ok", "stopped"}
    for r in history:
        assert set(r["rungs"]) == {"1"}  # the rung after epoch 1 of 2
        if r["status"] == "stopped":
            assert r["epochs"] == 1 and r["fitness"] == r["rungs"]["1"]
        else:
            assert r["epochs"] == 2 and r["fitness"] >= r["rungs"]["1"]
        assert r["estimate_mb"] > 0 and r["shrunk_from"] is None  # limit auto: the host's memory
        assert set(r["scores"]) == {"naswot"}  # the pre-screen's score of what was trained
    for d in dispatches:  # each a best-of-4 by NASWOT, every candidate's score logged
        assert len(d["screened"]) == 4 and d["scores"]["naswot"] == max(d["screened"].values())
    log = (out / "log.txt").read_text()
    assert "memory gate:" in log and "after 1 epoch(s): goes on" in log
    report = run_cli("report", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    stopped = sum(r["status"] == "stopped" for r in history)
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert f"stopped at a rung: {stopped}, {stopped} of {2 * len(history)} proxy epochs saved" in summary


@needs_mpi
@pytest.mark.slow
def test_a_memory_limit_shrinks_the_batch_or_skips_without_training(tmp_path):
    sleepy = ["evolve.evaluator.name=sleep", "evolve.evaluator.sleep_median=0.05", "evolve.max_evaluations=6"]
    limit_mb = 3.0  # smoke-evolve's networks need 4-6 MB at batch 4 by the estimate
    shrink = run(evolve_cmd(2, tmp_path / "shrink", *sleepy, f"evolve.memory.limit={limit_mb / 1024}"))
    assert shrink.returncode == 0, shrink.stderr[-3000:]
    history = read_jsonl(tmp_path / "shrink" / "history.jsonl")
    assert history and all(r["shrunk_from"] == 4 and 1 <= r["batch_size"] < 4 for r in history)
    assert all(r["estimate_mb"] <= limit_mb for r in history)
    summary = run_cli("report", str(tmp_path / "shrink"), "--out", str(tmp_path / "r1"))
    assert summary.returncode == 0
    text = (tmp_path / "r1" / "summary.md").read_text()
    assert f"OOMs avoided by the memory estimate: {len(history)} (0 too big, {len(history)} at a smaller batch)" in text

    skip = run(
        evolve_cmd(2, tmp_path / "skip", *sleepy, f"evolve.memory.limit={limit_mb / 1024}", "evolve.memory.policy=skip")
    )
    assert skip.returncode == 1, skip.stderr[-3000:]  # none fits: it gives up, and says why
    history = read_jsonl(tmp_path / "skip" / "history.jsonl")
    assert len(history) == 100 and {r["status"] for r in history} == {"too_big"}  # the records are kept
    assert all(r["rank"] is None and r["estimate_mb"] > limit_mb and "over the limit" in r["error"] for r in history)
    errors = [line for line in skip.stderr.splitlines() if line.startswith("hpcnas: ")]
    assert errors == [
        "hpcnas: error: the last 100 proposals were all estimated over evolve.memory.limit (3 MB) at batch 4 and "
        "nothing was trained: raise the limit or make the space smaller "
        f"(the estimates are in {(tmp_path / 'skip' / 'history.jsonl').resolve()})"
    ]
    assert "Traceback" not in skip.stderr
    assert not (tmp_path / "skip" / "genotype.json").exists()
    evals = tmp_path / "skip" / "evals"
    assert not evals.exists() or not any(evals.iterdir())  # no rank trained anything


@needs_mpi
@pytest.mark.slow
def test_a_killed_halving_search_resumes_with_its_rung_results(tmp_path):
    out = tmp_path / "killed"
    sets = [
        "evolve.evaluator.name=sleep",
        "evolve.evaluator.sleep_median=0.8",
        "evolve.evaluator.proxy_epochs=4",
        "evolve.asha.min_resource=1",
        "evolve.asha.reduction_factor=2",
        "evolve.max_evaluations=14",
    ]
    proc = subprocess.Popen(
        evolve_cmd(4, out, *sets),
        cwd=ROOT,
        env=dict(os.environ, **MPI_ENV),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert _wait_for_lines(out / "history.jsonl", 5, proc, time.time() + 180)
    kill_job(proc)
    time.sleep(1.5)  # orphaned children notice their rank is gone and exit
    before = read_jsonl(out / "history.jsonl")
    done = run(evolve_cmd(4, out, resume=True))
    assert done.returncode == 0, done.stderr[-3000:]
    history = read_jsonl(out / "history.jsonl")
    assert history[: len(before)] == before  # nothing finished is lost or redone
    assert "replay diverged" not in done.stderr
    epochs = sum(4 if r["status"] != "stopped" else r["epochs"] for r in history)
    assert 14 * 4 - 1 < epochs <= 14 * 4 + 4 * 3  # in flight at the end: counted up to their next rung
    assert len({r["id"] for r in history}) == len(history)
    for r in history:  # every rung reached is recorded, up to where it stopped
        reached = [1, 2] if r["status"] == "ok" else [e for e in (1, 2) if e <= r["epochs"]]
        assert sorted(int(k) for k in r["rungs"]) == reached
    assert any(r["status"] == "stopped" for r in history)
