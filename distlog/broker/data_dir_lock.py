"""One broker per data directory: an exclusive lock on `<data dir>/.lock`, as Kafka's log dirs have.

Two brokers appending to the same partition files would interleave batches and corrupt both
logs, and nothing else would notice until a CRC failed. The lock is an flock(2) on an open
file, so the kernel drops it when the process dies however it dies: a crashed broker never
leaves a stale lock behind for its restart to trip over.
"""

from __future__ import annotations

import fcntl
import os

LOCK_FILE = ".lock"


class DataDirInUseError(RuntimeError):
    """Another broker (or another Broker in this process) holds the data directory."""


class DataDirLock:
    """Held from acquire() until release() (or the process exits)."""

    def __init__(self, data_dir: str):
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._fd = None

    def acquire(self) -> "DataDirLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"data dir {os.path.dirname(self.path)} is in use by another broker (pid {holder}); "
                "stop that broker first, or give this one its own --data-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is only for that message: the flock, not the file's content, is the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
