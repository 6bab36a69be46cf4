"""One rank's worker slot: a child process that trains, watched for crashes and timeouts (no torch).

The child is started with ``subprocess`` (fork + exec: never a bare fork
after MPI_Init), in its own session so a timeout kills its whole process
group, and with the MPI launcher's variables removed so it never joins the
MPI job.  It is reused across tasks and replaced after any failure.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

MPI_ENV_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "HYDRA_", "MPICH_", "I_MPI_", "OPAL_", "PRTE_")


def child_environment() -> Dict[str, str]:
    """This process's environment minus everything that would make a child join the MPI job."""
    return {k: v for k, v in os.environ.items() if not k.startswith(MPI_ENV_PREFIXES)}


class WorkerSlot:
    """Submit a task, poll for its result record; crashes and timeouts become records too."""

    def __init__(self, setup: Dict[str, Any], log_path: Path, timeout: float):
        self.setup, self.log_path, self.timeout = setup, Path(log_path), timeout
        self.proc: Optional[subprocess.Popen] = None
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.task: Optional[Dict[str, Any]] = None
        self.deadline = 0.0
        self.sent_at = 0.0

    @property
    def busy(self) -> bool:
        """Whether a task is running."""
        return self.task is not None

    def prestart(self) -> None:
        """Start the child now, so the first task does not pay for its interpreter and imports."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpcnas.execution.worker", json.dumps(self.setup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            env=child_environment(),
            start_new_session=True,
        )
        log.close()
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen, lines: "queue.Queue[Optional[str]]") -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)  # end of stream: the child exited

    def submit(self, task: Dict[str, Any]) -> None:
        """Send a task to the child (starting one if needed)."""
        self.prestart()
        self.task = task
        self.sent_at = time.time()
        self.deadline = self.sent_at + self.timeout
        assert self.proc is not None and self.proc.stdin is not None  # prestart() started it with stdin=PIPE
        self.proc.stdin.write(json.dumps(task) + "\n")
        self.proc.stdin.flush()

    def poll(self) -> Optional[Dict[str, Any]]:
        """The running task's result if it is over (ok, oom, crashed or timeout), else ``None``."""
        if self.task is None:
            return None
        try:
            line = self.lines.get_nowait()
        except queue.Empty:
            line = ""
        if line:
            record = json.loads(line)
            if record["status"] != "ok":
                self._reap(grace=5.0)
            return self._finish(record)
        if line is None or self._child().poll() is not None:
            code = self._reap(grace=1.0)
            cause = (
                f"killed by signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exited with code {code}"
            )
            return self._finish({"status": "crashed", "error": f"worker {cause}", "end": time.time()})
        if time.time() > self.deadline:
            self.kill()
            return self._finish(
                {
                    "status": "timeout",
                    "error": f"no result after {self.timeout:g} s: process group killed",
                    "end": time.time(),
                }
            )
        return None

    def _finish(self, record: Dict[str, Any]) -> Dict[str, Any]:
        task, self.task = self.task, None
        assert task is not None  # only a running task finishes
        record.setdefault("start", self.sent_at)
        record["id"] = task["id"]
        return record

    def _child(self) -> subprocess.Popen:
        assert self.proc is not None, "no child started"  # a task runs only in a started child
        return self.proc

    def _reap(self, grace: float) -> Optional[int]:
        try:
            return self._child().wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._child().returncode

    def kill(self) -> None:
        """SIGKILL the child's whole process group (DataLoader workers included)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def close(self) -> None:
        """Stop the child: end of input, then a kill if it does not exit promptly."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.kill()
        self.task = None
