"""PartitionLog: one partition's ordered segments — append, read, roll, flush, recovery,
truncation, retention and compaction.

Storage failures (a full disk, no permission, a failing disk) raise StorageError, an OSError
naming the operation, the directory and what to do; a failed append leaves the log as it was.
A log whose directory or files cannot be written opens read-only: reads work, and every
mutation raises ReadOnlyLogError.

Threads: mutations (append, truncate, retention, compaction, flush) take one lock; read()
takes none — it works on a snapshot of the segment list, and segments are only ever
replaced, never changed under a reader (see segment.py), so a read in flight stays valid.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import operator
import os
import re
import shutil
import threading
import time
from typing import Callable

from distlog.durable import fsync_directory, make_directory_durably
from distlog.log.batch import BatchHeader, CorruptBatchError, RecordBatch, peek_header, stamp_batch
from distlog.log.compaction import CompactionStats, compact_segments
from distlog.log.config import LogConfig
from distlog.log.errors import (
    CorruptDataError,
    CorruptSegmentNameError,
    LogFlushFailedError,
    NotAPartitionLogError,
    OffsetOutOfRangeError,
    ReadOnlyLogError,
    RecordTooLargeError,
    StorageError,
)
from distlog.log.recovery import (
    QUARANTINE_DIR,
    Damage,
    merged,
    quarantine,
    readable_segments,
    recorded_damage,
    trusted_segments,
    unrepaired_damage,
)
from distlog.log.retention import expired_segment_count
from distlog.log.segment import Segment
from distlog.log.synced import SIDECAR_NAME

logger = logging.getLogger(__name__)

_SEGMENT_SUFFIXES = (".log", ".index", ".timeindex")
_SEGMENT_NAME = re.compile(r"^(\d{20})$")
# Left behind by a crash during a swap or an index rewrite; the real files are still whole.
_LEFTOVER_NAME = re.compile(r"^\d{20}\.(log|index|timeindex)\.(tmp|cleaned)$")
# An open that fails with one of these opens the log read-only instead.
_READ_ONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def _storage_errors(operation: str, directory: str):
    """Raise an OSError of the file system as a StorageError that says what to do."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        raise StorageError(operation, directory, error) from error


def _run_data(view: memoryview, run: list[tuple[int, BatchHeader]]) -> tuple[memoryview, list]:
    """The bytes of a run of consecutive batches, and (position within them, header) of each."""
    start = run[0][0]
    end = run[-1][0] + run[-1][1].batch_length
    return view[start:end], [(position - start, header) for position, header in run]


def _classify(directory: str, read_only: bool = False) -> list[int]:
    """Base offsets of the segments in directory. Raises, having changed nothing, on files a
    partition log never writes or segment files whose names do not parse; then removes crash
    leftovers and indexes whose .log is gone."""
    base_offsets = set()
    foreign, leftovers, index_files, sidecars = [], [], [], []
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        stem, suffix = os.path.splitext(name)
        if name == QUARANTINE_DIR and os.path.isdir(path):
            continue  # damaged files kept for inspection (recovery.py)
        if _LEFTOVER_NAME.match(name) and os.path.isfile(path):
            leftovers.append(path)
        elif SIDECAR_NAME.match(name) and os.path.isfile(path):
            sidecars.append(path)  # a power-loss test's synced-size record (synced.py)
        elif suffix not in _SEGMENT_SUFFIXES or not os.path.isfile(path):
            foreign.append(name)
        elif not _SEGMENT_NAME.match(stem):
            raise CorruptSegmentNameError(path)
        elif suffix == ".log":
            base_offsets.add(int(stem))
        else:
            index_files.append((int(stem), path))
    if foreign:
        raise NotAPartitionLogError(directory, foreign)
    if read_only:  # the leftovers are ignored all the same
        return sorted(base_offsets)
    for path in leftovers:
        os.unlink(path)
    for base_offset, path in index_files:
        if base_offset not in base_offsets:
            os.unlink(path)  # an index without its log is useless
    for path in sidecars:
        if int(os.path.basename(path)[:20]) not in base_offsets:
            os.unlink(path)  # its log went (into quarantine): a new file of that name starts unrecorded
    return sorted(base_offsets)


