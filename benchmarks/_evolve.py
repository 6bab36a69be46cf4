"""Shared by the benchmarks that run the real discrete search: one ``mpirun ... hpcnas evolve`` run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from hpcnas.distributed import MPI_LAUNCH_ENV

ROOT = Path(__file__).resolve().parents[1]


def mpirun_environment() -> dict:
    """This environment plus what Open MPI needs to start without probing X displays, and to run as root and
    oversubscribed on a small machine."""
    return dict(
        {**MPI_LAUNCH_ENV, **os.environ},
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )


def run_evolve(mpirun: str, ranks: int, config: str, out: Path, overrides: Sequence[str]) -> None:
    """Run a discrete search with ``ranks`` ranks (oversubscribed, allowed as root) into ``out``; raise if it fails."""
    env = mpirun_environment()
    cmd = [
        mpirun,
        "-np",
        str(ranks),
        "--oversubscribe",
        sys.executable,
        "-m",
        "hpcnas.cli",
        "evolve",
        "--config",
        str(ROOT / config),
        "--out",
        str(out),
    ]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mpirun failed ({out.name}):\n{proc.stderr[-2000:]}")
