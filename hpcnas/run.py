"""An open run: one run directory's lock, heartbeat and stop flag, and the scope of the command that opened it.

A command function decorated with :func:`holds_run_dirs` gets a :class:`RunScope` (its ``runs`` argument).
Through it the command creates and locks its run directory and starts the heartbeat; it passes the
:class:`Run` it gets to the loops that write there (the epoch loops, the Dispatcher), which read the
heartbeat and the stop flag from it.  When the command ends, its scope ends what it opened: the locks are
released, each heartbeat writes its final state (finished, stopped or failed) and, when the command
rejected its input, the folders it created are removed and an existing run directory's files are put back
as they were found.  Nothing of a run lives in a module-level registry: a command run inside another (the
smoke test runs search and train) has a scope of its own.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hpcnas.errors import Interrupted, UserError
from hpcnas.rundir import PathLike, RunDir, atomic_write_bytes, write_json
from hpcnas.signals import STOP, StopFlag

LOCK_FILE = ".lock"
# what a command may touch in an existing run directory before it has checked its input (lock, heartbeat, config,
# data fingerprint); the log is kept by its length, since it only grows
_GUARDED = (LOCK_FILE, "heartbeat.json", "config.yaml", "data.json")
_GUARDED_LOG = "log.txt"
HEARTBEAT_S = 5.0  # a live run rewrites its heartbeat this often


@dataclass
class Run:
    """A run directory as the loops that write it see it: its path, its named files (:attr:`dir`), its heartbeat
    (rank 0 of the command that opened it; ``None`` on the other ranks and in an evaluation's folder) and the
    stop flag of this process, which a SLURM warning or a SIGTERM sets."""

    path: Path
    heart: Optional["Heartbeat"] = None
    stop: StopFlag = field(default=STOP)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def dir(self) -> RunDir:
        """The run directory's files by name."""
        return RunDir(self.path)


def as_run(run: "Run | PathLike") -> Run:
    """``run`` itself, or a plain folder as a :class:`Run` with no heartbeat (an evaluation's, another rank's)."""
    return run if isinstance(run, Run) else Run(Path(run))


def snapshot_run_dir(path: PathLike) -> tuple:
    """What opening an existing run directory may rewrite (lock, heartbeat, config, data fingerprint) and the
    log's length, taken before the lock: :meth:`RunScope.guard` keeps it once the lock is held."""
    folder = Path(path)
    saved = {name: (folder / name).read_bytes() if (folder / name).is_file() else None for name in _GUARDED}
    log = folder / _GUARDED_LOG
    return folder, saved, log.stat().st_size if log.is_file() else None


class RunScope:
    """What one command has opened: the folders it created, the run directories it locked, the heartbeats it
    started and the files it must put back if it rejects its input (:meth:`close`)."""

    def __init__(self) -> None:
        self.created: List[Path] = []  # folders make_run_dir created itself, outermost first
        self.run_dirs: set = set()  # those of them that are run directories (the others are parents on the way)
        self.held: Dict[str, int] = {}  # resolved run directory -> the open file descriptor that holds its lock
        self.hearts: List[Heartbeat] = []
        self.snapshots: List[tuple] = []  # (run directory, {name: bytes or None}, log length), by guard()

    def make_run_dir(self, out: Optional[PathLike], command: str, base: PathLike = "runs") -> Path:
        """Return ``out`` (created) or a new ``runs/<command>-<timestamp>`` folder."""
        if out is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(base) / f"{command}-{stamp}"
            n = 1
            while out.exists():
                n += 1
                out = Path(base) / f"{command}-{stamp}-{n}"
        path = Path(out)
        try:
            for folder in [*reversed(path.parents), path]:
                try:
                    folder.mkdir()  # atomic: of two starts racing for one --out, exactly one creates it
                    self.created.append(folder)
                    if folder == path:
                        self.run_dirs.add(folder)
                except FileExistsError:
                    if not folder.is_dir():
                        raise
        except (FileExistsError, NotADirectoryError):
            raise UserError("cannot create the run directory: a file is in the way", source=str(out)) from None
        except PermissionError as exc:
            raise UserError(f"cannot create the run directory: {exc.strerror}", source=str(out)) from None
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            raise UserError("cannot create the run directory: read-only file system", source=str(out)) from None
        return path

    def lock(self, path: PathLike) -> None:
        """Make this process the run directory's only writer until the scope closes.

        An exclusive ``flock`` on ``DIR/.lock``: the kernel drops it when the
        process dies, however it dies, so a crash never leaves a stale lock.  A
        second writer gets a :class:`UserError` naming the holder.  Where the file
        system has no ``flock`` (a Lustre client mounted ``noflock``), the run goes
        on unlocked with a warning.
        """
        import fcntl
        import logging
        import socket

        key = str(Path(path).resolve())
        if key in self.held:
            return
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"in use by {holder}: one writer per run directory", source=str(path)) from None
        except OSError as exc:
            logging.getLogger("hpcnas").warning(
                "%s: no lock on this file system (%s); make sure no other command writes this run directory",
                path,
                exc.strerror,
            )
            os.close(fd)
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.held[key] = fd

    def guard(self, snapshot: tuple) -> None:
        """Keep a :func:`snapshot_run_dir` taken before this process locked the run, so that a command that then
        rejects its input puts those files back byte for byte: a refused ``--resume`` of a finished run must not
        leave it looking failed. Called only once the lock is held: a start refused because another process
        writes the run must not touch that run's files."""
        self.snapshots.append(snapshot)

    def start_heartbeat(self, run_dir: PathLike, command: str) -> "Heartbeat":
        """Begin beating for ``run_dir`` (rank 0 of a search, train or evolve); it ends with the scope."""
        heart = Heartbeat(run_dir, command)
        self.hearts.append(heart)
        heart.start()
        return heart

    def close(self, failure: Optional[BaseException]) -> None:
        """End what the command opened, ``failure`` being how it ended (None: it finished)."""
        try:
            if failure is None:
                self._end_hearts("finished")
            elif isinstance(failure, Interrupted):
                self._end_hearts("stopped", str(failure))
            elif isinstance(failure, UserError):
                self._end_hearts("failed", f"error: {failure}")
                self._restore_guarded()  # an existing run directory is left as it was found
                self._release()
                self._remove_created()
            else:  # the final state of a failure, whatever it is
                first_line = str(failure).splitlines()[0][:300] if str(failure) else ""
                self._end_hearts("failed", f"{type(failure).__name__}: {first_line}".rstrip(": "))
        finally:
            self._release()
            self.created.clear()
            self.snapshots.clear()

    def _end_hearts(self, state: str, error: Optional[str] = None) -> None:
        while self.hearts:
            self.hearts.pop().end(state, error)

    def _release(self) -> None:
        while self.held:
            os.close(self.held.popitem()[1])

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            if folder in self.run_dirs:  # a run directory this command made: everything in it is this run's
                shutil.rmtree(folder, ignore_errors=True)
            else:  # a new parent: only while empty, another run may have come to live there
                try:
                    folder.rmdir()
                except OSError:
                    break

    def _restore_guarded(self) -> None:
        """Put back what :meth:`guard` remembered, newest first."""
        while self.snapshots:
            folder, saved, log_size = self.snapshots.pop()
            if not folder.is_dir():
                continue
            for name, content in saved.items():
                target = folder / name
                if content is None:
                    target.unlink(missing_ok=True)
                elif name == LOCK_FILE and target.is_file():  # in place: the lock is held on this very inode
                    with open(target, "r+b") as fh:
                        fh.write(content)
                        fh.truncate()
                elif not target.is_file() or target.read_bytes() != content:
                    atomic_write_bytes(target, content)
            log = folder / _GUARDED_LOG
            if log_size is None:
                log.unlink(missing_ok=True)
            elif log.is_file() and log.stat().st_size > log_size:
                os.truncate(log, log_size)


