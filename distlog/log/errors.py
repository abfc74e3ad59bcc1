"""The storage engine's exceptions: each one says what went wrong and what is valid instead."""

from __future__ import annotations

import errno

from distlog.log.batch import CorruptBatchError


class LogError(Exception):
    """Base class of every storage engine error (CorruptBatchError lives in batch.py)."""


class CorruptDataError(LogError, CorruptBatchError):
    """Stored bytes that fail their checks when read: the log serves none of them.

    `offset` is the first offset the damage may cover (the batch that failed, or the one that
    should have started there), `position` its byte in `path`. The broker answers the read
    with CORRUPT_MESSAGE and repairs the replica from the others (recovery.py)."""

    def __init__(self, path: str, position: int, offset: int, why: str):
        self.path = path
        self.position = position
        self.offset = offset
        super().__init__(
            f"{path}: the batch at byte {position} (offset {offset}) is damaged: {why}; nothing from there "
            f"on is served until the replica is repaired from another copy"
        )


class OffsetOutOfRangeError(LogError, IndexError):
    """An offset outside [log_start_offset, log_end_offset] was asked for."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int):
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset
        super().__init__(
            f"offset {offset} is out of range: this log holds offsets {log_start_offset} to "
            f"{log_end_offset - 1} and the next offset written will be {log_end_offset} "
            f"(valid read positions are {log_start_offset}..{log_end_offset})"
        )


class RecordTooLargeError(LogError, ValueError):
    """A batch larger than max.message.bytes."""

    def __init__(self, batch_bytes: int, max_message_bytes: int):
        self.batch_bytes = batch_bytes
        self.max_message_bytes = max_message_bytes
        super().__init__(
            f"batch of {batch_bytes} bytes exceeds max.message.bytes={max_message_bytes} "
            f"(send smaller batches or raise max.message.bytes for this topic)"
        )


class NotAPartitionLogError(LogError):
    """A directory that holds files a partition log never writes."""

    def __init__(self, directory: str, foreign_names: list[str]):
        self.directory = directory
        self.foreign_names = foreign_names
        shown = ", ".join(sorted(foreign_names)[:5])
        super().__init__(
            f"{directory} is not a partition log directory: it holds {len(foreign_names)} file(s) "
            f"a partition log never writes ({shown}); point the log at an empty or partition directory"
        )


class CorruptSegmentNameError(LogError):
    """A segment or index file whose name is not a 20-digit base offset."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(
            f"segment file {path} does not have a 20-digit base offset name such as "
            f"00000000000000000000.log; rename or remove it"
        )


# What to do about a failed storage operation, by errno; anything else gets the default.
_STORAGE_ADVICE = {
    errno.ENOSPC: "free disk space on that file system (delete old topics or lower retention), then retry",
    errno.EDQUOT: "free space within the disk quota (or raise the quota), then retry",
    errno.EACCES: "check that the broker's user may write there (permissions, ownership), then retry",
    errno.EPERM: "check that the broker's user may write there (permissions, ownership), then retry",
    errno.EROFS: "the file system is mounted read-only: remount it read-write, then restart the broker",
    errno.EIO: "the disk is failing: check its health (dmesg, SMART), then restart the broker to recover from it",
    errno.EMFILE: "the process is out of file descriptors: raise its limit (ulimit -n)",
    errno.ENFILE: "the system is out of file descriptors: raise fs.file-max or close other files",
}
_DEFAULT_STORAGE_ADVICE = "check the disk and the path, then retry"


class StorageError(LogError, OSError):
    """An operation of the storage engine failed in the file system (a full disk, no
    permission, a read-only mount, a failing disk).

    An OSError with the cause's errno, so callers that handle OSError keep working; the
    message names the operation, the path and what to do."""

    def __init__(self, operation: str, path: str, cause: OSError):
        self.operation = operation
        self.path = path
        self.cause = cause
        advice = _STORAGE_ADVICE.get(cause.errno, _DEFAULT_STORAGE_ADVICE)
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"{operation} failed in {path}: {reason}; {advice}")


class ReadOnlyLogError(StorageError):
    """A write to a log opened read-only (its directory or files could not be written)."""

    def __init__(self, operation: str, directory: str, cause: OSError):
        OSError.__init__(
            self, cause.errno,
            f"{operation} refused: partition log {directory} is open read-only because it cannot be "
            f"written ({cause.strerror or cause}); make it writable (permissions, a read-write mount), "
            f"then reopen it",
        )
        self.operation = operation
        self.path = directory
        self.cause = cause


class LogFlushFailedError(StorageError):
    """A flush after an earlier fsync failure: what is durable is unknown until a reopen.

    An OSError (EIO), so callers that handle a failed flush handle this one the same way."""

    def __init__(self, directory: str, cause: OSError):
        self.directory = directory
        OSError.__init__(
            self,
            errno.EIO,
            f"an earlier fsync in partition log {directory} failed ({cause}); writes since the last "
            f"successful flush may be lost, so no flush can succeed: close and reopen the log to "
            f"recover from what is on disk",
        )
        self.operation = "flush"
        self.path = directory
        self.cause = cause
