"""Shared by the benchmarks: print the rows as JSON (after the table) and optionally write them."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, Optional


def emit(payload: Dict[str, Any], path: Optional[str]) -> None:
    """Print ``payload`` as indented JSON, with the command that made it; also write it to ``path`` when given."""
    payload = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), **payload}
    text = json.dumps(payload, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


# MPI and Horovod settings that change data-parallel figures on a small machine: recorded with the results
TUNING_VARIABLES = ("HOROVOD_CYCLE_TIME", "OMPI_MCA_mpi_yield_when_idle", "HOROVOD_CACHE_CAPACITY", "OMP_NUM_THREADS")


def tuning() -> Dict[str, str]:
    """The settings of ``TUNING_VARIABLES`` this process runs with."""
    return {k: os.environ[k] for k in TUNING_VARIABLES if k in os.environ}