def holds_run_dirs(fn):
    """Decorator: ``fn`` gets a fresh :class:`RunScope` as its ``runs`` argument, closed with the way ``fn``
    ended (:meth:`RunScope.close`) when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        scope = RunScope()
        try:
            result = fn(*args, runs=scope, **kwargs)
        except BaseException as exc:
            scope.close(exc)
            raise
        scope.close(None)
        return result

    return wrapper


class Heartbeat:
    """Rank 0's sign of life in ``heartbeat.json``, rewritten atomically every ``interval`` seconds by a timer.

    ``hpcnas status`` reads it from the run directory alone (a login node on the shared file system):
    the command, its progress, when it last beat, and in the end how it ended.  The timer, a daemon
    thread, writes whatever progress was last recorded, so a step or a validation that takes an hour
    still shows a live run; only a dead process (or a frozen host) stops it.
    """

    def __init__(self, run_dir: PathLike, command: str, interval: float = HEARTBEAT_S):
        import socket

        self.path, self.command, self.interval = RunDir(run_dir).heartbeat, command, interval
        self.started = time.time()
        self.host = socket.gethostname()
        self.progress: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._timer: Optional[threading.Thread] = None

    def start(self) -> None:
        """Write the first beat and start the timer."""
        self._write("running", None)
        self._timer = threading.Thread(target=self._beat_until_ended, name="hpcnas-heartbeat", daemon=True)
        self._timer.start()

    def _beat_until_ended(self) -> None:
        while not self._ended.wait(self.interval):
            self._write("running", None)

    def beat(self, force: bool = False, **progress: Any) -> None:
        """Record progress (e.g. ``epoch=3, epochs=10``); the timer writes it, or now with ``force``.

        A key given as ``None`` is removed (a phase that ended)."""
        with self._lock:
            self.progress.update(progress)
            for key in [k for k, v in progress.items() if v is None]:
                del self.progress[key]
        if force:
            self._write("running", None)

    def end(self, state: str, error: Optional[str] = None) -> None:
        """The final state: ``finished``, ``stopped`` (resumable) or ``failed`` (with its error line)."""
        self._ended.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        self._write(state, error)

    def _write(self, state: str, error: Optional[str]) -> None:
        if not self.path.parent.is_dir():  # a rejected start removed its folder: never recreate it
            return
        with self._lock:
            if state == "running" and self._ended.is_set():
                return  # the final state is being written: a late timer beat must not overwrite it
            record = {
                "command": self.command,
                "state": state,
                "pid": os.getpid(),
                "host": self.host,
                "started": self.started,
                "time": time.time(),
                "slurm_job": os.environ.get("SLURM_JOB_ID"),
                "progress": dict(self.progress),
                "error": error,
            }
            try:
                write_json(self.path, record)
            except OSError:  # a sign of life must never be what kills the run (a full or flaky disk)
                pass
