"""hpcnas status: from the run directory alone, for a finished, running, stopped, stale or failed run."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from hpcnas.report.status import STALE_S, STATES
from hpcnas.rundir import write_json
from hpcnas.space.searchspace import SearchSpace
from tests.conftest import MPI_ENV, MPIRUN, ROOT, needs_mpi, run_cli, set_args

G = SearchSpace.of("darts_unet", "O_base", depth=2, nodes=2).sample(random.Random(0)).to_dict()

SMOKE = str(ROOT / "configs" / "smoke.yaml")


def status_json(*runs):
    proc = run_cli("status", "--json", *map(str, runs))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["runs"]


@pytest.mark.slow
def test_a_finished_search(tmp_path):
    out = tmp_path / "s"
    proc = run_cli("search", "--config", SMOKE, "--out", str(out), "--device", "cpu", *set_args(["search.epochs=2"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (s,) = status_json(out)
    assert (s["command"], s["state"], s["epochs_done"], s["epochs"], s["fraction"]) == ("search", "finished", 2, 2, 1.0)
    assert 0 <= s["best"]["val_miou"] <= 1 and s["elapsed_s"] > 0 and "eta_s" not in s
    screen = run_cli("status", str(out)).stdout
    assert "state       finished" in screen and "epoch 2/2 done" in screen and "val mIoU" in screen


@pytest.mark.slow
def test_a_running_search_then_stopped_by_sigusr2(tmp_path):
    out = tmp_path / "live"
    cmd = [sys.executable, "-m", "hpcnas.cli", "search", "--config", SMOKE, "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(
        cmd + set_args(["search.epochs=40"]), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline, s = time.time() + 120, None
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and (out / "heartbeat.json").exists():
            s = status_json(out)[0]
            if s.get("eta_s"):
                break
        time.sleep(0.5)
    assert s is not None and s["state"] == "running" and s["pid"] == proc.pid and s["heartbeat_age_s"] < 30
    assert 0 < s["fraction"] < 1 and s["eta_s"] > 0
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    (s,) = status_json(out)
    assert s["state"] == "stopped" and "SIGUSR2" in s["error"] and "eta_s" not in s
    assert s["state_detail"] == "resumable with --resume"
    if "after step" in s["error"]:  # stopped inside an epoch: its finished steps count (epochs from 1)
        assert f"in epoch {s['epoch']} after step {s['step']}/{s['steps']}" in s["error"]
        assert s["fraction"] == pytest.approx((s["epochs_done"] + s["step"] / s["steps"]) / 40, abs=1e-4)
    else:  # on loaded cores the signal may land while validating or between epochs: the other stop points
        assert "while validating" in s["error"] or "after epoch" in s["error"], s["error"]
        assert 0 < s["fraction"] < 1


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_dead_on_its_own_host(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hpcnas.cli", "search", "--config", SMOKE, "--out", str(out), "--device", "cpu"]
    proc = subprocess.Popen(cmd + set_args(["search.epochs=40"]), cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "heartbeat.json").exists():
        time.sleep(0.2)
    assert status_json(out)[0]["state"] == "running"
    proc.kill()
    proc.wait(timeout=30)
    (s,) = status_json(out)  # the heartbeat is seconds old and still says running: only the pid can tell
    assert s["state"] == "dead" and s["heartbeat_age_s"] < STALE_S and s["state"] in STATES
    assert s["state_detail"].startswith(f"pid {proc.pid} on ") and "is gone" in s["state_detail"]
    assert f"state       dead (pid {proc.pid} on " in run_cli("status", str(out)).stdout


def test_a_reused_pid_does_not_make_a_dead_run_look_alive(tmp_path):
    """The heartbeat's pid now belongs to a process that started after the run did (here: this test)."""
    fake_run(tmp_path / "r", "running", age_s=1, host=socket.gethostname(), pid=os.getpid(), started_ago=30 * 86400)
    (s,) = status_json(tmp_path / "r")
    assert s["state"] == "dead"


def fake_run(path, state, age_s, error=None, command="train", host="node7", pid=1, started_ago=None):
    path.mkdir()
    (path / "config.yaml").write_text("train:\n  epochs: 10\n")
    now = time.time()
    write_json(
        path / "heartbeat.json",
        {
            "command": command,
            "state": state,
            "pid": pid,
            "host": host,
            "started": now - (started_ago if started_ago is not None else age_s + 60),
            "time": now - age_s,
            "slurm_job": None,
            "progress": {"epoch": 4, "epochs": 10, "step": 2, "steps": 5},
            "error": error,
        },
    )


def test_a_run_whose_process_died_without_a_word_is_stale(tmp_path):
    fake_run(tmp_path / "dead", "running", age_s=14 * 60)
    (s,) = status_json(tmp_path / "dead")
    assert (s["state"], s["state_detail"]) == ("stale", "last heartbeat 14 min ago, from node7")
    text = run_cli("status", str(tmp_path / "dead")).stdout
    assert "state       stale (last heartbeat 14 min ago, from node7)" in text


