"""The command line: help without torch, exit codes, crash logs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


def _modules_after(code: str) -> set:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return set(out.stdout.split())


def test_import_and_help_never_import_torch():
    assert "torch" not in _modules_after("import hpcnas")
    assert "torch" not in _modules_after(
        "import hpcnas.cli, hpcnas.config, hpcnas.space.genotype, hpcnas.search.decode, hpcnas.data.hdf5, "
        "hpcnas.data.sharding, hpcnas.rundir"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom hpcnas.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout.strip().endswith("False"), proc.stdout
    assert "search" in proc.stdout and "data" in proc.stdout


def test_console_scripts_installed():
    """The environment that runs the tests has the ``hpcnas`` command, as the setup script installs it."""
    exe = Path(sys.executable).parent / "hpcnas"
    assert exe.is_file(), f"no console script {exe}: install the package (bash envs/setup.sh)"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "smoke" in proc.stdout


def test_bad_arguments_exit_2():
    proc = run_cli("data", "synth")
    assert proc.returncode == 2 and "--out" in proc.stderr


def test_missing_config_file_exit_2(tmp_path):
    proc = run_cli("search", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hpcnas: error: {tmp_path / 'nope.yaml'}: no such file"


@pytest.mark.slow
def test_missing_gpu_is_a_clear_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    proc = run_cli(
        "search", "--config", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "r"), "--device", "cuda"
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("hpcnas: error: --device: device 'cuda' requested but no CUDA GPU is available")


def test_internal_error_goes_to_log(tmp_path):
    """A failure that is not bad input: exit 1, one line, the traceback in the run's error.log."""
    from hpcnas.cli import run

    class Args:
        out = str(tmp_path)
        verbose = False

    def boom(args):
        raise RuntimeError("disk on fire")

    assert run(boom, Args()) == 1
    assert "RuntimeError: disk on fire" in (tmp_path / "error.log").read_text()


@pytest.mark.slow
def test_out_on_an_existing_run_is_refused(tmp_path):
    """Nothing already written is lost: a second run into the same --out stops before writing."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 0\n")
    (out / "metrics.jsonl").write_text('{"epoch": 0}\n')
    proc = run_cli("search", "--config", str(ROOT / "configs/smoke.yaml"), "--out", str(out))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"hpcnas: error: {out}: already holds a run: continue it with --resume {out}, or choose another --out"
    )
    assert (out / "metrics.jsonl").read_text() == '{"epoch": 0}\n' and (out / "config.yaml").read_text() == "seed: 0\n"


def test_launch_detection(monkeypatch):
    from hpcnas.distributed import launched_rank, launched_size

    for name in (
        "HOROVOD_SIZE",
        "HOROVOD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_RANK",
        "PMI_SIZE",
        "PMI_RANK",
        "PMIX_RANK",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "SLURM_STEP_ID",
    ):
        monkeypatch.delenv(name, raising=False)
    assert (launched_size(), launched_rank()) == (1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "8")  # an sbatch script, not yet under srun: one process
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert launched_size() == 1
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert (launched_size(), launched_rank()) == (8, 3)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert (launched_size(), launched_rank()) == (2, 1)


def test_a_warning_after_the_command_finished_does_not_kill_the_process(tmp_path):
    """SLURM's USR2 can land after the work is done, while the process shuts down: the run
    stays a success (exit 0), not a death by signal (exit 140) that fails the job."""
    code = (
        "import os, signal, sys\nfrom hpcnas.cli import main\n"
        f"code = main(['data', 'synth', '--out', {str(tmp_path / 'd.h5')!r}, '--n', '8', '--size', '32'])\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\nos.kill(os.getpid(), signal.SIGTERM)\n"
        # ignored, not handled in Python: at shutdown Python resets its handlers to the default action, and
        # a loaded node's job died of a warning that landed then
        "print(all(signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGUSR2, signal.SIGTERM)))\n"
        "sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("True"), proc.stdout + proc.stderr


def _console(*args):
    """The ``hpcnas`` console script of this environment, as SLURM's srun starts it."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "hpcnas"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (sig - 1) & 1)


@pytest.mark.slow
def test_a_warning_during_start_up_stops_a_search_cleanly(tmp_path):
    """USR2 while the command is still importing (a loaded node): kept for the first step, exit 75, resumable."""
    out = tmp_path / "run"
    proc = _console(
        "search",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--out",
        str(out),
        "--set",
        "search.epochs=2",
        "--set",
        "device=cpu",
    )
    # the handler is installed first thing and torch takes seconds to import after it: signal as soon as the
    # process catches USR2 (a fixed wait fell before the handler on a loaded machine, where Python starts slowly)
    deadline = time.time() + 60
    while time.time() < deadline and not catches(proc.pid, signal.SIGUSR2):
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err
    assert "stopped by SIGUSR2" in err and "Traceback" not in err
    resumed = _console("search", "--resume", str(out))
    resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and (out / "genotype.json").exists()


def test_a_warning_during_start_up_of_a_command_that_does_not_resume_ends_it(tmp_path):
    proc = _console("data", "synth", "--out", str(tmp_path / "d.h5"), "--n", "4000", "--size", "64")
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM


@pytest.mark.slow
def test_a_warning_after_a_search_finished_does_not_kill_the_process(tmp_path):
    code = (
        "import os, signal, sys\nfrom hpcnas.cli import main\n"
        f"code = main(['search', '--config', {str(ROOT / 'configs' / 'smoke.yaml')!r}, "
        f"'--out', {str(tmp_path / 'r')!r},"
        " '--set', 'search.epochs=1', '--set', 'search.arch_start_epoch=1', '--set', 'device=cpu'])\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\nos.kill(os.getpid(), signal.SIGTERM)\nsys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_an_armed_flag_keeps_an_early_signal_and_never_falls_back_to_the_default():
    """The two windows: a signal before the command's own ``with STOP`` is kept for its first check,
    and leaving that ``with`` does not put the default action (death) back before the process ends."""
    import os

    from hpcnas.signals import StopFlag

    flag = StopFlag()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        flag.arm()
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.01)
        with flag:
            assert flag.signal == "SIGUSR2"  # not cleared by the command's own with
        assert signal.getsignal(signal.SIGUSR2) == flag._set  # still caught after the command
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    """A 1 MB tmpfs fills up at the second checkpoint: exit 1, one error line, no traceback, and the
    checkpoint written before is intact (written via a temporary file and a rename)."""
    import os

    import pytest
    import torch

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], capture_output=True, text=True
    )
    if mounted.returncode:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs to fill: {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        out = tiny / "run"
        proc = run_cli(
            "search", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out), "--set", "device=cpu"
        )
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert lines[-1].startswith(f"hpcnas: error: no space left on device writing {out}"), proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and sum(line.startswith("hpcnas:") for line in lines) == 1
        kept = sorted((out / "checkpoints").iterdir())
        # best.pt is written before latest.pt, the commit point, whose write filled the disk: no half-written
        # temporary file is left, best.pt is whole, and no metrics line claims an epoch that no checkpoint holds
        assert [p.name for p in kept] == ["best.pt"]
        assert torch.load(kept[0], weights_only=True)["epoch"] == 0
        assert (out / "metrics.jsonl").read_text() == ""
    finally:
        subprocess.run(["umount", str(tiny)], check=False)
