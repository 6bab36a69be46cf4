"""The dev cluster stops clean and starts clean, whatever its jobs were doing; submit --wait names how a job ended."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.cluster.test_slurm import JOB_ENV, LONG, SMOKE, cluster  # noqa: F401 - the fixture
from tests.conftest import ROOT, set_args

pytestmark = pytest.mark.slow
HERE = ROOT / "slurm" / "dev-cluster"


def squeue_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def wait_for(predicate, seconds: float = 120) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_a_cancelled_job_is_reported_as_cancelled(cluster, tmp_path):  # noqa: F811
    cmd = [sys.executable, "-m", "hpcnas.cli", "submit", "--config", SMOKE, *set_args(LONG), "--command", "search",
           "--gpus-per-node", "1", "--cpus-per-task", "1", "--time", "00:10:00", "--out", str(tmp_path / "run"),
           "--logs", str(tmp_path / "logs"), "--wait"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=JOB_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    job = re.search(r"submitted job (\d+)", line).group(1)
    assert wait_for(lambda: squeue_state(job) == "RUNNING"), squeue_state(job)
    # --dry-run prints submitit's private sbatch builder's script (submitit is pinned < 2 for it): it must be
    # exactly what SlurmExecutor submitted
    dry = subprocess.run(cmd[:-1] + ["--dry-run"], cwd=ROOT, env=JOB_ENV, capture_output=True, text=True)
    submitted = tmp_path / "logs" / job / f"{job}_submission.sh"
    assert dry.returncode == 0 and dry.stdout.rstrip("\n") == submitted.read_text().rstrip("\n"), dry.stderr
    subprocess.run(["scancel", job], check=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and f"hpcnas: job {job} was cancelled (SLURM state CANCELLED" in err, err
    # the stop the cancel's SIGTERM caused must not requeue the job: it would run the search to its end regardless
    assert wait_for(lambda: squeue_state(job) == "", 60), squeue_state(job)
    logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*_log.err"))
    assert "Requeued" not in logs and "genotype:" not in logs, logs[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="the dev cluster is started and stopped as root")
def test_down_leaves_no_job_step_and_up_does_not_run_old_jobs_again(cluster, tmp_path):  # noqa: F811
    marker = tmp_path / "ran"
    running = subprocess.run(["sbatch", "--parsable", "--wrap", "sleep 600"], capture_output=True, text=True)
    pending = subprocess.run(
        ["sbatch", "--parsable", "--begin=now+3600", "--wrap", f"touch {marker}"], capture_output=True, text=True
    )
    job = running.stdout.strip()
    assert running.returncode == 0 and pending.returncode == 0, running.stderr + pending.stderr
    assert wait_for(lambda: squeue_state(job) == "RUNNING")
    down = subprocess.run(["bash", str(HERE / "down.sh")], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert subprocess.run(["pgrep", "-x", "slurmstepd"], capture_output=True).returncode == 1  # none left
    assert subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True).returncode == 1
    up = subprocess.run(["bash", str(HERE / "up.sh")], capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    assert queue.returncode == 0 and queue.stdout.strip() == ""  # the pending job did not come back
    idle = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True).stdout
    assert sorted(line.split()[1] for line in idle.splitlines()) == ["idle", "idle"]
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the dev cluster is started and stopped as root")
def test_up_starts_over_the_stale_files_of_daemons_that_died(cluster, tmp_path):  # noqa: F811
    # A machine restored from a snapshot keeps pid files and sockets of daemons that no longer run: mariadbd's
    # socket file made up.sh talk to a server that was not there yet, and a pid file may name another process.
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        for daemon in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            subprocess.run(["pkill", "-9", "-x", daemon])
        assert wait_for(lambda: subprocess.run(["pgrep", "-x", "mariadbd|munged"]).returncode == 1, 30)
        assert os.path.exists("/run/mysqld/mysqld.sock")  # left behind, as after a snapshot
        with open("/run/munge/munged.pid", "w") as pid_file:
            pid_file.write(f"{stranger.pid}\n")
        up = subprocess.run(["bash", str(HERE / "up.sh")], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "starting mariadbd" in up.stdout and "starting munged" in up.stdout
        sbatch = ["sbatch", "--parsable", "--wait", "--output=/dev/null", "--wrap", "true"]
        job = subprocess.run(sbatch, capture_output=True, text=True)
        assert job.returncode == 0, job.stderr
        with open("/run/hpcnas-slurm/slurmd-n9.pid", "w") as pid_file:  # a stale file down.sh must not follow
            pid_file.write(f"{stranger.pid}\n")
        down = subprocess.run(["bash", str(HERE / "down.sh")], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0 and stranger.poll() is None, down.stdout + down.stderr
        up = subprocess.run(["bash", str(HERE / "up.sh")], capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
    finally:
        stranger.kill()
