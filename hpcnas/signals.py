"""Stopping early, on purpose: SLURM's warning before the time limit, or a preemption.

``sbatch --signal=USR2@T`` sends SIGUSR2 T seconds before the limit; ``scancel``
and preemption send SIGTERM.  A handler only sets a flag; the loops look at it
where stopping is safe (between steps, between dispatches), save their state
and raise :class:`hpcnas.errors.Interrupted`, which the command line turns
into exit code 75 so the job script knows to requeue.  No torch here: the MPI
dispatcher uses it too.
"""

from __future__ import annotations

import functools
import signal
import threading
from typing import Any, Dict, Optional

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class StopFlag:
    """A re-entrant context manager that catches SIGTERM and SIGUSR2 while it is active.

    ``signal`` holds the name of the first one received (``None`` before).
    The outermost ``with`` clears it and installs the handlers; nested ones
    (a command around its loop, see :func:`stoppable`) share them, so a signal that arrives
    while a run is still starting is seen by the loop's first check.  The
    previous handlers come back when the outermost ``with`` ends.  Outside the
    main thread (where Python cannot install handlers) it stays inert.
    """

    def __init__(self) -> None:
        self.signal: Optional[str] = None
        self._previous: Dict[int, Any] = {}
        self._depth = 0
        self._armed = False  # held for the whole process by its entry point (see :meth:`arm`)

    def arm(self) -> None:
        """Catch the stop signals from now on, for the rest of the process.

        The entry points call this first thing, so that SLURM's warning during
        start-up (imports take seconds on a loaded node) is kept for the
        command's first check instead of killing the process; the ``with``
        blocks inside then neither clear the flag nor restore the handlers, and
        :func:`ignore_stop_signals` swaps the handler out at the end without
        a moment of the default action in between.
        """
        if self._armed or threading.current_thread() is not threading.main_thread():
            return
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._set)
        self._armed = True

    def disarm(self) -> None:
        """Undo :meth:`arm` for a command that does not resume: the previous handlers come back,
        and a stop signal caught meanwhile is delivered to them now, as if it had just arrived."""
        if not self._armed:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        self._armed = False
        if self.signal is not None:
            caught, self.signal = self.signal, None
            signal.raise_signal(signal.Signals[caught])

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signal is not None

    def _set(self, signum, frame) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        self._depth += 1
        if self._depth == 1 and not self._armed:
            self.signal = None
            if threading.current_thread() is threading.main_thread():
                for sig in STOP_SIGNALS:
                    self._previous[sig] = signal.signal(sig, self._set)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0 and not self._armed:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()


STOP = StopFlag()  # the one flag of this process: the commands and their loops share it


def stoppable(func):
    """Run ``func`` holding :data:`STOP` from its first line, so a warning that arrives while a
    run is still setting up is acted on at the loop's first step (for the commands that resume)."""

    @functools.wraps(func)
    def holding_stop(*args, **kwargs):
        with STOP:
            return func(*args, **kwargs)

    return holding_stop


def _ignore(signum, frame) -> None:
    """A no-op handler (not SIG_IGN: that would be inherited by child processes across exec)."""


def ignore_stop_signals(until_exit: bool = False) -> None:
    """Let SIGTERM and SIGUSR2 pass over this process (a rank whose stop another rank coordinates,
    or, with ``until_exit``, a process whose command is over).

    ``until_exit`` uses ``SIG_IGN``: at interpreter shutdown Python puts the default action back for
    every signal with a Python handler, and a SLURM warning landing after that (while torch and MPI
    shut down) would kill a finished run.  Children started afterwards would inherit it: only for the end.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN if until_exit else _ignore)
    STOP._armed = False
    STOP._previous.clear()
