"""Sparse segment indexes: .index (relative offset -> file position) and .timeindex
(max timestamp so far -> relative offset), kept in memory for bisect and persisted as
fixed-size little-endian entries.

Both are hints, never the truth: the .log file is. A missing, stale or damaged index is
rebuilt from the log by the segment (see segment.py), and a lookup only ever gives a place
to start scanning batch headers from.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)


class IndexCorruptError(ValueError):
    """An index file whose entries cannot be right; the segment rebuilds it."""


class _SparseIndex:
    """Two parallel sorted columns (key, value) plus the file they persist to."""

    ENTRY_DTYPE: np.dtype

    def __init__(self, path: str, keys: list[int] | None = None, values: list[int] | None = None):
        self.path = path
        self.keys = keys if keys is not None else []
        self.values = values if values is not None else []
        self._persisted_count = len(self.keys)

    @classmethod
    def load(cls, path: str) -> _SparseIndex:
        """Read the file; IndexCorruptError if it is missing, ragged or out of order."""
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            raise IndexCorruptError(f"{path} is missing") from None
        if len(data) % cls.ENTRY_DTYPE.itemsize:
            raise IndexCorruptError(f"{path} is {len(data)} bytes, not a whole number of entries")
        entries = np.frombuffer(data, dtype=cls.ENTRY_DTYPE)
        keys = entries["key"].astype(np.int64)
        values = entries["value"].astype(np.int64)
        if len(keys) > 1 and not (bool(np.all(np.diff(keys) > 0)) and bool(np.all(np.diff(values) >= 0))):
            raise IndexCorruptError(f"{path} has entries out of order")
        return cls(path, keys.tolist(), values.tolist())

    def __len__(self) -> int:
        return len(self.keys)

    def append(self, key: int, value: int) -> None:
        # value first: a lock-free reader that finds keys[i] must also find values[i]
        self.values.append(value)
        self.keys.append(key)

    def floor(self, key: int) -> int | None:
        """Index of the last entry whose key is <= key, or None."""
        i = bisect.bisect_right(self.keys, key) - 1
        return i if i >= 0 else None

    def lower(self, key: int) -> int | None:
        """Index of the last entry whose key is < key, or None."""
        i = bisect.bisect_left(self.keys, key) - 1
        return i if i >= 0 else None

    def truncate_entries(self, count: int) -> None:
        """Keep the first count entries, in memory and on disk (or none on disk, if
        rewriting the file fails: a missing index is rebuilt, a stale one could mislead)."""
        del self.keys[count:]
        del self.values[count:]
        if self._persisted_count > count:
            self.rewrite_or_remove()

    def rewrite_or_remove(self) -> None:
        """rewrite(), or if that fails (a full disk) remove the file, which open rebuilds:
        callers have already changed the .log, and failing them over a hint would leave the
        segment's offsets disagreeing with its bytes, or a broker unable to reopen a log."""
        try:
            self.rewrite()
        except OSError as error:
            logger.warning("removing %s instead of rewriting it: %s", self.path, error)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._persisted_count = 0

    def persisted_mark(self) -> tuple[int, bool]:
        """(entries in the file, whether it exists): what cut_back_to returns the file to."""
        return self._persisted_count, os.path.exists(self.path)

    def cut_back_to(self, mark: tuple[int, bool]) -> None:
        """Return the file to what it held when mark was taken, undoing persist() (which only
        ever appends): cut it back, or remove it if it did not exist. A shrink needs no disk
        space, so this works on the full disk that failed whatever is being undone."""
        count, existed = mark
        if existed:
            os.truncate(self.path, count * self.ENTRY_DTYPE.itemsize)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._persisted_count = count

    def _encode(self, start: int) -> bytes:
        entries = np.empty(len(self.keys) - start, dtype=self.ENTRY_DTYPE)
        entries["key"] = self.keys[start:]
        entries["value"] = self.values[start:]
        return entries.tobytes()

    def persist(self) -> None:
        """Append the entries not yet on disk, durably."""
        if self._persisted_count == len(self.keys) and os.path.exists(self.path):
            return
        with open(self.path, "ab") as file:
            file.write(self._encode(self._persisted_count))
            _sync(file)
        self._persisted_count = len(self.keys)

    def rewrite(self) -> None:
        """Replace the file with the in-memory entries (atomically and durably, via a temp
        file: a rename of unsynced data can leave a short file after a power loss)."""
        temp_path = self.path + ".tmp"
        try:
            with open(temp_path, "wb") as file:
                file.write(self._encode(0))
                _sync(file)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_path)
            raise
        os.replace(temp_path, self.path)
        self._persisted_count = len(self.keys)


def _sync(file) -> None:
    # A closed segment's indexes are trusted on open. One that lost its tail while its .log
    # kept everything would still pass the checks there, and understate the segment's max
    # timestamp (so retention would delete it early).
    file.flush()
    os.fsync(file.fileno())


class OffsetIndex(_SparseIndex):
    """keys: offsets relative to the segment base; values: byte positions of batch starts."""

    ENTRY_DTYPE = np.dtype([("key", "<u4"), ("value", "<u4")])

    def position_floor(self, position: int) -> int | None:
        """Index of the last entry whose position is <= position, or None."""
        i = bisect.bisect_right(self.values, position) - 1
        return i if i >= 0 else None


class TimeIndex(_SparseIndex):
    """keys: the segment's max timestamp so far (strictly rising); values: relative offset of
    the batch that reached it. An entry (t, o) promises every record before batch o's end has
    a timestamp <= t."""

    ENTRY_DTYPE = np.dtype([("key", "<i8"), ("value", "<u4")])
