"""Progress of long loops: a bar with rate and ETA on a terminal, a log line every few seconds otherwise.

A SLURM log or a redirected stderr is not a terminal, and a bar there is noise; a line every
``HPCNAS_PROGRESS_S`` seconds (default 30) says the same and shows in the run's log.txt too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

log = logging.getLogger("hpcnas")

T = TypeVar("T")

DEFAULT_INTERVAL_S = 30.0


def interval_s() -> float:
    """Seconds between two progress lines in a log (``HPCNAS_PROGRESS_S``)."""
    try:
        return max(float(os.environ.get("HPCNAS_PROGRESS_S", DEFAULT_INTERVAL_S)), 0.0)
    except ValueError:
        return DEFAULT_INTERVAL_S


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A count towards ``total`` (None: unknown): a tqdm bar on an interactive terminal, else a log line
    (``desc: 12/40 steps (0.4/s, ETA 0:01:10)``) at most every :func:`interval_s` seconds.
    ``unit`` is plural: ``steps``, ``batches``, ``windows``."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "items", enabled: bool = True):
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = 0
        self.started = self.last = time.monotonic()
        self.every = interval_s()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        """``count`` more done."""
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.monotonic()
        if not self.enabled or now - self.last < self.every or (self.total is not None and self.done >= self.total):
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        eta = f", ETA {clock((self.total - self.done) / rate)}" if self.total and rate > 0 else ""
        log.info("%s: %d%s %s (%.3g/s%s)", self.desc, self.done, of, self.unit, rate, eta)

    def close(self) -> None:
        """Remove the bar (a log needs no closing line: the caller logs what was done)."""
        if self.bar is not None:
            self.bar.close()


def progress(
    iterable: Iterable[T], total: Optional[int], desc: str, enabled: bool = True, unit: str = "items"
) -> Iterator[T]:
    """``iterable``, reporting how far it got through :class:`Progress`."""
    shown = Progress(total, desc, unit, enabled)
    try:
        for item in iterable:
            yield item
            shown.update()
    finally:
        shown.close()
