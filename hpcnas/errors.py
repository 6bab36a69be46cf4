"""The user-facing error: bad input that the user can fix.

Any layer raises :class:`UserError` for a wrong config key, a broken data
file, an invalid genotype or a missing device; the command line turns it into
one line ``hpcnas: error: ...`` on stderr and exit code 2.
A run that worked but could not produce a result raises :class:`SearchFailed`:
exit code 1 and one ``hpcnas: error:`` line, its run directory kept.
Everything else is a bug or an environment failure: exit code 1, with the
traceback in the run's log file.  A run stopped by a signal after saving its
state raises :class:`Interrupted`: exit code 75 (``EX_TEMPFAIL``, "try again"),
which the SLURM job scripts answer with a requeue.
"""

from __future__ import annotations

import difflib
import logging
import sys
from typing import Iterable, Optional

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1
EXIT_RESUMABLE = 75


class UserError(Exception):
    """Bad input, reported as ``hpcnas: error: [SOURCE: ][key 'KEY': ]MESSAGE``."""

    def __init__(self, message: str, source: Optional[str] = None, key: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.key = key

    def __str__(self) -> str:
        parts = []
        if self.source:
            parts.append(str(self.source))
        if self.key:
            parts.append(f"key '{self.key}'")
        parts.append(self.message)
        return ": ".join(parts)

    def located(self, source: str) -> "UserError":
        """Return this error with ``source`` filled in when it had none."""
        if self.source is None:
            self.source = source
        return self


class SearchFailed(Exception):
    """A search that ran and ended without a result; what it recorded stays in its run directory."""


class Interrupted(Exception):
    """A run stopped by ``signal`` after writing everything a ``--resume`` needs into ``run_dir``."""

    def __init__(self, run_dir, signal: str, where: str):
        super().__init__(f"stopped by {signal} {where}: state saved in {run_dir}; continue with --resume {run_dir}")
        self.run_dir, self.signal, self.where = run_dir, signal, where


def nearest(name: str, candidates: Iterable[str]) -> str:
    """A ``" (did you mean 'x'?)"`` hint for a misspelt name, or ``""``."""
    match = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_name(what: str, name: object, known: Iterable[str]) -> str:
    """``"unknown WHAT 'NAME' (did you mean 'X'?) (known: A, B)"``: the one message for a name no registry has."""
    known = list(known)
    return f"unknown {what} {str(name)!r}{nearest(str(name), known)} (known: {', '.join(known)})"


def warn(message: str) -> None:
    """One ``hpcnas: warning: MESSAGE`` line on stderr, also kept in the run's log.txt when one is open."""
    say(f"warning: {message}", logging.WARNING)


def say(message: str, level: int = logging.INFO) -> None:
    """One ``hpcnas: MESSAGE`` line on stderr, also kept in the run's log.txt when one is open, at ``level``, so
    that the log says what the terminal said."""
    print(f"hpcnas: {message}", file=sys.stderr, flush=True)
    logger = logging.getLogger("hpcnas")
    record = logger.makeRecord(logger.name, level, __file__, 0, "%s", (message,), None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
