"""One broker per data directory: an exclusive lock on `<data dir>/.lock`, as Kafka's log dirs have.

Two brokers appending to the same partition files would interleave batches and corrupt both
logs, and nothing else would notice until a CRC failed.
"""

from __future__ import annotations

import os

from distlog.file_lock import FileLock

LOCK_FILE = ".lock"


class DataDirInUseError(RuntimeError):
    """Another broker (or another Broker in this process) holds the data directory."""


def lock_data_dir(data_dir: str) -> FileLock:
    """The data dir's lock, held; DataDirInUseError naming the holder if another has it."""
    lock = FileLock(os.path.join(data_dir, LOCK_FILE))
    if not lock.acquire():
        raise DataDirInUseError(
            f"data dir {data_dir} is in use by another broker (pid {lock.holder()}); "
            "stop that broker first, or give this one its own --data-dir"
        )
    return lock
