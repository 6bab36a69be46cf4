"""Shared fixtures: small real HDF5 data sets and the path of the real Dubai set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcnas.distributed import MPI_LAUNCH_ENV

# One torch thread per process, here and in every process a test starts (they inherit it): the tests run several
# processes at once (ranks, worker children, SLURM jobs) on a few cores, and torch's default of a thread per core
# then spins them against each other; on 2 busy cores a smoke search took 55 s with the default and 9 s with one
# thread. Set before torch is first imported; a value already set is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = shutil.which("mpirun")
# Open MPI as root, more ranks than cores, Python's output unbuffered (tests read it while a run goes on)
MPI_ENV = {
    **MPI_LAUNCH_ENV,  # what hpcnas tells users to launch MPI with: no X display probe
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "PYTHONUNBUFFERED": "1",
}
# pytest-xdist runs the suite in 3 processes (pyproject's addopts). The tests that drive the dev SLURM cluster (and
# stop and start it) run one after another in one of them, beside the rest, since they mostly wait on the cluster.
# The listener on TensorBoard's port would stall a job step that probes X displays, so it runs there too.
ON_THE_DEV_CLUSTER = (
    "tests/cluster/test_dev_cluster.py::",
    "tests/cluster/test_slurm.py::",
    "tests/execution/test_orchestrator.py::test_mpirun_starts_beside_a_listener_on_tensorboards_port",
)


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) still loads this file
def pytest_xdist_make_scheduler(config, log):
    """Tests load-balanced one by one, except the dev cluster's, which are one unit of work for one process."""
    from xdist.scheduler import LoadScopeScheduling

    class DevClusterApart(LoadScopeScheduling):
        # xdist's own loadgroup reads xdist_group marks through a node id that pytest 9 no longer lets it change
        def _split_scope(self, nodeid: str) -> str:
            return "dev-cluster" if nodeid.startswith(ON_THE_DEV_CLUSTER) else nodeid

    return DevClusterApart(config, log)


needs_mpi = pytest.mark.skipif(MPIRUN is None, reason="no mpirun (envs/setup.sh installs Open MPI)")
DUBAI = ROOT.parent / "shared" / "data" / "dubai_aerial" / "Semantic segmentation dataset"


@pytest.fixture(scope="session")
def synth_h5(tmp_path_factory) -> Path:
    """A small synthetic data set shared by the read-only tests."""
    from hpcnas.data.synth import synthesize

    path = tmp_path_factory.mktemp("data") / "synth.h5"
    synthesize(path, n=24, size=32, seed=1)
    return path


def set_args(overrides) -> list:
    """``["--set", k=v, "--set", ...]`` for a list of overrides."""
    return [arg for item in overrides for arg in ("--set", item)]


def run_cli(*args: str, cwd=None, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m hpcnas.cli ARGS`` as a user would and capture its output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "hpcnas.cli", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_interrupted_in_epoch(monkeypatch, loop_cls, epoch: int, run) -> None:
    """Call ``run()`` with ``loop_cls.train_epoch`` dying at the start of ``epoch`` (after the
    previous epoch's checkpoint), as a kill would; the patch is undone afterwards."""
    original = loop_cls.train_epoch

    def dies(self, e):
        if e == epoch:
            raise KeyboardInterrupt
        return original(self, e)

    monkeypatch.setattr(loop_cls, "train_epoch", dies)
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        monkeypatch.setattr(loop_cls, "train_epoch", original)


def run_signalled_at_step(monkeypatch, loop_cls, epoch: int, step: int, run) -> None:
    """Call ``run()`` with a real SIGUSR2 arriving during step ``step`` of ``epoch``; expect the
    loop to save a mid-epoch checkpoint and raise Interrupted (the patch is undone afterwards)."""
    import signal

    from hpcnas.errors import Interrupted

    original = loop_cls.train_step
    calls = {}

    def signalled(self, e, batch):
        calls[e] = calls.get(e, 0) + 1
        if e == epoch and calls[e] == step + 1:
            os.kill(os.getpid(), signal.SIGUSR2)
        return original(self, e, batch)

    monkeypatch.setattr(loop_cls, "train_step", signalled)
    try:
        with pytest.raises(Interrupted, match=f"SIGUSR2 in epoch {epoch + 1} after step {step + 1}/"):  # from 1
            run()
    finally:
        monkeypatch.setattr(loop_cls, "train_step", original)
