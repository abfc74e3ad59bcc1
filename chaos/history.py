"""The history of a chaos run: every operation and fault, as JSON lines, in the order they happened.

Producer threads, the sender thread's delivery callbacks, consumer threads and the nemesis all
append here, so appends take a lock. Times are seconds since the run started on the monotonic
clock. The records are also kept in memory for the checker (a minute's run is a few hundred
thousand small dicts). The format is in docs/CHAOS.md.
"""

from __future__ import annotations

import json
import threading
import time


class History:
    """An append-only JSONL file plus the same records in memory."""

    def __init__(self, path: str):
        self.path = path
        self.records: list = []
        self.counts: dict = {}  # (type, f) -> how many, for the live progress line
        self._file = open(path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self._started_s = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._started_s

    def add(self, record_type: str, **fields) -> dict:
        """Append one record of `record_type` stamped with the current run time; returns it."""
        with self._lock:
            record = {"type": record_type, **fields, "t": round(self.now(), 6)}
            self.records.append(record)
            key = (record_type, fields.get("f"))
            self.counts[key] = self.counts.get(key, 0) + 1
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        return record

    def close(self) -> None:
        with self._lock:
            self._file.close()
