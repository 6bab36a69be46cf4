"""The run directory contract: where every command leaves its files, and who may write them.

Small, dependency-free helpers shared by all layers: create a run directory,
append JSON lines flushed one by one (a killed run leaves every finished line
readable), and write files atomically (a failure never leaves a half-written
file in place of a good one).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import AbstractSet, Any, Dict, Iterator, List, Optional, Union

PathLike = Union[str, Path]
SUMMARY = "summary.md"  # in a report folder


class RunDir:
    """A run directory's files by name: the one place that spells them.

    Every command writes into one folder; which files it holds says what ran
    there (a search, a training, a discrete search, an evaluation).
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def _at(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self._at("config.yaml"), doc="the resolved configuration (every command)")
    log = property(lambda self: self._at("log.txt"), doc="the run's log (rank 0)")
    error_log = property(lambda self: self._at("error.log"), doc="tracebacks of unexpected failures")
    data = property(lambda self: self._at("data.h5"), doc="the synthetic data set, when config data.path is empty")
    data_fingerprint = property(lambda self: self._at("data.json"), doc="which data the run started on")
    metrics = property(lambda self: self._at("metrics.jsonl"), doc="one line per epoch (search, train)")
    genotype = property(lambda self: self._at("genotype.json"), doc="the decoded, best or trained architecture")
    arch = property(lambda self: self._at("arch.json"), doc="continuous search: the final architecture weights")
    selection = property(
        lambda self: self._at("selection.json"), doc="continuous search: the drops a perturbation selection measured"
    )
    model = property(lambda self: self._at("model.json"), doc="train: how to rebuild the network")
    evaluation = property(lambda self: self._at("evaluation.json"), doc="full-image metrics of a trained network")
    validation = property(
        lambda self: self._at("validation.json"), doc="train with a capped validation: the selected checkpoint on all"
    )
    predictions = property(lambda self: self._at("predictions.npz"), doc="a few predicted examples, for the report")
    history = property(lambda self: self._at("history.jsonl"), doc="discrete search: one finished evaluation per line")
    dispatch = property(lambda self: self._at("dispatch.jsonl"), doc="discrete search: one dispatched task per line")
    checkpoints = property(lambda self: self._at("checkpoints"), doc="the folder of resumable states")
    latest = property(lambda self: self._at("checkpoints/latest.pt"), doc="the state to resume from")
    best = property(lambda self: self._at("checkpoints/best.pt"), doc="the weights of the best validation epoch")
    report = property(lambda self: self._at("report"), doc="hpcnas report's default output folder")
    heartbeat = property(lambda self: self._at("heartbeat.json"), doc="rank 0's sign of life and final state")
    tb = property(lambda self: self._at("tb"), doc="TensorBoard event files (tensorboard --logdir)")

    def eval_dir(self, evaluation: int) -> Path:
        """Discrete search: the run folder of one evaluation's proxy training."""
        return self.path / "evals" / f"{evaluation:05d}"

    def worker_log(self, rank: int) -> Path:
        """Discrete search: what the worker children of one MPI rank print."""
        return self.path / "workers" / f"rank-{rank:03d}.log"

    def holds_a_run(self) -> bool:
        """Whether any command has left its results here."""
        return any(p.exists() for p in (self.metrics, self.evaluation, self.history, self.genotype))


def make_run_dir(out: Optional[PathLike], command: str, base: PathLike = "runs") -> Path:
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
                _CREATED.append(folder)
                if folder == path:
                    _RUN_DIRS.add(folder)
            except FileExistsError:
                if not folder.is_dir():
                    raise
    except (FileExistsError, NotADirectoryError):
        from hpcnas.errors import UserError

        raise UserError("cannot create the run directory: a file is in the way", source=str(out)) from None
    except PermissionError as exc:
        from hpcnas.errors import UserError

        raise UserError(f"cannot create the run directory: {exc.strerror}", source=str(out)) from None
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise
        from hpcnas.errors import UserError

        raise UserError("cannot create the run directory: read-only file system", source=str(out)) from None
    return path