def test_a_failed_run_shows_its_last_error_and_several_runs_one_screen_each(tmp_path):
    fake_run(tmp_path / "bad", "failed", age_s=5, error="internal error: RuntimeError: boom")
    fake_run(tmp_path / "ok", "finished", age_s=5)
    text = run_cli("status", str(tmp_path / "bad"), str(tmp_path / "ok")).stdout
    assert "last error  internal error: RuntimeError: boom" in text and text.count("(config: ") == 2
    bad = run_cli("status", str(tmp_path / "bad"), str(tmp_path / "missing"))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"hpcnas: error: {tmp_path / 'missing'}: no such run directory"
    ]


def test_the_best_evaluation_is_the_searchs_own_by_objectives_and_bounds_with_old_keys_read(tmp_path):
    fake_run(tmp_path / "ev", "finished", age_s=5, command="evolve")
    # the old flat proxy_epochs (still read, as the run read it) halves the budget of an evaluation stopped at 2
    (tmp_path / "ev" / "config.yaml").write_text(
        "evolve:\n  max_evaluations: 4\n  proxy_epochs: 4\n  objectives: [miou, params <= 1000]\n"
    )
    history = [
        {"id": 0, "genotype": G, "status": "ok", "fitness": 0.9, "objectives": {"miou": 0.9, "params": 5000}},
        {"id": 1, "genotype": G, "status": "ok", "fitness": 0.7, "objectives": {"miou": 0.7, "params": 800}},
        {
            "id": 2,
            "genotype": G,
            "status": "stopped",
            "fitness": 0.95,
            "epochs": 2,
            "objectives": {"miou": 0.95},
        },
    ]
    (tmp_path / "ev" / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (s,) = status_json(tmp_path / "ev")
    # evaluation 0 has the highest fitness but breaks the params bound; 2 was stopped at a rung
    assert s["best"] == {"evaluation": 1, "objective": "miou", "value": 0.7}
    assert (s["budget"], s["budget_used"]) == (4, 2.5)
    proc = run_cli("status", str(tmp_path / "ev"))
    assert "best        miou 0.7 (evaluation 1)" in proc.stdout and "deprecated" not in proc.stderr


@pytest.mark.slow
def test_watch_redraws_until_interrupted(tmp_path):
    fake_run(tmp_path / "w", "running", age_s=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpcnas.cli", "status", str(tmp_path / "w"), "--watch", "0.2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as at a terminal: a test run in the background (CI) inherits SIGINT ignored, and Python keeps it so
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.count("state       running") >= 2  # redrawn


@pytest.mark.slow
@needs_mpi
def test_a_discrete_search_shows_evaluations_and_utilization(tmp_path):
    out = tmp_path / "ev"
    env = dict(os.environ, **MPI_ENV)
    sets = ["evolve.evaluator.name=sleep", "evolve.evaluator.sleep_median=0.2", "evolve.max_evaluations=8"]
    cmd = [
        MPIRUN,
        "-np",
        "2",
        "--oversubscribe",
        sys.executable,
        "-m",
        "hpcnas.cli",
        "evolve",
        "--config",
        str(ROOT / "configs" / "smoke-evolve.yaml"),
        "--out",
        str(out),
    ] + set_args(sets)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (s,) = status_json(out)
    # smoke-evolve.yaml halves at a rung: the budget counts epochs, a stopped evaluation half of one
    assert (s["command"], s["state"], s["budget"], s["in_flight"]) == ("evolve", "finished", 8, 0)
    assert 7.5 < s["budget_used"] <= 8 + 2 * 0.5 and s["finished"] == sum(s["by_status"].values()) >= 8
    # how busy the ranks were depends on the machine's load (0.28 with both CPUs busy): only that it is measured
    assert set(s["by_status"]) <= {"ok", "stopped"} and s["ranks"] == 2 and 0.0 < s["utilization"] <= 1.0
    text = run_cli("status", str(out)).stdout
    if s["budget_used"] != s["finished"]:
        assert (
            f"{s['finished']} evaluations finished (" in text and f"{s['budget_used']:g}/8 of the budget used" in text
        )
    else:
        assert "8/8 evaluations finished (ok 8)" in text


@pytest.mark.slow
def test_each_command_of_a_longer_one_ends_its_own_heartbeat(tmp_path):
    """As in hpcnas smoke: the search is over (finished) while the process goes on to train."""
    from hpcnas.pipeline import search

    search(SMOKE, ["search.epochs=1", "search.arch_start_epoch=1", "device=cpu"], out=str(tmp_path / "s"))
    assert json.loads((tmp_path / "s" / "heartbeat.json").read_text())["state"] == "finished"
