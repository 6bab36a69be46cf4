"""The run directory contract: where every command leaves its files.

Small, dependency-free helpers shared by all layers: the files of a run
directory by name, JSON lines flushed one by one (a killed run leaves every
finished line readable), and files written atomically (a failure never leaves a
half-written file in place of a good one).  Who may write a run directory, and
its heartbeat, are :mod:`hpcnas.run`'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Union

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

    def heartbeat_record(self) -> Dict[str, Any]:
        """The heartbeat's last record (the command, state, progress, ...); ``{}`` when there is none (a run from
        before heartbeats) or it is not a readable JSON object."""
        try:
            record = json.loads(self.heartbeat.read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def holds_a_run(self) -> bool:
        """Whether any command has left its results here."""
        return any(p.exists() for p in (self.metrics, self.evaluation, self.history, self.genotype))


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