def make_folders(folder: Path, source: str) -> List[Path]:
    """Create ``folder`` and its missing parents; returns those it created, innermost first. A file in the way
    is a UserError."""
    from hpcnas.errors import UserError

    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{parent} is a file, not a folder", source=source)
            break
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_if_empty(created: List[Path]) -> None:
    """Remove the folders :func:`make_folders` created, innermost first, as long as they are empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


LOCK_FILE = ".lock"
# what a command may touch in an existing run directory before it has checked its input (lock, heartbeat, config,
# data fingerprint); the log is kept by its length, since it only grows
_GUARDED = (LOCK_FILE, "heartbeat.json", "config.yaml", "data.json")
_GUARDED_LOG = "log.txt"
_SNAPSHOTS: List[tuple] = []  # (run directory, {name: bytes or None}, log length), taken by guard_run_dir
_HELD: Dict[str, int] = {}  # resolved run directory -> the open file descriptor that holds its lock
_CREATED: List[Path] = []  # folders this process's make_run_dir created itself, outermost first
_RUN_DIRS: set = set()  # those of them that are run directories (the others are parents on the way)


def lock_run_dir(path: PathLike) -> None:
    """Make this process the run directory's only writer until :func:`release_run_dirs`.

    An exclusive ``flock`` on ``DIR/.lock``: the kernel drops it when the
    process dies, however it dies, so a crash never leaves a stale lock.  A
    second writer gets a :class:`UserError` naming the holder.  Where the file
    system has no ``flock`` (a Lustre client mounted ``noflock``), the run goes
    on unlocked with a warning.
    """
    import fcntl
    import logging
    import socket

    from hpcnas.errors import UserError

    key = str(Path(path).resolve())
    if key in _HELD:
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
    _HELD[key] = fd


def snapshot_run_dir(path: PathLike) -> tuple:
    """What opening an existing run directory may rewrite (lock, heartbeat, config, data fingerprint) and the
    log's length, taken before the lock: :func:`guard_run_dir` keeps it once the lock is held."""
    folder = Path(path)
    saved = {name: (folder / name).read_bytes() if (folder / name).is_file() else None for name in _GUARDED}
    log = folder / _GUARDED_LOG
    return folder, saved, log.stat().st_size if log.is_file() else None


def guard_run_dir(snapshot: tuple) -> None:
    """Keep a :func:`snapshot_run_dir` taken before this process locked the run, so that a command that then
    rejects its input (:func:`holds_run_dirs`) puts those files back byte for byte: a refused ``--resume`` of a
    finished run must not leave it looking failed. Called only once the lock is held: a start refused because
    another process writes the run must not touch that run's files."""
    _SNAPSHOTS.append(snapshot)


def _restore_guarded(since: int) -> None:
    """Put back what :func:`guard_run_dir` remembered after the first ``since`` snapshots (newest first)."""
    while len(_SNAPSHOTS) > since:
        folder, saved, log_size = _SNAPSHOTS.pop()
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


def release_run_dirs(keep: "AbstractSet[str]" = frozenset()) -> None:
    """Release every run directory lock this process holds, but those in ``keep``."""
    for key in [k for k in _HELD if k not in keep]:
        os.close(_HELD.pop(key))


def holds_run_dirs(fn):
    """Decorator: the run directories ``fn`` locks are released when it returns or raises, and the
    folders it created are removed again when it rejects its input (a :class:`UserError`), so the
    corrected command does not meet a half-made run.  The heartbeats it started get their final
    state: finished, stopped (``Interrupted``: resumable) or failed with the error's first line."""
    import functools
    import shutil

    from hpcnas.errors import Interrupted, UserError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before, created, beating, guarded = set(_HELD), len(_CREATED), set(_BEATING), len(_SNAPSHOTS)
        try:
            result = fn(*args, **kwargs)
        except Interrupted as exc:
            _end_heartbeats(beating, "stopped", str(exc))
            raise
        except UserError as exc:
            _end_heartbeats(beating, "failed", f"error: {exc}")
            _restore_guarded(guarded)  # an existing run directory is left as it was found
            release_run_dirs(keep=before)
            for folder in reversed(_CREATED[created:]):
                if folder in _RUN_DIRS:  # a run directory this process made: everything in it is this run's
                    shutil.rmtree(folder, ignore_errors=True)
                else:  # a new parent: only while empty, another run may have come to live there
                    try:
                        folder.rmdir()
                    except OSError:
                        break
            raise
        except BaseException as exc:  # the final state of a failure, whatever it is, then the failure itself
            first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
            _end_heartbeats(beating, "failed", f"{type(exc).__name__}: {first_line}".rstrip(": "))
            raise
        finally:
            release_run_dirs(keep=before)
            del _CREATED[created:]
            del _SNAPSHOTS[guarded:]
        _end_heartbeats(beating, "finished")
        return result

    return wrapper


