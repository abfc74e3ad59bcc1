"""The Raft hard state of every partition on one broker, in one file, made durable once per loop turn.

A partition's hard state (term, vote, commit, and the log start's term) must be durable before
the votes and acknowledgements that depend on it leave. Kept in one small file per partition,
that is an fsync of the file and one of its directory per partition that changed: when a
thousand groups elect at once (a broker restart, a new topic of many partitions) a loop turn
spent seconds in fsyncs, heartbeats stopped meanwhile, and elections fed on themselves. Here
every PartitionStorage of a broker puts its state into one map, and the replica manager
rewrites the file (write, fsync, rename, fsync the directory) once per round of Ready handling,
after the log syncs and before any message that depends on it — the same group commit as the
logs get.

The file is JSON: {"<topic>-<partition>": {"term", "vote", "commit", "start_offset",
"start_term", "pending_start", "base_membership", "memberships"}, ...} (the last two:
partition_storage.py's membership record). A partition with no entry starts empty (or from the
per-partition file an older version kept beside its directory).
"""

from __future__ import annotations

import json
import os
from typing import Optional

from distlog.durable import write_file_atomically


class HardStateStore:
    """name -> state dict, loaded from `path`; flush() makes every put() so far durable."""

    def __init__(self, path: str):
        self.path = path
        self._states: dict = {}
        self._dirty = False
        if os.path.exists(path):
            with open(path, "rb") as f:
                self._states = json.load(f)

    def get(self, name: str) -> Optional[dict]:
        state = self._states.get(name)
        return dict(state) if state is not None else None

    def put(self, name: str, state: dict) -> None:
        self._states[name] = dict(state)
        self._dirty = True

    def remove(self, name: str) -> None:
        if self._states.pop(name, None) is not None:
            self._dirty = True

    def names(self) -> list:
        return list(self._states)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def flush(self) -> None:
        """Write the file if anything changed since the last flush; durable on return."""
        if not self._dirty:
            return
        write_file_atomically(self.path, json.dumps(self._states, separators=(",", ":")).encode())
        self._dirty = False
