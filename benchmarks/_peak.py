"""A process's own peak resident memory, as the kernel counts it for its address space.

``getrusage``'s ``ru_maxrss`` (and ``wait4``'s) is not that: Linux folds the parent's high-water mark into a
child at ``exec``, so a benchmark that held 2 GB reports at least 2 GB for every child it starts (seen here: a
child printing 13 MB of ``VmHWM`` had 2,075 MB of ``ru_maxrss``). ``VmHWM`` belongs to the address space the
child made at ``exec``, so each child reports its own peak.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PEAK_FILE = "HPCNAS_BENCH_PEAK_FILE"  # where run_reporting_peak's child writes its peak


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (not Linux?)")


def hpcnas_reporting_peak() -> list:
    """A command prefix that runs ``hpcnas ARGS...`` and then writes its peak RSS to ``$HPCNAS_BENCH_PEAK_FILE``."""
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from _peak import run_cli_reporting_peak; "
        "sys.exit(run_cli_reporting_peak(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code, str(Path(__file__).resolve().parent)]


def run_cli_reporting_peak(argv: list) -> int:
    """The child's side of :func:`hpcnas_reporting_peak`."""
    from hpcnas.cli import main

    try:
        return main(argv)
    finally:
        Path(os.environ[PEAK_FILE]).write_text(json.dumps({"peak_rss_mb": peak_rss_mb()}))