HEARTBEAT_S = 5.0  # a live run rewrites its heartbeat this often


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


_BEATING: Dict[str, Heartbeat] = {}  # resolved run directory -> this process's heartbeat for it


def start_heartbeat(run_dir: PathLike, command: str) -> Heartbeat:
    """Begin beating for ``run_dir`` (rank 0 of a search, train or evolve)."""
    heart = Heartbeat(run_dir, command)
    _BEATING[str(Path(run_dir).resolve())] = heart
    heart.start()
    return heart


def heartbeat(run_dir: PathLike) -> Optional[Heartbeat]:
    """This process's heartbeat for ``run_dir``, or ``None`` (not rank 0, or no command started it)."""
    return _BEATING.get(str(Path(run_dir).resolve()))


def _end_heartbeats(keep: AbstractSet[str], state: str, error: Optional[str] = None) -> None:
    """Write the final state of every heartbeat started since ``keep`` was taken, and stop them."""
    for key in [k for k in _BEATING if k not in keep]:
        _BEATING.pop(key).end(state, error)


def temporary_sibling(path: PathLike) -> Path:
    """A new, empty, private file beside ``path`` (``.NAME.tmp-XXXXXXXX``), created exclusively under a random
    name: in a shared folder nobody can plant a file or a link under the name a writer is about to open."""
    final = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a new temporary sibling of ``path`` (see :func:`temporary_sibling`); rename it onto ``path`` on
    success.  On any exception the temporary file is removed and ``path`` is untouched."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        publish(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temporaries(run_dir: PathLike) -> List[Path]:
    """Remove the temporary files a killed writer left in a run directory and its checkpoints (a SIGKILL gives it
    no chance to); call only while holding the run's lock, when no other writer can be midway. Returns them."""
    folder = Path(run_dir)
    stale = [p for d in (folder, RunDir(folder).checkpoints) if d.is_dir() for p in d.glob(".*.tmp-*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def publish(tmp: PathLike, final: PathLike) -> None:
    """Rename a finished temporary file onto ``final``, with the permissions an ordinary new file would have (or
    those of the file it replaces): :func:`temporary_sibling` made it private (0600)."""
    target = Path(final)
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    atomic_write_bytes(path, text.encode())


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class JsonlWriter:
    """Append-only JSON-lines file.

    Every record is flushed to the operating system at once, so it survives the death of the process.
    With ``group_commit`` the fsync that makes it survive a crash of the machine waits for
    :meth:`commit`, which a busy writer calls once for many records (an fsync costs milliseconds);
    otherwise every record is fsynced.
    """

    def __init__(self, path: PathLike, group_commit: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")
        self.group_commit = group_commit
        self.pending = 0  # records flushed but not yet fsynced

    def write(self, record: Dict[str, Any]) -> None:
        """Append one record as a single line."""
        self._fh.write(json.dumps(record, sort_keys=False) + "\n")
        self._fh.flush()
        self.pending += 1
        if not self.group_commit:
            self.commit()

    def commit(self) -> None:
        """Make every record written so far durable (one fsync; nothing to do when none is pending)."""
        if self.pending and not self._fh.closed:
            os.fsync(self._fh.fileno())
            self.pending = 0

    def close(self) -> None:
        """Commit and close the file (idempotent)."""
        if not self._fh.closed:
            self.commit()
            self._fh.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: PathLike) -> List[Dict[str, Any]]:
    """Every complete record of a JSON-lines file; a torn last line is skipped."""
    p = Path(path)
    return read_jsonl_text(p.read_text()) if p.exists() else []


def read_jsonl_text(text: str) -> List[Dict[str, Any]]:
    """The records of JSON-lines text; a line that is not JSON (a kill cut it off) is skipped."""
    records: List[Dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # only the last line can be torn by a kill; anything else is kept as is
            continue
    return records
