"""The job scripts and ``hpcnas submit`` on a real SLURM cluster (slurm/dev-cluster: 2 emulated
nodes with 4 stand-in GPUs each), with CPU-sized overrides.

Skipped when no cluster answers, unless HPCNAS_REQUIRE_SLURM=1 (.ci/run sets it
after starting the cluster), where a missing cluster is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
import torch

from hpcnas.rundir import read_jsonl
from tests.conftest import ROOT, run_cli
from tests.conftest import set_args as sets
from tests.execution.test_orchestrator import budget_used

pytestmark = pytest.mark.slow

SMOKE = str(ROOT / "configs" / "smoke.yaml")
TINY = [
    "data.synth.n=16",
    "data.synth.size=32",
    "space.channels=8",
    "space.depth=2",
    "space.nodes=2",
    "search.batch_size=4",
    "search.arch_start_epoch=1",
    "search.partial_channels=2",
    "device=cpu",
]
# Long enough (about a minute on 2 cores) that a job with a 3-minute limit and the warning 120 s before it is
# signalled at least once. SLURM checks time limits every 30 s and sends a warning at the check before it is due:
# here 30 to 60 s after a start. (With a 2-minute limit and the warning 90 s before it, it came 0.2 s after one
# start, before the task had started Python, and another time before the step existed, so it was lost.)
LONG_EPOCHS = 60
LONG = ["data.synth.n=32", *TINY[1:], f"search.epochs={LONG_EPOCHS}"]
JOB_ENV = dict(os.environ, OMPI_MCA_btl="self,tcp")  # Open MPI between emulated nodes of one host: TCP


@pytest.fixture(scope="module")
def cluster():
    """An idle cluster with two nodes, or skip (fail under HPCNAS_REQUIRE_SLURM=1)."""
    reason = None
    if shutil.which("sbatch") is None:
        reason = "no sbatch on PATH"
    else:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True)
        idle = {line.split()[0] for line in states.stdout.splitlines() if line.split()[1:] == ["idle"]}
        if states.returncode or len(idle) < 2:
            reason = f"no idle 2-node SLURM cluster (sinfo: {states.stdout.strip() or states.stderr.strip()})"
    if reason:
        if os.environ.get("HPCNAS_REQUIRE_SLURM") == "1":
            pytest.fail(f"HPCNAS_REQUIRE_SLURM=1 but {reason}: start it with slurm/dev-cluster/up.sh")
        pytest.skip(reason)


def sbatch_command(script, *args, sbatch_args=(), output=None) -> list:
    """``sbatch --wait`` of ``slurm/SCRIPT ARGS``, with a 10-minute limit so that a job that went wrong ends by itself
    (``sbatch_args`` may set their own)."""
    return ["sbatch", "--wait", "--time=10", f"--output={output}", *sbatch_args, str(ROOT / "slurm" / script), *args]


def sbatch(script, *args, sbatch_args=(), output=None, timeout=600, env=JOB_ENV):
    """``sbatch --wait`` from the repository root; returns (completed process, job output text)."""
    cmd = sbatch_command(script, *args, sbatch_args=sbatch_args, output=output)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, output.read_text() if output.exists() else ""


def final_model(run_dir):
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)["model"]


class Started:
    """A command started now in the background, its output kept in files; ``wait()`` gives its completed process."""

    def __init__(self, cmd, out_dir, env, timeout: float = 600):
        self.cmd, self.out_dir = cmd, out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "stdout", "w") as stdout, open(out_dir / "stderr", "w") as stderr:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, text=True)
        self.deadline = time.monotonic() + timeout

    def wait(self) -> subprocess.CompletedProcess:
        returncode = self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        out, err = ((self.out_dir / name).read_text() for name in ("stdout", "stderr"))
        return subprocess.CompletedProcess(self.cmd, returncode, out, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def at_time_limit(cluster, tmp_path_factory):
    """The LONG search twice at once as a job with a 3-minute limit: through the sbatch script and through
    ``hpcnas submit``. They start together because they mostly wait: SLURM signals each start 30-60 s in and starts
    it again.

    Each must resume at the step its stop saved, and both must end alike; they are not compared with an
    uninterrupted run: that a resumed run ends as one is the kill soak's to show, at random instants and without a
    cluster (an uninterrupted reference here cost a fifth of the cluster tests' CPU, and SLURM's 30 s checks stop
    both jobs at nearly the same steps anyway).
    """
    base = tmp_path_factory.mktemp("time-limit")
    sbatch_job = sbatch_command(
        "search_darts_unet.sh",
        *["--config", SMOKE, "--out", str(base / "sbatch" / "run"), *sets(LONG)],
        sbatch_args=["--time=3", "--signal=USR2@120", "--cpus-per-task=1", "--nodes=1", "--ntasks-per-node=1"],
        output=base / "sbatch" / "job.out",
    )
    submit_job = [sys.executable, "-m", "hpcnas.cli", "submit", "--config", SMOKE, *sets(LONG), "--command", "search"]
    submit_job += ["--nodes", "1", "--gpus-per-node", "1", "--cpus-per-task", "1", "--time", "00:03:00"]
    submit_job += ["--signal-delay", "120", "--out", str(base / "submit" / "run")]
    submit_job += ["--logs", str(base / "submit" / "logs"), "--wait"]
    started = {
        "sbatch": Started(sbatch_job, base / "sbatch", JOB_ENV),
        "submit": Started(submit_job, base / "submit", JOB_ENV),
    }
    yield base, started
    for job in started.values():
        job.stop()


STOP_LINE = re.compile(
    r"stopped by SIG\w+ (?:in epoch (\d+) (?:after step (\d+)/\d+|while validating)|after epoch (\d+))"
)
RESUME_LINE = re.compile(r"resuming \S+ at epoch (\d+)(?:, after step (\d+))?")


def assert_resumed_where_it_stopped(run_dir):
    """Every stop the run's log records is followed by a start that resumes at the step it saved (a stop between
    epochs: at the next epoch's start; a stop while validating: at that epoch, whose steps are all saved), and
    every epoch ran once."""
    log = (run_dir / "log.txt").read_text()
    stops, resumes = STOP_LINE.findall(log), RESUME_LINE.findall(log)
    assert stops and len(resumes) == len(stops), log[-3000:]
    for (epoch, step, after_epoch), (resumed_epoch, resumed_step) in zip(stops, resumes):
        if after_epoch:
            assert (int(resumed_epoch), resumed_step) == (int(after_epoch) + 1, ""), log[-3000:]
        else:
            assert int(resumed_epoch) == int(epoch), log[-3000:]
            assert step == "" or int(resumed_step or 0) == int(step), log[-3000:]  # validating: its steps are done
    assert [r["epoch"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, LONG_EPOCHS + 1))


def assert_same_run(run_dir, other):
    assert (run_dir / "genotype.json").read_text() == (other / "genotype.json").read_text()
    got, want = final_model(run_dir), final_model(other)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_unetpp_search_script_runs_horovod_across_two_nodes(cluster, tmp_path):
    run = tmp_path / "run"
    proc, log = sbatch(
        "search_darts_unetpp.sh",
        "--config",
        SMOKE,
        "--out",
        str(run),
        *sets(
            TINY
            + [
                "space.topology=darts_unetpp",
                "search.epochs=1",
                "search.arch_start_epoch=1",
                "search.sync_batchnorm=false",
            ]
        ),
        sbatch_args=["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1"],
        output=tmp_path / "job.out",
    )
    assert proc.returncode == 0, log[-3000:] + proc.stderr
    assert "on n[1-2] (2 task(s))" in log and "x 2 rank(s)" in log  # one rank on each emulated node
    assert (run / "genotype.json").exists()
    assert '"topology": "darts_unetpp"' in (run / "genotype.json").read_text()
    assert [r["ranks"] for r in read_jsonl(run / "metrics.jsonl")] == [2]


def test_evolve_script_completes(cluster, tmp_path):
    run = tmp_path / "run"
    proc, log = sbatch(
        "evolve.sh",
        "--config",
        str(ROOT / "configs" / "smoke-evolve.yaml"),
        "--out",
        str(run),
        sbatch_args=["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1"],
        output=tmp_path / "job.out",
    )
    assert proc.returncode == 0, log[-3000:] + proc.stderr
    history = read_jsonl(run / "history.jsonl")
    # smoke-evolve.yaml halves at a rung after epoch 1 of 2: a stopped evaluation is half of the budget's one
    assert 7.5 < budget_used(history) <= 8 + 2 * 0.5 and {r["rank"] for r in history} == {0, 1}
    assert (run / "genotype.json").exists()
    # hpcnas status names the job and asks SLURM how it ended (sacct, once the job left squeue)
    for _ in range(30):
        status = json.loads(run_cli("status", "--json", str(run)).stdout)["runs"][0]
        if status.get("slurm_state") == "COMPLETED":
            break
        time.sleep(1)
    assert (status["state"], status["finished"], status["budget"]) == ("finished", len(history), 8)
    assert status["slurm_job"] and status["slurm_state"] == "COMPLETED", status


def test_random_baseline_array_trains_one_cell_per_task(cluster, tmp_path):
    out = tmp_path / "random"
    proc, log = sbatch(
        "random_baseline.sh",
        "--config",
        SMOKE,
        "--out",
        str(out),
        *sets(TINY + ["train.epochs=1", "train.batch_size=4"]),
        sbatch_args=["--array=0-1", "--cpus-per-task=1"],
        output=tmp_path / "job-%a.out",
    )
    assert proc.returncode == 0, proc.stderr
    genotypes = [(out / str(i) / "genotype.json").read_text() for i in (0, 1)]
    assert genotypes[0] != genotypes[1]  # seeded by the array index
    assert all((out / str(i) / "checkpoints" / "best.pt").exists() for i in (0, 1))


def test_time_limit_signals_requeues_and_resumes_where_it_stopped(at_time_limit):
    base, started = at_time_limit
    proc = started["sbatch"].wait()
    log = (base / "sbatch" / "job.out").read_text() if (base / "sbatch" / "job.out").exists() else ""
    assert proc.returncode == 0, log[-3000:] + proc.stderr
    assert "hpcnas: stopped by SIGUSR2" in log and "requeueing job" in log, log[-3000:]
    assert re.search(r"job \d+ start 2 on", log)
    assert_resumed_where_it_stopped(base / "sbatch" / "run")


def test_a_task_that_sigusr2_ends_before_hpcnas_catches_it_is_requeued_and_resumed(cluster, tmp_path):
    """The warning can land while Python is still starting (a loaded node) and end the task with the signal's
    default action: the job requeues all the same, as it does on hpcnas's exit 75."""
    shim, marker = tmp_path / "bin", tmp_path / "ended-once"
    shim.mkdir()
    venv_hpcnas = shlex.quote(str(Path(sys.executable).parent / "hpcnas"))
    (shim / "hpcnas").write_text(
        "#!/bin/bash\n"
        f"[ -e {shlex.quote(str(marker))} ] || {{ touch {shlex.quote(str(marker))}; kill -USR2 $$; }}\n"
        f'exec {venv_hpcnas} "$@"\n'
    )
    (shim / "hpcnas").chmod(0o755)
    run = tmp_path / "run"
    proc, log = sbatch(
        "search_darts_unet.sh",
        *["--config", SMOKE, "--out", str(run), *sets(TINY + ["search.epochs=1"])],
        sbatch_args=["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1"],
        output=tmp_path / "job.out",
        env=dict(JOB_ENV, HPCNAS_ENV=f"export PATH={shlex.quote(str(shim))}:$PATH"),
    )
    assert proc.returncode == 0, log[-3000:] + proc.stderr
    assert "SIGUSR2 ended hpcnas search before it could catch it" in log and "requeueing job" in log, log[-3000:]
    assert re.search(r"job \d+ start 2 on", log) and (run / "genotype.json").exists()