class PartitionLog:
    """An append-only log of record batches in a directory of segments."""

    def __init__(self, directory: str, config: LogConfig, clock_ms: Callable[[], int], segments: list[Segment]):
        self.directory = directory
        self.config = config
        self._clock_ms = clock_ms
        self._set_segments(segments)
        self._lock = threading.RLock()
        self._dirty_segments: list[Segment] = []
        self._directory_dirty = False
        self._last_flush_ms = clock_ms()
        self._compaction_done_until: tuple[int, float] | None = None
        self._closed = False
        self._flush_error: OSError | None = None
        # Offsets this log held once and lost to damage, until it holds them again (recovery.py).
        self.damage: Damage | None = None
        self._scrub_at: tuple = (None, 0, 0)  # (segment, position, offset) where scrub() goes on
        self._read_only_cause: OSError | None = None  # why the log could not be opened for writing

    @classmethod
    def open(cls, directory: str, config: LogConfig = LogConfig(), clock_ms: Callable[[], int] = _wall_clock_ms) -> PartitionLog:
        """Open (creating if missing) the log in directory, recovering the last segment.

        A log that cannot be written (a read-only mount, files without write permission)
        opens read-only: reads work, mutations raise ReadOnlyLogError, and recovery changes
        nothing on disk (it serves the sound prefix and keeps rebuilt indexes in memory)."""
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise NotADirectoryError(f"{directory} is a file, not a partition log directory")
        try:
            with _storage_errors("opening the log", directory):
                return cls._open(directory, config, clock_ms, read_only=False)
        except StorageError as error:
            if error.errno not in _READ_ONLY_ERRNOS or not os.path.isdir(directory):
                raise
            logger.warning("opening %s read-only: %s", directory, error)
            with _storage_errors("opening the log read-only", directory):
                log = cls._open(directory, config, clock_ms, read_only=True)
            log._read_only_cause = error.cause
            return log

    @classmethod
    def _open(cls, directory: str, config: LogConfig, clock_ms: Callable[[], int], read_only: bool) -> PartitionLog:
        if not read_only:
            make_directory_durably(directory)
        base_offsets = _classify(directory, read_only)
        interval = config.index_interval_bytes
        if not base_offsets and read_only:
            segments = [Segment(directory, 0, interval)]  # no file, nothing to read
        elif not base_offsets:
            segments = [Segment.create(directory, 0, interval)]
            fsync_directory(directory)  # the first segment's entry, before any ack needs it
        else:
            segments = [Segment.open(directory, base, interval, False, read_only) for base in base_offsets[:-1]]
            segments.append(Segment.open(directory, base_offsets[-1], interval, True, read_only))
            segments = (readable_segments if read_only else trusted_segments)(directory, segments)
        log = cls(directory, config, clock_ms, segments)
        log.damage = (merged([d for d in recorded_damage(directory) if d.held_until > log.log_end_offset]) if read_only
                      else unrepaired_damage(directory, log.log_end_offset))
        if segments[-1].size_bytes:
            segments[-1].first_append_ms = clock_ms()
        return log

    # -- state -------------------------------------------------------------------------

    def _set_segments(self, segments: list[Segment]) -> None:
        # One attribute, so a lock-free reader always gets segments and offsets that match.
        self._snapshot = (segments, [segment.base_offset for segment in segments])

    @property
    def _segments(self) -> list[Segment]:
        return self._snapshot[0]

    @property
    def segments(self) -> list[Segment]:
        """The segments, oldest first; the last one is active."""
        return list(self._segments)

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record gets."""
        return self._segments[-1].next_offset

    @property
    def last_term(self) -> int:
        """leader_term of the last batch, 0 if the log is empty."""
        for segment in reversed(self._segments):
            if segment.size_bytes:
                return segment.last_term
        return 0

    @property
    def size_bytes(self) -> int:
        return sum(segment.size_bytes for segment in self._segments)

    @property
    def read_only(self) -> bool:
        """Whether the log was opened read-only (see open)."""
        return self._read_only_cause is not None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"partition log {self.directory} is closed")

    def _check_writable(self, operation: str) -> None:
        self._check_open()
        if self._read_only_cause is not None:
            raise ReadOnlyLogError(operation, self.directory, self._read_only_cause)

    # -- append --------------------------------------------------------------------------

    def _split(self, view: memoryview, from_producer: bool) -> list[tuple[int, BatchHeader]]:
        """(position, header) of each batch in view, each verified; raises before anything is
        written. A producer's batch must number its records 0..n-1 (only compaction, which
        never goes through here, leaves gaps), so it cannot burn offsets."""
        batches = []
        position = 0
        while position < len(view):
            header = peek_header(view, position)
            if position + header.batch_length > len(view):
                raise CorruptBatchError(
                    f"batch at byte {position} of the appended buffer is cut off: batch_length "
                    f"{header.batch_length}, {len(view) - position} bytes present"
                )
            if header.batch_length > self.config.max_message_bytes:
                raise RecordTooLargeError(header.batch_length, self.config.max_message_bytes)
            RecordBatch(view[position : position + header.batch_length]).verify()
            if from_producer and (header.record_count == 0 or header.last_offset_delta != header.record_count - 1):
                raise CorruptBatchError(
                    f"batch at byte {position} of the appended buffer has {header.record_count} records but "
                    f"last_offset_delta {header.last_offset_delta}; a new batch numbers its records 0..n-1"
                )
            batches.append((position, header))
            position += header.batch_length
        if not batches:
            raise ValueError("append needs at least one batch")
        return batches

    def verify_producer_batches(self, view: memoryview) -> list[tuple[int, BatchHeader]]:
        """(position, header) of each batch a producer sent, each checked as append would check
        it (whole, within max.message.bytes, CRC, records numbered 0..n-1): a Raft leader runs
        this before proposing, since an entry in the Raft log must be one the log can store."""
        return self._split(view, from_producer=True)

    def append(self, batch, *, assign_offsets: bool = True, leader_term: int | None = None) -> tuple[int, int]:
        """Append one or more batches (back to back in one buffer); returns (base_offset,
        last_offset) of what was written.

        assign_offsets=True (leader): the bytes are copied and each batch stamped with the next
        offsets (and leader_term, if given). False (follower): the batches carry their offsets
        and must continue exactly at log_end_offset. Verifies every crc before writing
        anything; writes every batch or (raising) none; never fsyncs (see flush/maybe_flush)."""
        view = memoryview(batch).cast("B")
        batches = self._split(view, from_producer=assign_offsets)
        with self._lock:
            self._check_writable("append")
            next_offset = self.log_end_offset
            if assign_offsets:
                data = bytearray(view)
                view = memoryview(data)
                stamped = []
                for position, header in batches:
                    term = header.leader_term if leader_term is None else leader_term
                    stamp_batch(view[position:], next_offset, term)
                    stamped.append((position, header._replace(base_offset=next_offset, leader_term=term)))
                    next_offset += header.last_offset_delta + 1
                batches = stamped
            else:
                for position, header in batches:
                    if header.base_offset != next_offset:
                        raise ValueError(
                            f"follower append: batch at byte {position} starts at offset {header.base_offset}, "
                            f"but the log continues at {next_offset}"
                        )
                    next_offset = header.last_offset + 1
            # All or nothing (_write): a caller told the append failed (a full disk part way,
            # after a roll) must not find part of it in the log, or a retry would duplicate it.
            with _storage_errors("append", self.directory):
                self._write(view, batches)
            return batches[0][1].base_offset, batches[-1][1].last_offset

    def _write(self, view: memoryview, batches: list[tuple[int, BatchHeader]]) -> None:
        """Write batches to the active segment, rolling before any batch that does not fit;
        writes all of them or (raising) none."""
        now_ms = self._clock_ms()
        runs = self._runs_per_segment(batches, now_ms)
        if len(runs) == 1:
            active = self._segments[-1]
            active.append(*_run_data(view, runs[0]), now_ms)  # cuts off what a failed write left
        else:
            active = self._write_rolling(view, runs, now_ms)
        if active not in self._dirty_segments:
            self._dirty_segments.append(active)

    def _runs_per_segment(self, batches: list[tuple[int, BatchHeader]], now_ms: int) -> list[list]:
        """batches split where the log rolls: the first run goes to the active segment (empty
        if it rolls before the first batch), each later one to a new segment."""
        active = self._segments[-1]
        runs: list[list] = [[]]
        used_bytes, first_append_ms = active.size_bytes, active.first_append_ms
        for position, header in batches:
            if self._should_roll(used_bytes, first_append_ms, header.batch_length, now_ms):
                runs.append([])
                used_bytes, first_append_ms = 0, None
            runs[-1].append((position, header))
            used_bytes += header.batch_length
        return runs

    def _should_roll(self, used_bytes: int, first_append_ms: int | None, batch_bytes: int, now_ms: int) -> bool:
        """Roll before a batch that would overflow segment.bytes or once segment.ms passed;
        an empty segment takes any batch, so a big batch never loops."""
        if used_bytes == 0:
            return False
        if used_bytes + batch_bytes > self.config.segment_bytes:
            return True
        return first_append_ms is not None and now_ms - first_append_ms >= self.config.segment_ms

    def _write_rolling(self, view: memoryview, runs: list[list], now_ms: int) -> Segment:
        """Write runs[0] to the active segment and each later run to a segment of its own,
        then make them all readable at once; returns the new active segment.

        A failure part way (the disk fills in the third segment) must leave the log exactly
        as it was, on the very disk that is full. truncate_to cannot promise that: it copies
        the kept prefix to a new file when a reader may have mapped past the cut, and the
        copy needs space. So nothing this writes is readable before all of it is written:
        the active segment's share is only staged, and the new segments are not in the
        segment list yet. No reader can have mapped any of it, so the undo may delete the new
        segments (freeing their space) and cut the staged bytes off with ftruncate, neither
        of which needs space."""
        active = self._segments[-1]
        index_marks = active.index_file_marks()
        created: list[Segment] = []
        try:
            if runs[0]:
                active.stage(_run_data(view, runs[0])[0])
            for run in runs[1:]:
                self._make_whole_before_roll(created[-1] if created else active)
                segment = Segment.create(self.directory, run[0][1].base_offset, self.config.index_interval_bytes)
                created.append(segment)
                segment.append(*_run_data(view, run), now_ms)
        except BaseException:
            self._undo_rolling_write(active, index_marks, created)
            raise
        if runs[0]:
            active.publish(_run_data(view, runs[0])[1], now_ms)
        self._set_segments(self._segments + created)
        self._directory_dirty = True
        return created[-1]

    def _make_whole_before_roll(self, closing: Segment) -> None:
        # Open crc-scans only the last segment and trusts the indexes of the others, so a
        # segment must be whole on disk before a later one exists: after a power loss its
        # unsynced pages could read back as zeros between index entries that still check out.
        with self._fsync_failure_sticks():
            closing.flush()
        closing.persist_indexes()

    def _undo_rolling_write(self, active: Segment, index_marks: tuple, created: list[Segment]) -> None:
        """Put the files back as they were before a failed _write_rolling, then make that
        durable: the roll fsynced the staged bytes, so a power loss could otherwise bring the
        failed append back. Never raises (the caller re-raises what failed the append); a step
        that fails is logged, and an fsync that fails sticks like every other."""
        try:
            for segment in created:
                segment.discard()
            active.unstage()
            active.cut_index_files_back(index_marks)
            active.dirty = True
            with self._fsync_failure_sticks():
                active.flush()
                fsync_directory(self.directory)
        except OSError as error:
            logger.error("could not fully undo a failed append in %s: %s", self.directory, error)

    # -- read ----------------------------------------------------------------------------

    def _check_range(self, offset: int) -> int:
        offset = operator.index(offset)  # numpy integers are fine, floats and None are not
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        return offset

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> memoryview:
        """Whole batches from the one containing offset: up to max_bytes (at least one batch
        if any is available), none with base_offset >= max_offset (the high watermark), all
        from one segment (a zero-copy view of it; the next read continues in the next one).
        Empty at log_end_offset; OffsetOutOfRangeError outside [log_start, log_end]."""
        segments, base_offsets = self._snapshot
        self._check_open()
        offset = self._check_range(offset)
        index = bisect.bisect_right(base_offsets, offset) - 1
        for segment in segments[max(index, 0) :]:
            if segment.next_offset > offset:
                return segment.read(offset, max_bytes, max_offset)
        return memoryview(b"")

    def tail_start_offset(self, tail_bytes: int) -> int:
        """An offset from which reading to the end covers at least the log's last tail_bytes:
        a batch start the offset index knows, so up to one index interval more. For state
        rebuilt from recent batches (the producer table) without reading a whole segment."""
        segments, _ = self._snapshot
        remaining = tail_bytes
        for segment in reversed(segments):
            if segment.size_bytes > remaining:
                entry = segment.offset_index.position_floor(segment.size_bytes - remaining)
                found = segment.base_offset + (int(segment.offset_index.keys[entry]) if entry is not None else 0)
                return max(found, self.log_start_offset)
            remaining -= segment.size_bytes
        return self.log_start_offset

    def batch_header_at(self, offset: int) -> BatchHeader:
        """The header of the batch containing offset (Raft reads entry terms with this). In a
        closed segment the batch's crc is checked first (CorruptDataError): open trusted those
        without reading them, and Raft must not take a flipped term for a real one. The active
        segment's batches were crc-checked by open or written by this process."""
        offset = self._check_range(offset)
        if offset == self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        segments, base_offsets = self._snapshot
        index = bisect.bisect_right(base_offsets, offset) - 1
        segment = segments[index]
        found = segment.locate(offset)
        if found is None:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        if index < len(segments) - 1:
            segment.check(found[0], found[1].base_offset, found[1].batch_length)
        return found[1]

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """The first offset whose record timestamp is >= timestamp_ms, or None."""
        for segment in self._segments:
            found = segment.offset_for_timestamp(timestamp_ms)
            if found is not None:
                return found
        return None

    # -- truncation ----------------------------------------------------------------------

    def truncate_to(self, offset: int) -> None:
        """Drop every batch with base_offset >= offset (a batch boundary or log_end_offset),
        durably."""
        offset = operator.index(offset)
        with self._lock, _storage_errors("truncation", self.directory):
            self._check_writable("truncate")
            if offset == self.log_end_offset:
                return
            if offset < self.log_start_offset or offset > self.log_end_offset:
                raise ValueError(
                    f"cannot truncate to {offset}: it must be a batch boundary in "
                    f"{self.log_start_offset}..{self.log_end_offset}"
                )
            keep = max(bisect.bisect_right(self._snapshot[1], offset) - 1, 0)
            while keep > 0 and self._segments[keep].base_offset == offset:
                keep -= 1  # an empty segment starting at offset goes too; its predecessor ends there
            target = self._segments[keep]
            if target.next_offset > offset:
                target.truncate_to_offset(offset)
            dropped = self._segments[keep + 1 :]
            self._set_segments(self._segments[: keep + 1])
            for segment in dropped:
                segment.delete_files()
            self._dirty_segments = [s for s in self._dirty_segments if s not in dropped]
            target.first_append_ms = self._clock_ms() if target.size_bytes else None
            self._compaction_done_until = None
            # Durable on return: a follower appends the new leader's entries at these offsets
            # next, and a power loss that kept some of those but undid the truncation could put
            # an older term's entries after a newer one's (Raft's log matching would not hold).
            with self._fsync_failure_sticks():
                target.flush()
                fsync_directory(self.directory)
            self._directory_dirty = False

    def reset_to(self, offset: int) -> None:
        """Delete everything; the log becomes empty and continues at offset."""
        offset = operator.index(offset)
        if offset < 0:
            raise ValueError(f"cannot reset to {offset}: offsets are integers >= 0")
        with self._lock, _storage_errors("reset", self.directory):
            self._check_writable("reset")
            # Newest first: a crash part way leaves a shorter log with the same start, which
            # Raft's recorded log start still describes (oldest first would move the start).
            for segment in reversed(self._segments):
                segment.delete_files()
            self._set_segments([Segment.create(self.directory, offset, self.config.index_interval_bytes)])
            self._dirty_segments = []
            self._directory_dirty = True
            self._compaction_done_until = None

    # -- durability ------------------------------------------------------------------------

    def flush(self) -> None:
        """fsync everything written since the last flush (and the directory if files changed)."""
        with self._lock:
            if self._flush_error is not None:
                raise LogFlushFailedError(self.directory, self._flush_error)
            with _storage_errors("flush", self.directory), self._fsync_failure_sticks():
                for segment in self._dirty_segments:
                    segment.flush()
                self._dirty_segments = []
                if self._directory_dirty:
                    fsync_directory(self.directory)
                    self._directory_dirty = False
            self._last_flush_ms = self._clock_ms()

    # -- damage --------------------------------------------------------------------------

    def quarantine_damaged(self, error: CorruptDataError) -> Damage:
        """Quarantine the batch a read found damaged and everything after it (recovery.py), as
        recovery would have had it been found on open: the log then ends before that batch and
        reports the damage until it holds those offsets again. Readers in flight keep their
        views (the files are renamed, not changed)."""
        with self._lock, _storage_errors("quarantine", self.directory):
            self._check_writable("quarantine")
            segments = self._segments
            index = next((i for i, s in enumerate(segments) if s.log_path == error.path), None)
            if index is None:
                raise ValueError(f"{error.path} is not a segment of {self.directory} (any more)")
            damaged = segments[index]
            if not damaged.base_offset <= error.offset <= damaged.next_offset:
                raise ValueError(f"offset {error.offset} is not in the segment {error.path}")
            held_until = self.log_end_offset  # (before the next line: the damaged segment may be the active one)
            damaged.sound_end, damaged.next_offset = error.position, error.offset  # whole batches before it
            live = quarantine(self.directory, segments[index:], held_until, str(error))
            self._set_segments(segments[:index] + [live])
            self._dirty_segments = []
            self._compaction_done_until = None
            self.damage = unrepaired_damage(self.directory, self.log_end_offset)
            return self.damage

    def scrub(self, max_bytes: int) -> int:
        """crc-check about max_bytes more of the closed segments, from where the last call
        stopped, round and round; returns the bytes checked (0 when there is no closed
        segment). CorruptDataError names the first damaged batch.

        Open trusts closed segments without reading them (a crc scan of the whole log at every
        start would read it all), and a follower never reads its log: damage that appeared in
        a closed segment since it was written would wait there for the day a read or a new
        leader needs it. A broker scrubs a little on every housekeeping turn instead."""
        segments, base_offsets = self._snapshot
        self._check_open()
        closed = segments[:-1]
        if not closed:
            return 0
        segment, position, offset = self._scrub_at
        index = bisect.bisect_left(base_offsets, segment.base_offset) if segment is not None else 0
        if index >= len(closed) or closed[index] is not segment:
            # it went (retention) or was replaced (compaction): from the segment now there
            index = index if index < len(closed) else 0
            segment, position, offset = closed[index], 0, closed[index].base_offset
        elif offset >= segment.next_offset:  # done with it: the next one, or round again
            index = index + 1 if index + 1 < len(closed) else 0
            segment, position, offset = closed[index], 0, closed[index].base_offset
        end_position, end_offset = segment.check(position, offset, max_bytes)
        self._scrub_at = (segment, end_position, end_offset)
        return end_position - position

    def note_if_repaired(self) -> bool:
        """If the log holds every offset its damage took again, record the damage repaired;
        returns whether the log is whole (no damage left)."""
        damage = self.damage
        if damage is None:
            return True
        if self.log_end_offset < damage.held_until:
            return False
        self.damage = unrepaired_damage(self.directory, self.log_end_offset)
        return self.damage is None

    def make_recovered_durable(self) -> None:
        """fsync the active segment as recovery found it. What a previous process wrote but
        never fsynced (it was killed between the write and its flush) can still be in the page
        cache, readable but not durable; a Raft replica must not acknowledge or commit it as if
        it were. Closed segments were fsynced when they rolled."""
        with self._lock:
            self._check_writable("making the recovered log durable")
            active = self._segments[-1]
            active.dirty = True
            if active not in self._dirty_segments:
                self._dirty_segments.append(active)
        self.flush()

    @contextlib.contextmanager
    def _fsync_failure_sticks(self):
        """Remember an fsync failure so that every later flush raises it."""
        try:
            yield
        except OSError as error:
            # The kernel may have dropped the pages that failed to write back and will not
            # report it again: only a reopen, which reads what is really on disk, is safe.
            self._flush_error = error
            raise

    def maybe_flush(self, now_ms: int | None = None) -> bool:
        """Flush as flush.policy says: 'always' whenever dirty (call once per loop iteration,
        before sending acks), 'interval:<ms>' when that much time passed, 'never' not at all.
        Returns whether it flushed."""
        interval_ms = self.config.flush_interval_ms
        if interval_ms is None or not (self._dirty_segments or self._directory_dirty):
            return False
        now_ms = self._clock_ms() if now_ms is None else now_ms
        if interval_ms and now_ms - self._last_flush_ms < interval_ms:
            return False
        self.flush()
        return True

    # -- cleanup ---------------------------------------------------------------------------

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete whole closed segments past retention.ms / retention.bytes (cleanup.policy
        'delete' only), durably; moves log_start_offset. Returns the number deleted."""
        with self._lock, _storage_errors("retention", self.directory):
            self._check_writable("retention")
            now_ms = self._clock_ms() if now_ms is None else now_ms
            count = expired_segment_count(self._segments, self.config, now_ms)
            if count:
                self._delete_first_segments(count)
            return count

    def delete_segments_before(self, offset: int) -> int:
        """Delete the leading closed segments that end at or before offset, durably; returns
        how many. The log start moves to the first kept segment's base offset. (Raft's storage
        finishes an interrupted retention with this after a crash.)"""
        with self._lock, _storage_errors("deleting segments", self.directory):
            self._check_writable("deleting segments")
            count = 0
            while count < len(self._segments) - 1 and self._segments[count].next_offset <= offset:
                count += 1
            if count:
                self._delete_first_segments(count)
            return count

    def _delete_first_segments(self, count: int) -> None:
        expired = self._segments[:count]
        self._set_segments(self._segments[count:])
        self._dirty_segments = [s for s in self._dirty_segments if s not in expired]
        for segment in expired:
            segment.delete_files()
        # Durable on return: a deletion that a power loss undid would contradict the log start
        # that Raft's storage records. A failure sticks, as for every other fsync of the log.
        with self._fsync_failure_sticks():
            fsync_directory(self.directory)

    def compact(self, now_ms: int | None = None, max_offset: int | None = None) -> CompactionStats:
        """Keep the last record per key in closed segments (cleanup.policy 'compact' only; a
        no-op otherwise); tombstones stay for delete.retention.ms. With max_offset, only the
        leading closed segments whose records all sit at or below it are read and rewritten
        (Raft passes what is committed and applied: an entry above it may still change)."""
        if self.config.cleanup_policy != "compact":
            return CompactionStats()
        with self._lock, _storage_errors("compaction", self.directory):
            self._check_writable("compaction")
            now_ms = self._clock_ms() if now_ms is None else now_ms
            closed = self._segments[:-1]
            if max_offset is not None:
                closed = [segment for segment in closed if segment.next_offset - 1 <= max_offset]
            if not closed:
                return CompactionStats()
            closed_end_offset = closed[-1].next_offset
            if self._compaction_done_until is not None:
                done_end_offset, next_useful_ms = self._compaction_done_until
                if done_end_offset == closed_end_offset and now_ms < next_useful_ms:
                    return CompactionStats()  # nothing closed or expired since the last pass
            self._dirty_segments = [s for s in self._dirty_segments if s not in closed]  # synced at roll
            cleaned, stats = compact_segments(
                closed, self.config.delete_retention_ms, now_ms, self.config.index_interval_bytes
            )
            self._set_segments(cleaned + self._segments[len(closed) :])
            self._directory_dirty = True
            next_useful_ms = (
                float("inf") if stats.oldest_tombstone_ms is None
                else stats.oldest_tombstone_ms + self.config.delete_retention_ms + 1
            )
            self._compaction_done_until = (closed_end_offset, next_useful_ms)
            return stats

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close every segment; idempotent. Every file descriptor is closed even
        if a step fails (a full disk fails the index writes); then the first failure raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failures = []
            for step in [self.flush, *(segment.close for segment in self._segments)]:
                try:
                    step()
                except OSError as error:
                    failures.append(error)
            if failures:
                with _storage_errors("close", self.directory):
                    raise failures[0]

    def delete(self) -> None:
        """Close the log and remove its whole directory."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"PartitionLog({self.directory!r}, log_start_offset={self.log_start_offset}, "
                f"log_end_offset={self.log_end_offset}, segments={len(self._segments)})")
