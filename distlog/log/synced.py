"""The synced-size record: how many bytes of each segment file an fsync made durable, for power-loss tests.

A SIGKILL keeps the page cache, so a killed broker's files hold everything it wrote, fsynced or
not, and a crash test cannot tell a broker that fsyncs before it acknowledges from one that
never does. To model a power loss, a broker started with DISTLOG_RECORD_SYNCED=1 writes, after
every fsync of a segment's .log, the file's size at that fsync into a sidecar beside it
(`00000000000000000000.log.synced`: 8 bytes, little-endian u64, rewritten in place with one
pwrite). The sidecar itself is never fsynced: it only has to survive the SIGKILL that precedes
the simulated power cut, and the page cache sees to that. distlog.chaos.disk_faults.cut_power
then truncates every .log of the stopped broker to its recorded size, which is exactly what the
disk would hold had the power gone at the moment of the kill (docs/POWER_LOSS.md).

The record is written after the fsync returns and before the caller goes on (to acknowledge),
so it never claims more than was durable; a kill between the two makes it claim less, which
loses only bytes nothing had acknowledged yet.

Off by default: a production broker opens no sidecar and pays nothing (one attribute test per
fsync). The environment variable is read when a segment object is made, so a test can switch
it with monkeypatch before it opens a log.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import weakref
from typing import Optional

RECORD_SYNCED_ENV = "DISTLOG_RECORD_SYNCED"
SIDECAR_SUFFIX = ".synced"
# What PartitionLog.open accepts beside the segments (a sidecar is not a foreign file).
SIDECAR_NAME = re.compile(r"^\d{20}\.log\.synced$")
_SIZE = struct.Struct("<Q")


def recording_enabled() -> bool:
    """Whether this process records synced sizes (DISTLOG_RECORD_SYNCED=1)."""
    return os.environ.get(RECORD_SYNCED_ENV) == "1"


def sidecar_path(log_path: str) -> str:
    return log_path + SIDECAR_SUFFIX


def recorded_synced_size(log_path: str) -> Optional[int]:
    """The size the last recorded fsync of log_path made durable; None if none was recorded
    (the file was never fsynced while recording was on)."""
    try:
        with open(sidecar_path(log_path), "rb") as f:
            data = f.read(_SIZE.size)
    except FileNotFoundError:
        return None
    if len(data) != _SIZE.size:
        return None  # killed before its first pwrite completed: nothing recorded
    return _SIZE.unpack(data)[0]


class SyncedRecorder:
    """Records one segment file's synced size in its sidecar; the fd stays open so a record
    is a single pwrite (closed with the recorder, or when it is garbage collected)."""

    def __init__(self, log_path: str):
        self.path = sidecar_path(log_path)
        self._fd = -1
        self._close = None

    def record(self, synced_bytes: int) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o644)
            self._close = weakref.finalize(self, os.close, self._fd)
        os.pwrite(self._fd, _SIZE.pack(synced_bytes), 0)

    def forget(self) -> None:
        """Remove the record: the file it described is gone or starts over empty."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self) -> None:
        if self._close is not None:
            self._close()
        self._fd, self._close = -1, None