def test_submit_search_completes_through_submitit(cluster, tmp_path):
    run = tmp_path / "run"
    done = run_cli(
        "submit",
        "--config",
        SMOKE,
        *sets(TINY + ["search.epochs=1", "search.arch_start_epoch=1", "search.sync_batchnorm=false"]),
        "--command",
        "search",
        "--nodes",
        "2",
        "--gpus-per-node",
        "1",
        "--cpus-per-task",
        "1",
        "--time",
        "00:10:00",
        "--out",
        str(run),
        "--logs",
        str(tmp_path / "logs"),
        "--wait",
        env=JOB_ENV,
    )
    assert done.returncode == 0, done.stderr
    job_id = re.search(r"submitted job (\d+) \(slurm\)", done.stdout).group(1)
    assert f"job {job_id} done: {run}" in done.stdout
    assert [r["ranks"] for r in read_jsonl(run / "metrics.jsonl")] == [2] and (run / "genotype.json").exists()


def test_submit_evolve_and_a_random_cell_array(cluster, tmp_path):
    evolve = run_cli(
        "submit",
        "--config",
        str(ROOT / "configs" / "smoke-evolve.yaml"),
        "--command",
        "evolve",
        "--nodes",
        "2",
        "--gpus-per-node",
        "1",
        "--cpus-per-task",
        "1",
        "--time",
        "00:10:00",
        "--out",
        str(tmp_path / "evolve"),
        "--logs",
        str(tmp_path / "logs"),
        "--wait",
        env=JOB_ENV,
    )
    assert evolve.returncode == 0, evolve.stderr
    assert {r["rank"] for r in read_jsonl(tmp_path / "evolve" / "history.jsonl")} == {0, 1}
    array = run_cli(
        "submit",
        "--config",
        SMOKE,
        *sets(TINY + ["train.epochs=1"]),
        "--command",
        "train",
        "--array",
        "2",
        "--gpus-per-node",
        "1",
        "--cpus-per-task",
        "1",
        "--time",
        "00:10:00",
        "--out",
        str(tmp_path / "random"),
        "--logs",
        str(tmp_path / "logs"),
        "--wait",
        env=JOB_ENV,
    )
    assert array.returncode == 0, array.stderr
    assert re.findall(r"submitted job (\d+)_(\d) \(slurm\)", array.stdout)[1][1] == "1"  # one array job, two tasks
    genotypes = [(tmp_path / "random" / str(i) / "genotype.json").read_text() for i in (0, 1)]
    assert genotypes[0] != genotypes[1]


