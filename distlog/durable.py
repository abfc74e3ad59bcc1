"""Durable file-system steps: what must be fsynced for a file or directory to survive a power loss.

A rename or a new directory entry is only durable once the directory holding it is fsynced;
a file's bytes only once the file is. Every module that persists something calls these instead
of repeating the dance.
"""

from __future__ import annotations

import contextlib
import os


def fsync_directory(directory) -> None:
    """Make the entries of `directory` (files created, renamed or removed in it) durable."""
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def make_directory_durably(directory) -> None:
    """Create `directory` and its missing parents, fsyncing each parent that gained an entry:
    otherwise a power loss can take the new directory, and everything written in it, away."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    for created in reversed(missing):
        fsync_directory(os.path.dirname(created))


def write_file_atomically(path, data: bytes) -> None:
    """Replace `path` with `data`: a crash leaves the old file or the new one, never half of one,
    and once this returns the new one survives a power loss."""
    path = os.fspath(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        # A half-written temporary file (a full disk) would keep the disk full until someone
        # found it; the old file is still whole.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))
