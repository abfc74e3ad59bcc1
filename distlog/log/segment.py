"""One segment: a .log file of whole batches plus its two sparse indexes, with recovery.

Reads are served as memoryviews of a read-only mmap of the file, so a fetch copies nothing.
A file that has been mapped is never shrunk in place (a reader touching a page past the new
end would get SIGBUS): truncating into the mapped range writes the kept prefix to a new file
and swaps it in with os.replace, exactly as compaction does. Readers holding a view of the
old mapping keep valid bytes; the old inode lives until its last view is dropped.

An append that rolls writes ahead of what readers see (stage, then publish): until publish,
nothing can have mapped the staged bytes, so unstage may cut them off with ftruncate, which
needs no disk space (the copy above does).

A segment opened read_only (its file system or file cannot be written) never changes its files:
recovery serves only the sound prefix and keeps the rebuilt indexes in memory.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import mmap
import os
import weakref

import numpy as np

from distlog.log.batch import HEADER_SIZE, MAGIC, BatchHeader, CorruptBatchError, RecordBatch, batch_crc, peek_header
from distlog.log.errors import CorruptDataError
from distlog.log.index import IndexCorruptError, OffsetIndex, TimeIndex
from distlog.log.scan import scan_batches, sound_batches_after
from distlog.log.synced import SyncedRecorder, recording_enabled

logger = logging.getLogger(__name__)

_COPY_CHUNK_BYTES = 16 * 1024 * 1024
_EMPTY = memoryview(b"")
# Page cache kept for the newest bytes of a segment. Older bytes, once fsynced, are dropped from
# the page cache (fadvise DONTNEED), in steps of at least _CACHE_DROP_STEP_BYTES. The reason is
# the cost of fresh memory: on a VM whose host backs guest pages lazily (and takes free ones
# back), a write into never-used page cache ran at ~210 MB/s here, while one that reuses the
# pages just dropped ran at ~850 MB/s (docs/PERFORMANCE.md). Tail readers and followers are
# served from the hot tail or from memory; an older read comes from disk, or from pages a
# reader mapped (the kernel keeps mapped pages). Purely advisory: nothing unsynced is dropped.
HOT_TAIL_BYTES = 16 * 1024 * 1024
_CACHE_DROP_STEP_BYTES = 4 * 1024 * 1024

# A read maps the pages it touches into the broker, and the kernel counts them in its RSS (and
# keeps them in the page cache: fadvise cannot drop a mapped page) for as long as the segment is
# mapped: a broker that served 500 MB measured 540 MB RSS, 47 MB of it its own heap. So each
# segment keeps only its latest read's pages mapped: the next read hands the previous one's back
# (madvise DONTNEED). On a shared file mapping that only unmaps them: a view still being sent
# faults them in again from the page cache or the file, with the same bytes.
_PAGE_BYTES = mmap.PAGESIZE


def segment_file_name(base_offset: int, suffix: str) -> str:
    """'00000000000000000042.log' for base_offset 42 and suffix '.log'."""
    return f"{base_offset:020d}{suffix}"


class Segment:
    """A .log file holding batches with offsets [base_offset, next_offset), and its indexes."""

    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int):
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log_path = os.path.join(directory, segment_file_name(base_offset, ".log"))
        self.offset_index = OffsetIndex(os.path.join(directory, segment_file_name(base_offset, ".index")))
        self.time_index = TimeIndex(os.path.join(directory, segment_file_name(base_offset, ".timeindex")))
        self.size_bytes = 0
        self.next_offset = base_offset
        self.last_term = 0
        self.max_timestamp_ms = -1
        self.first_append_ms: int | None = None
        self.dirty = False
        # The end of the bytes a scan found sound, and why the rest is not (see open()).
        self.sound_end = 0
        self.problem: str | None = None
        self._bytes_since_index_entry = 0
        self._scan_end = 0
        self._cache_dropped_to = 0  # file bytes below this were fsynced and dropped from the page cache
        self._staged_bytes = 0  # written after size_bytes, not readable yet (see stage)
        self.read_only = False
        self._fd = -1
        self._close_fd = None
        # A view of a read-only mmap of the file (the view keeps the mapping alive); its
        # length is the mapped size, so a lock-free reader can never see the two disagree.
        self._map_view = _EMPTY
        self._last_read = None  # (mapping, start, end) of the latest read, whose pages stay mapped
        # Power-loss tests only (synced.py): where each fsync's size is recorded; None in production.
        self._synced = SyncedRecorder(self.log_path) if recording_enabled() else None

    def _open_fd(self, flags: int) -> None:
        # No O_APPEND: appends pwrite at size_bytes, so bytes a failed write left past it
        # are overwritten by the next append instead of sitting between two batches.
        self._fd = os.open(self.log_path, flags | (os.O_RDONLY if self.read_only else os.O_RDWR), 0o644)
        self._cache_dropped_to = 0
        # Retired segments (compacted, deleted) close their fd once no reader holds them.
        self._close_fd = weakref.finalize(self, os.close, self._fd)

    @classmethod
    def create(cls, directory: str, base_offset: int, index_interval_bytes: int) -> Segment:
        """A new empty segment; any old files of that name are replaced."""
        segment = cls(directory, base_offset, index_interval_bytes)
        segment._open_fd(os.O_CREAT | os.O_TRUNC)
        if segment._synced is not None:
            segment._synced.forget()  # an old file of that name's record does not describe this one
        segment.offset_index.rewrite()
        segment.time_index.rewrite()
        return segment

    @classmethod
    def open(cls, directory: str, base_offset: int, index_interval_bytes: int, recover: bool,
             read_only: bool = False) -> Segment:
        """Open an existing segment, changing nothing on disk but its indexes (read_only: not
        even those). recover=True (the last segment) scans every batch with its crc; otherwise
        the indexes are sanity-checked and only the bytes after the last index entry are walked
        (a full scan if anything is off). A batch that fails the scan ends the sound prefix:
        `sound_end` says where and `problem` why, and the caller (PartitionLog.open,
        recovery.py) decides whether those bytes are a torn tail to cut or damage to quarantine."""
        segment = cls(directory, base_offset, index_interval_bytes)
        segment.read_only = read_only
        segment._open_fd(0)
        segment.size_bytes = os.fstat(segment._fd).st_size
        if recover or not segment._load_indexes():
            segment.rescan()
        return segment

    def _load_indexes(self) -> bool:
        try:
            self.offset_index = OffsetIndex.load(self.offset_index.path)
            self.time_index = TimeIndex.load(self.time_index.path)
            self._walk_tail(verify=False)
        except (IndexCorruptError, OSError) as error:
            logger.warning("rebuilding indexes of %s: %s", self.log_path, error)
            return False
        if not self._index_entries_point_at_batches():
            logger.warning("rebuilding indexes of %s: an entry does not point at its batch", self.log_path)
            return False
        if not self._time_entries_agree_with_batches():
            logger.warning("rebuilding indexes of %s: a time index entry disagrees with its batch", self.log_path)
            return False
        if self._scan_end != self.size_bytes:
            logger.warning("rebuilding indexes of %s: the batches after the last index entry do not parse",
                           self.log_path)
            return False
        self.sound_end = self.size_bytes
        last_time_offset = self.time_index.values[-1] if len(self.time_index) else 0
        if last_time_offset > self.next_offset - self.base_offset:
            logger.warning("rebuilding indexes of %s: time index points past the log", self.log_path)
            return False
        return True

    def _index_entries_point_at_batches(self) -> bool:
        """Every .index entry lands on a batch header with the offset it claims (one numpy
        gather over the mapped file, so checking costs no syscall per entry)."""
        if not len(self.offset_index):
            return True
        positions = np.array(self.offset_index.values, dtype=np.int64)
        if int(positions[-1]) + HEADER_SIZE > self.size_bytes:
            return False
        data = np.frombuffer(self._mapped(), dtype=np.uint8)
        magics = data[positions]
        base_offsets = data[positions[:, None] + np.arange(1, 9)].copy().view("<u8").ravel()
        expected = np.array(self.offset_index.keys, dtype=np.uint64) + np.uint64(self.base_offset)
        return bool(np.all(magics == MAGIC)) and bool(np.all(base_offsets == expected))

    def _time_entries_agree_with_batches(self) -> bool:
        """Every .timeindex entry names a batch the .index points at (both are written at the
        same batches), with a timestamp no lower than that batch's max: a zeroed or stale entry
        would understate the segment's max timestamp, and retention would delete it early."""
        if not len(self.time_index):
            return True
        index_offsets = np.array(self.offset_index.keys, dtype=np.int64)
        time_offsets = np.array(self.time_index.values, dtype=np.int64)
        entries = np.searchsorted(index_offsets, time_offsets)
        if int(entries[-1]) >= len(index_offsets) or not np.array_equal(index_offsets[entries], time_offsets):
            return False
        positions = np.array(self.offset_index.values, dtype=np.int64)[entries]
        data = np.frombuffer(self._mapped(), dtype=np.uint8)
        # header bytes 23..26 hold record_count, 39..46 max_timestamp_ms (docs/FORMAT.md)
        record_counts = data[positions[:, None] + np.arange(23, 27)].copy().view("<u4").ravel()
        max_timestamps_ms = data[positions[:, None] + np.arange(39, 47)].copy().view("<i8").ravel()
        timestamps_ms = np.array(self.time_index.keys, dtype=np.int64)
        # a batch compaction emptied has no timestamps; its header keeps the old max
        return bool(np.all((record_counts == 0) | (timestamps_ms >= max_timestamps_ms)))

    def _walk_tail(self, verify: bool) -> None:
        """Recompute next_offset, last_term, max_timestamp_ms and _scan_end by walking the
        batches from the last index entry (the index is trusted up to there)."""
        index = self.offset_index
        if len(index):
            position = index.values[-1]
            expected_offset = self.base_offset + index.keys[-1]
            if position >= self.size_bytes:
                raise IndexCorruptError(f"{index.path} points at byte {position} past the end of the log")
        else:
            position, expected_offset = 0, self.base_offset
        self.next_offset = expected_offset
        self.last_term = 0
        self.max_timestamp_ms = self.time_index.keys[-1] if len(self.time_index) else -1
        self._bytes_since_index_entry = 0
        self._scan_end = position
        for pos, header in scan_batches(self._fd, position, self.size_bytes, expected_offset, verify):
            self._account(header)
            self._scan_end = pos + header.batch_length
        if len(index) and self._scan_end == position:
            raise IndexCorruptError(f"{index.path} points at byte {position}, which is not a sound batch")

    def rescan(self) -> None:
        """Scan the whole file with every crc checked, setting sound_end and problem, and
        rebuild both indexes from the sound prefix. They are written only if the whole file is
        sound; otherwise once the caller (recovery.py) has dealt with the rest."""
        self._map_view = _EMPTY  # nobody reads yet, so the file may shrink later
        if self.read_only:  # rebuilt in memory only: truncate_entries would rewrite the files
            self.offset_index = OffsetIndex(self.offset_index.path)
            self.time_index = TimeIndex(self.time_index.path)
        self.offset_index.truncate_entries(0)
        self.time_index.truncate_entries(0)
        self.next_offset = self.base_offset
        self.max_timestamp_ms = -1
        self.last_term = 0
        self._bytes_since_index_entry = 0
        problems: list[str] = []
        valid_end = 0
        for pos, header in scan_batches(self._fd, 0, self.size_bytes, self.base_offset, verify=True, problems=problems):
            self._index_batch(pos, header)
            valid_end = pos + header.batch_length
        self.sound_end = valid_end
        self.problem = problems[0] if problems else None
        if valid_end == self.size_bytes and not self.read_only:
            self.offset_index.rewrite_or_remove()
            self.time_index.rewrite_or_remove()

    def sound_run_after(self, position: int) -> int | None:
        """The next offset after a run of sound batches somewhere in the file past position,
        or None (scan.sound_batches_after): what tells damage from a torn tail."""
        return sound_batches_after(self._fd, position, self.size_bytes, self.next_offset)

    def cut_torn_tail(self) -> None:
        """Truncate the file to its sound prefix (recovery decided the rest is a torn write);
        read-only, the tail stays in the file and is never served."""
        logger.warning("recovery of %s: cutting %d bytes after byte %d, a torn write (%s)",
                       self.log_path, self.size_bytes - self.sound_end, self.sound_end, self.problem)
        if not self.read_only:
            os.ftruncate(self._fd, self.sound_end)
            os.fsync(self._fd)
        self.size_bytes = self.sound_end
        if not self.read_only:
            self.note_durable()
        self.problem = None
        if not self.read_only:
            self.offset_index.rewrite_or_remove()
            self.time_index.rewrite_or_remove()

    def release(self) -> None:
        """Close the file descriptor without writing anything (the files were moved away);
        views that readers hold stay valid."""
        self._close_fd()
        self._fd = -1
        self._forget_mapping()
        if self._synced is not None:
            self._synced.close()  # (the .log went elsewhere; PartitionLog.open removes a record left behind)

    def _account(self, header: BatchHeader) -> None:
        self.next_offset = header.last_offset + 1
        self.last_term = header.leader_term
        if header.record_count and header.max_timestamp_ms > self.max_timestamp_ms:
            self.max_timestamp_ms = header.max_timestamp_ms
        self._bytes_since_index_entry += header.batch_length

    def _index_batch(self, position: int, header: BatchHeader) -> None:
        """Account for a batch written at position, adding index entries every interval."""
        if self._bytes_since_index_entry >= self.index_interval_bytes:
            relative_offset = header.base_offset - self.base_offset
            self.offset_index.append(relative_offset, position)
            self._bytes_since_index_entry = 0
            running_max_ms = max(self.max_timestamp_ms, header.max_timestamp_ms if header.record_count else -1)
            if not len(self.time_index) or running_max_ms > self.time_index.keys[-1]:
                self.time_index.append(running_max_ms, relative_offset)
        self._account(header)

    def append(self, data: memoryview, headers: list[tuple[int, BatchHeader]], now_ms: int) -> None:
        """Write verified, stamped batches and make them readable; headers holds (position
        within data, header) of each. Raises having written nothing if the write fails."""
        self.stage(data)
        self.publish(headers, now_ms)

    def stage(self, data: memoryview) -> None:
        """Write batches after the readable (and any staged) bytes without making them readable:
        publish does that, unstage cuts them off. Raises having staged nothing."""
        position = self.size_bytes + self._staged_bytes
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self._fd, data[written:], position + written)
        except OSError:
            # A short write then ENOSPC (or EIO) leaves part of a batch past what is staged: cut
            # it off so a roll, flush or reopen never finds it; the next append overwrites it anyway.
            if written:
                try:
                    os.ftruncate(self._fd, position)
                except OSError as error:
                    logger.warning("could not cut a failed write off %s: %s", self.log_path, error)
            raise
        self._staged_bytes += len(data)
        self.dirty = True

    def publish(self, headers: list[tuple[int, BatchHeader]], now_ms: int) -> None:
        """Make every staged byte readable; headers holds (position within the staged bytes,
        header) of each staged batch."""
        position = self.size_bytes
        # Grow the readable size before publishing the offsets, so a lock-free reader never
        # sees an offset whose bytes it cannot map yet.
        self.size_bytes += self._staged_bytes
        self._staged_bytes = 0
        for relative_position, header in headers:
            self._index_batch(position + relative_position, header)
        if self.first_append_ms is None:
            self.first_append_ms = now_ms

    def unstage(self) -> None:
        """Cut the staged bytes off the file. No reader can have mapped them (they were never
        readable), so the file may shrink; a shrink needs no disk space."""
        staged_bytes, self._staged_bytes = self._staged_bytes, 0  # if the cut fails, the next append overwrites them
        if staged_bytes:
            os.ftruncate(self._fd, self.size_bytes)

    def _mapped(self) -> memoryview:
        """A view of the whole file as of now, remapping if it grew since the last read."""
        size_bytes = self.size_bytes  # read once: a writer thread may grow it meanwhile
        view = self._map_view
        if len(view) < size_bytes:
            if self._fd < 0:
                raise ValueError(f"segment {self.log_path} is closed")
            view = memoryview(mmap.mmap(self._fd, size_bytes, access=mmap.ACCESS_READ))
            self._map_view = view
        return view

    def _checked_header(self, data: memoryview, at: int, expected_offset: int, data_position: int = 0,
                        file_bytes: int | None = None) -> BatchHeader:
        """The header of the batch at data[at:] (file byte data_position + at), which must be
        whole within the file's file_bytes (default: len(data)) and start at expected_offset;
        CorruptDataError otherwise (the bytes cannot be trusted)."""
        position = data_position + at
        try:
            header = peek_header(data, at)
        except CorruptBatchError as error:
            raise CorruptDataError(self.log_path, position, expected_offset, str(error)) from None
        if position + header.batch_length > (len(data) if file_bytes is None else file_bytes):
            raise CorruptDataError(self.log_path, position, expected_offset,
                                   f"the batch claims {header.batch_length} bytes, past the end of the file")
        if header.base_offset != expected_offset:
            raise CorruptDataError(self.log_path, position, expected_offset,
                                   f"the batch starts at offset {header.base_offset}")
        return header

    def _check_crc(self, data: memoryview, at: int, header: BatchHeader, data_position: int = 0) -> None:
        """CorruptDataError unless the batch at data[at:] matches its crc32c: a batch is
        checked every time it is served, so a bit that flipped on disk is never passed on."""
        actual = batch_crc(data[at : at + header.batch_length])
        if actual != header.crc:
            raise CorruptDataError(self.log_path, data_position + at, header.base_offset,
                                   f"crc32c mismatch (stored {header.crc:#010x}, computed {actual:#010x})")

    def locate(self, offset: int) -> tuple[int, BatchHeader] | None:
        """(position, header) of the first batch whose last offset is >= offset, or None.
        CorruptDataError if a header on the way is damaged."""
        view = self._mapped()
        entry = self.offset_index.floor(offset - self.base_offset)
        if entry is not None:
            position, expected = self.offset_index.values[entry], self.base_offset + self.offset_index.keys[entry]
        else:
            position, expected = 0, self.base_offset
        size_bytes = len(view)
        while position < size_bytes:
            header = self._checked_header(view, position, expected)
            if header.last_offset >= offset:
                return position, header
            position += header.batch_length
            expected = header.last_offset + 1
        return None

    def read(self, offset: int, max_bytes: int, max_offset: int | None) -> memoryview:
        """Whole batches from the one holding offset, at most max_bytes (but at least one batch),
        none whose base_offset >= max_offset, each crc-checked: a damaged batch ends the read
        before it, and a read that starts at one raises CorruptDataError (naming it). Empty if
        there is nothing to return."""
        found = self.locate(offset)
        if found is None:
            return _EMPTY
        start, header = found
        if max_offset is not None and header.base_offset >= max_offset:
            return _EMPTY
        view = self._mapped()
        limit = start + max(max_bytes, header.batch_length)
        size_bytes = len(view)
        self._check_crc(view, start, header)  # the first batch must be sound, or the read fails
        position = start + header.batch_length
        while position + HEADER_SIZE <= limit and position < size_bytes:
            try:
                header = self._checked_header(view, position, header.last_offset + 1)
                if position + header.batch_length > limit or (max_offset is not None and header.base_offset >= max_offset):
                    break
                self._check_crc(view, position, header)
            except CorruptDataError:
                break  # serve the sound batches before it; the next read, starting there, fails
            position += header.batch_length
        self._release_previous_read(view, start, position)
        return view[start:position]

    def _forget_mapping(self) -> None:
        """Drop this segment's mapping (readers' views keep theirs), the latest read's with it:
        a mapping holds a dup of the fd until it goes."""
        self._map_view = _EMPTY
        self._last_read = None

    def _release_previous_read(self, view: memoryview, start: int, end: int) -> None:
        previous, self._last_read = self._last_read, (view.obj, start, end)
        if previous is None:
            return
        mapping, previous_start, previous_end = previous
        if mapping is view.obj and previous_end > start and previous_start < end:
            previous_end = start  # overlapping (a tail reader rereading): only what lies before this read
        _unmap_pages(mapping, previous_start, previous_end)

    def check(self, position: int, expected_offset: int, max_bytes: int) -> tuple[int, int]:
        """crc-check the whole batches from position (where expected_offset starts) for about
        max_bytes (at least one batch), reading with pread, not the mapping (a scrub should not
        keep the pages of old segments mapped); returns (position, offset) after the last batch
        checked. CorruptDataError on the first that fails."""
        size_bytes = self.size_bytes
        start = position
        data = memoryview(os.pread(self._fd, min(max(max_bytes, HEADER_SIZE), size_bytes - start), start))
        at = 0
        while start + at < size_bytes and at < len(data):
            if at and at + HEADER_SIZE > len(data):
                break  # a header cut by the end of this read: the next call starts with it
            header = self._checked_header(data, at, expected_offset, start, size_bytes)
            if at + header.batch_length > len(data):
                if at:
                    break  # it did not fit in this read: the next call starts with it
                data = memoryview(os.pread(self._fd, header.batch_length, start))
            self._check_crc(data, at, header, start)
            at += header.batch_length
            expected_offset = header.last_offset + 1
        return start + at, expected_offset

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """First offset in this segment whose record timestamp is >= timestamp_ms, or None."""
        if self.max_timestamp_ms < timestamp_ms:
            return None
        entry = self.time_index.lower(timestamp_ms)
        start_offset = self.base_offset + (self.time_index.values[entry] if entry is not None else 0)
        found = self.locate(start_offset)
        if found is None:
            return None
        position = found[0]
        view = self._mapped()
        while position < len(view):
            header = peek_header(view, position)
            if header.record_count and header.max_timestamp_ms >= timestamp_ms:
                arrays = RecordBatch(view[position : position + header.batch_length]).arrays()
                return int(arrays.offsets[int(np.argmax(arrays.timestamps_ms >= timestamp_ms))])
            position += header.batch_length
        return None

    def truncate_to_offset(self, offset: int) -> None:
        """Drop every batch with base_offset >= offset; offset must be a batch boundary here."""
        found = self.locate(offset)
        if found is None:
            return
        position, header = found
        if header.base_offset != offset:
            raise ValueError(
                f"offset {offset} is inside the batch {header.base_offset}..{header.last_offset}; "
                f"truncate to a batch boundary ({header.base_offset} or {header.last_offset + 1})"
            )
        if position < len(self._map_view):
            self._replace_with_prefix(position)
        else:
            os.ftruncate(self._fd, position)
        self.size_bytes = position
        self._cache_dropped_to = min(self._cache_dropped_to, position)
        self.offset_index.truncate_entries(bisect.bisect_left(self.offset_index.values, position))
        self.time_index.truncate_entries(bisect.bisect_left(self.time_index.values, offset - self.base_offset))
        self._walk_tail(verify=False)
        self.dirty = True

    def _replace_with_prefix(self, length: int) -> None:
        """Swap in a copy of the first length bytes, leaving mapped readers the old inode."""
        temp_path = self.log_path + ".tmp"
        temp_fd = os.open(temp_path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        try:
            copied = 0
            while copied < length:
                chunk = memoryview(os.pread(self._fd, min(_COPY_CHUNK_BYTES, length - copied), copied))
                copied += len(chunk)
                while chunk:  # a write may take less than it was given
                    chunk = chunk[os.write(temp_fd, chunk) :]
            os.fsync(temp_fd)
        except BaseException:
            os.unlink(temp_path)  # a partial copy would keep a full disk full until the next open
            raise
        finally:
            os.close(temp_fd)
        os.replace(temp_path, self.log_path)
        close_old_fd = self._close_fd
        self._open_fd(0)  # before closing the old one, so a reader never sees a reused fd number
        self._forget_mapping()
        close_old_fd()

    def persist_indexes(self) -> None:
        self.offset_index.persist()
        self.time_index.persist()

    def index_file_marks(self) -> tuple:
        """What the index files hold now, for cut_index_files_back."""
        return self.offset_index.persisted_mark(), self.time_index.persisted_mark()

    def cut_index_files_back(self, marks: tuple) -> None:
        """Undo persist_indexes since marks were taken (without needing disk space)."""
        offset_mark, time_mark = marks
        self.offset_index.cut_back_to(offset_mark)
        self.time_index.cut_back_to(time_mark)

    def flush(self) -> None:
        """fsync the log file if anything was written since the last flush. Index entries are
        written at roll and close only: the last segment's indexes are rebuilt on open anyway."""
        if self.dirty:
            os.fsync(self._fd)
            self.dirty = False
            self.note_durable()
            self._drop_cold_cache()

    def note_durable(self) -> None:
        """Record that the whole file as it is now is on disk (only for power-loss tests, see
        synced.py): after our own fsync, or for a file its writer fsynced before swapping it in
        (compaction, quarantine)."""
        if self._synced is not None:
            self._synced.record(self.size_bytes + self._staged_bytes)  # a roll fsyncs staged bytes too

    def _drop_cold_cache(self) -> None:
        """Drop the fsynced bytes before the hot tail from the page cache (see HOT_TAIL_BYTES)."""
        cold_end = self.size_bytes - HOT_TAIL_BYTES
        if cold_end - self._cache_dropped_to >= _CACHE_DROP_STEP_BYTES:
            _unmap_pages(self._map_view.obj, self._cache_dropped_to, min(cold_end, len(self._map_view)))  # else kept
            os.posix_fadvise(self._fd, self._cache_dropped_to, cold_end - self._cache_dropped_to,
                             os.POSIX_FADV_DONTNEED)
            self._cache_dropped_to = cold_end

    def close(self) -> None:
        """Persist the indexes (not when read-only) and close the file descriptor, even if the
        persist raises (mapped views stay valid)."""
        try:
            if not self.read_only:
                self.persist_indexes()
        finally:
            self._release_fd()

    def _release_fd(self) -> None:
        if self._close_fd is not None:  # a read-only log's placeholder segment has no file
            self._close_fd()
        self._fd = -1
        self._forget_mapping()
        if self._synced is not None:
            self._synced.close()

    def discard(self) -> None:
        """Remove a segment no reader has seen (one a failed append created): its files and fd."""
        self.delete_files()
        self._release_fd()

    def delete_files(self) -> None:
        """Unlink the segment's files; open views and the fd stay usable until dropped."""
        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if self._synced is not None:
            self._synced.forget()

    def __repr__(self) -> str:
        return (f"Segment(base_offset={self.base_offset}, next_offset={self.next_offset}, "
                f"size_bytes={self.size_bytes})")


def _unmap_pages(mapping, start: int, end: int) -> None:
    """Unmap the whole pages of mapping[start:end) from this process (see _PAGE_BYTES); only a
    hint, so a failure is ignored."""
    first, last = start - start % _PAGE_BYTES, end - end % _PAGE_BYTES
    if last > first and isinstance(mapping, mmap.mmap):
        with contextlib.suppress(OSError, ValueError):  # ValueError: the mapping was closed
            mapping.madvise(mmap.MADV_DONTNEED, first, last - first)