def test_submitted_job_is_requeued_at_its_time_limit_and_resumes(at_time_limit):
    base, started = at_time_limit
    done = started["submit"].wait()
    assert done.returncode == 0, done.stderr
    logs = "".join(p.read_text() for p in (base / "submit" / "logs").rglob("*_log.err"))
    assert "Requeued job" in logs, logs[-3000:]
    assert_resumed_where_it_stopped(base / "submit" / "run")
    assert started["sbatch"].wait().returncode == 0
    assert_same_run(base / "submit" / "run", base / "sbatch" / "run")  # the sbatch and submitit paths end alike


@pytest.fixture(scope="module")
def geo_run(tmp_path_factory):
    """A network trained on small GeoTIFFs and three new scenes to predict."""
    from tests.geodata import make_geo_run

    return make_geo_run(tmp_path_factory.mktemp("geo"), scenes=3)


def test_predict_array_script_and_submit_share_the_scenes(cluster, geo_run, tmp_path):
    ckpt = str(geo_run / "run" / "checkpoints" / "best.pt")
    out = tmp_path / "pred"
    args = ["--checkpoint", ckpt, "--input", str(geo_run / "scenes"), "--out", str(out), "--device", "cpu"]
    proc, _ = sbatch(
        "predict.sh", *args, "--vector", sbatch_args=["--array=0-1", "--cpus-per-task=1"], output=tmp_path / "p-%a.out"
    )
    logs = [(tmp_path / f"p-{i}.out").read_text() for i in (0, 1)]
    assert proc.returncode == 0, "".join(logs) + proc.stderr
    assert "--part 0/2" in logs[0] and "--part 1/2" in logs[1]
    assert "2 scene(s)" in logs[0] and "1 scene(s)" in logs[1]  # task 0: scenes 0 and 2, task 1: scene 1
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}{suffix}" for s in ("new", "new1", "new2") for suffix in ("_classes.tif", ".geojson"))

    submitted_out = tmp_path / "submitted"
    done = run_cli(
        "submit", "--command", "predict", "--checkpoint", ckpt, "--input", str(geo_run / "scenes"),
        "--out", str(submitted_out), "--array", "3", "--gpus-per-node", "1", "--cpus-per-task", "1",
        "--time", "00:10:00", "--logs", str(tmp_path / "logs"), "--wait", env=JOB_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("submitted job") == 3 and done.stdout.count(f"done: {submitted_out}") == 3
    for name in ("new", "new1", "new2"):
        with rasterio.open(out / f"{name}_classes.tif") as a, rasterio.open(submitted_out / f"{name}_classes.tif") as b:
            assert a.crs == b.crs and a.transform == b.transform
            assert (a.read() == b.read()).all()


def test_bad_submissions_fail_at_once_with_one_line(cluster, tmp_path):
    proc = subprocess.run(
        ["sbatch", "--partition=nope", str(ROOT / "slurm" / "search_darts_unet.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "invalid partition specified: nope" in proc.stderr

    submitted = run_cli(
        "submit", "--config", SMOKE, "--command", "search", "--partition", "nope", "--logs", str(tmp_path / "logs")
    )
    assert submitted.returncode == 2
    assert (
        submitted.stderr.strip()
        == "hpcnas: error: sbatch refused the job: sbatch: error: invalid partition specified: nope"
    )

    missing = run_cli("submit", "--config", str(tmp_path / "missing.yaml"), "--command", "search")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "missing.yaml" in missing.stderr

    too_big = subprocess.run(
        ["sbatch", str(ROOT / "slurm" / "search_darts_unet.sh")], cwd=ROOT, capture_output=True, text=True
    )  # 2 x 4 tasks x 10 CPUs
    assert too_big.returncode != 0 and "More processors requested than permitted" in too_big.stderr

    proc, log = sbatch(
        "search_darts_unet.sh",
        "--config",
        str(tmp_path / "missing.yaml"),
        "--out",
        str(tmp_path / "run"),
        sbatch_args=["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1"],
        output=tmp_path / "job.out",
        timeout=120,
    )
    assert proc.returncode == 2  # the job's exit code: bad input
    assert re.search(r"hpcnas: error: .*missing\.yaml", log) and "Traceback" not in log
    assert not (tmp_path / "run").exists()
