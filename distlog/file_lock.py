"""An exclusive lock on one file (flock(2)), held by one process at a time.

The kernel drops it when the holder's process exits, however it exits, so a crashed or
SIGKILLed holder never leaves a stale lock behind. The holder writes its pid into the file,
only so that whoever is refused can say who holds it: the flock, not the content, is the lock.
Used for a broker's data dir and for a supervisor's cluster dir.
"""

from __future__ import annotations

import fcntl
import os


class FileLock:
    """Held from a successful acquire() until release() (or the process exits)."""

    def __init__(self, path):
        self.path = str(path)
        self._fd = None

    def acquire(self) -> bool:
        """Take the lock; False if another holder has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid the current holder wrote, or "unknown"."""
        try:
            with open(self.path, "rb") as file:
                return file.read(32).decode(errors="replace").strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
