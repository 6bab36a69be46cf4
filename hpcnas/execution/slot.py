"""One rank's worker slot: a child process that trains, watched for crashes and timeouts (no torch).

The child is started with ``subprocess`` (fork + exec: never a bare fork
after MPI_Init), in its own session so a timeout kills its whole process
group, and with the MPI launcher's variables removed so it never joins the
MPI job.  It is reused across tasks and replaced after any failure.

A task with rungs reports after each of them (:meth:`WorkerSlot.poll` returns
that :class:`RungReport`, the task still running) and waits for :meth:`WorkerSlot.decide`.

:meth:`WorkerSlot.wait` blocks until the child writes a line (or a timeout), so
a rank learns of a result at once instead of at its next poll.
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
from typing import Any, Dict, Optional, Union

from hpcnas.records import Decision, DeviceInfo, Result, RungReport, Status, Task, decode, send

MPI_ENV_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "HYDRA_", "MPICH_", "I_MPI_", "OPAL_", "PRTE_")


def child_environment() -> Dict[str, str]:
    """This process's environment minus everything that would make a child join the MPI job."""
    return {k: v for k, v in os.environ.items() if not k.startswith(MPI_ENV_PREFIXES)}


def _start_up_message(line: str) -> Any:
    """A child's first line as a message, or ``None``: this runs in the reader thread, which must live on to see
    the child's end, so a line that is not a message goes to :meth:`WorkerSlot.poll` like any other."""
    try:
        return decode(json.loads(line))
    except ValueError:  # json's errors are ValueErrors too
        return None


class WorkerSlot:
    """Submit a task, poll for its result; crashes and timeouts become results too."""

    def __init__(self, setup: Dict[str, Any], log_path: Path, timeout: float):
        self.setup, self.log_path, self.timeout = setup, Path(log_path), timeout
        self.proc: Optional[subprocess.Popen] = None
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.task: Optional[Task] = None
        self.deadline = 0.0
        self.sent_at = 0.0
        self.memory: "queue.Queue[Optional[int]]" = queue.Queue()  # each child's device memory, as it starts
        self.arrived = threading.Event()  # set by the reader at every line and at the child's exit
        self.at_rung = False  # the running task reported a rung and waits for decide()

    @property
    def busy(self) -> bool:
        """Whether a task is running."""
        return self.task is not None

    @property
    def training(self) -> bool:
        """Whether a task is running and not waiting for a rung decision."""
        return self.task is not None and not self.at_rung

    def wait(self, timeout: float) -> bool:
        """Block until the child writes a line or exits, or ``timeout`` seconds pass (then call :meth:`poll`).

        Returns whether the child wrote or exited (``False``: the timeout).
        """
        arrived = self.arrived.wait(timeout)
        self.arrived.clear()  # a line that arrives after this sets it again; poll() takes the ones before
        return arrived

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
        reader = threading.Thread(
            target=self._read, args=(self.proc, self.lines, self.memory, self.arrived), daemon=True
        )
        reader.start()

    @staticmethod
    def _read(
        proc: subprocess.Popen,
        lines: "queue.Queue[Optional[str]]",
        memory: "queue.Queue[Optional[int]]",
        arrived: threading.Event,
    ) -> None:
        assert proc.stdout is not None  # started with stdout=PIPE
        first = True
        for line in proc.stdout:
            said = _start_up_message(line) if first else None
            if isinstance(said, DeviceInfo):
                memory.put(said.memory)
            else:
                lines.put(line)
                arrived.set()
            first = False
        if first:
            memory.put(None)  # died before saying
        lines.put(None)  # end of stream: the child exited
        arrived.set()

    def device_memory(self, timeout: float = 300.0) -> Optional[int]:
        """The bytes of memory the prestarted child's device has, as it reported at start-up (``None`` when it
        died first or said nothing within ``timeout`` seconds)."""
        try:
            return self.memory.get(timeout=timeout)
        except queue.Empty:
            return None

    def submit(self, task: Task) -> None:
        """Send a task to the child (starting one if needed)."""
        self.prestart()
        self.task = task
        self.sent_at = time.time()
        self.deadline = self.sent_at + self.timeout
        assert self.proc is not None and self.proc.stdin is not None  # prestart() started it with stdin=PIPE
        send(self.proc.stdin, task)

    def poll(self) -> Optional[Union[Result, RungReport]]:
        """The running task's result if it is over (ok, oom, crashed or timeout), its rung report if it reached
        one, else ``None``."""
        if self.task is None:
            return None
        try:
            line = self.lines.get_nowait()
        except queue.Empty:
            line = ""
        if line:
            message = decode(json.loads(line))
            if isinstance(message, RungReport):  # the task goes on (or not) when decide() says
                self.at_rung = True
                return message
            assert isinstance(message, Result), message
            if message.status not in (Status.OK, Status.STOPPED):
                self._reap(grace=5.0)
            return self._finish(message)
        if line is None or self._child().poll() is not None:
            code = self._reap(grace=1.0)
            cause = (
                f"killed by signal {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exited with code {code}"
            )
            return self._finish(Result(self.task.id, Status.CRASHED, error=f"worker {cause}", end=time.time()))
        if time.time() > self.deadline:
            self.kill()
            error = f"no result after {self.timeout:g} s: process group killed"
            return self._finish(Result(self.task.id, Status.TIMEOUT, error=error, end=time.time()))
        return None

    def decide(self, go_on: bool) -> None:
        """Answer the running task's rung report: train on, or stop and report."""
        assert self.proc is not None and self.proc.stdin is not None
        self.at_rung = False
        try:
            send(self.proc.stdin, Decision(go_on))
        except (BrokenPipeError, OSError):
            pass  # the child died meanwhile: poll() reports it

    def _finish(self, result: Result) -> Result:
        task, self.task, self.at_rung = self.task, None, False
        assert task is not None  # only a running task finishes
        if result.start is None:
            result.start = self.sent_at
        result.id = task.id
        return result

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
