"""The discrete search's records: dispatch.jsonl (what was sent) and history.jsonl (what finished).

Both files are appended one flushed line at a time and carry a common
sequence number, so replaying them in ``seq`` order rebuilds the strategy
exactly (asks and tells in their original order), and the tasks dispatched
but never finished are the ones in flight when the search was killed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from hpcnas.rundir import JsonlWriter, read_jsonl

HISTORY = "history.jsonl"
DISPATCH = "dispatch.jsonl"


class SearchLog:
    """Appends dispatches and results with a shared sequence number."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.dispatched: List[Dict[str, Any]] = read_jsonl(self.run_dir / DISPATCH)
        self.finished: List[Dict[str, Any]] = read_jsonl(self.run_dir / HISTORY)
        self.seq = max([r.get("seq", -1) for r in self.dispatched + self.finished], default=-1) + 1
        self.next_id = max([r["id"] for r in self.dispatched], default=-1) + 1
        self._dispatch = JsonlWriter(self.run_dir / DISPATCH)
        self._history = JsonlWriter(self.run_dir / HISTORY)

    def events(self) -> List[Dict[str, Any]]:
        """Every logged event in order, each tagged ``kind`` = ``ask`` or ``tell``."""
        asks = [dict(r, kind="ask") for r in self.dispatched if r.get("origin") == "strategy"]
        tells = [dict(r, kind="tell") for r in self.finished]
        return sorted(asks + tells, key=lambda r: r["seq"])

    def in_flight(self) -> List[Dict[str, Any]]:
        """The last dispatch of every task that has no result (to re-queue on resume)."""
        done = {r["id"] for r in self.finished}
        last: Dict[int, Dict[str, Any]] = {}
        for r in self.dispatched:
            if r["id"] not in done:
                last[r["id"]] = r
        return [last[k] for k in sorted(last)]

    def new_id(self) -> int:
        """A fresh evaluation id."""
        self.next_id += 1
        return self.next_id - 1

    def _stamp(self, record: Dict[str, Any]) -> Dict[str, Any]:
        record = dict(record, seq=self.seq)
        self.seq += 1
        return record

    def log_dispatch(self, record: Dict[str, Any]) -> None:
        """A task sent to a rank."""
        record = self._stamp(record)
        self.dispatched.append(record)
        self._dispatch.write(record)

    def log_result(self, record: Dict[str, Any]) -> None:
        """A finished evaluation (any status)."""
        record = self._stamp(record)
        self.finished.append(record)
        self._history.write(record)

    def close(self) -> None:
        """Close both files."""
        self._dispatch.close()
        self._history.close()
