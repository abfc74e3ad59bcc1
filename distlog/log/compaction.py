"""Log compaction: keep the last record per key in the closed segments, drop old tombstones,
and swap each cleaned segment in atomically.

Decisions, and why:
- Only closed segments are read and rewritten; the active segment takes appends.
- A record with a null key cannot be superseded, so it is always kept.
- Control batches (Raft leader markers and membership entries) are kept byte for byte; their
  keys start with \x00distlog, so they never supersede a user's record either.
- A tombstone (null value) is the latest record for its key and is kept while younger than
  delete.retention.ms (by its own timestamp), so consumers catching up still see the delete.
- A batch keeps its original offsets and span; a batch left with no records stays as a
  header-only batch, so batches always cover contiguous offsets (followers, Raft and
  batch_header_at rely on that).
- The cleaned file is written beside the old one and moved over it with os.replace; readers
  holding the old file (mapping or fd) keep reading the old inode's valid bytes. The old
  index files are removed first, so a crash mid-swap leaves a missing index (rebuilt on
  open), never a stale one. A segment in which nothing changes is not rewritten.
- PartitionLog.compact skips the pass entirely while no new segment closed and no kept
  tombstone expired, so the broker may call it as often as it likes.
- The latest record of each key is found with numpy (latest_record_mask), not a dict filled
  one record at a time: the pass runs in the broker's loop, and 1M records took 2.3 s that way
  against 0.7 s now. Key sets too wide for the bounded key matrix fall back to the dict.
- filter_batch, the only code that rewrites a batch rather than building or stamping one,
  lives here with its one user; it copies the kept records' bytes with numpy gathers and lays
  them out again with batch_builder.assemble_batch.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from distlog.log.batch import RecordBatch, field_positions, iter_batches
from distlog.log.batch_builder import assemble_batch
from distlog.log.segment import Segment


@dataclass
class CompactionStats:
    """What one compaction pass did."""

    segments_cleaned: int = 0
    records_before: int = 0
    records_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    tombstones_removed: int = 0
    # Timestamp of the oldest tombstone kept (None if none): until it expires, and until more
    # segments close, another pass would change nothing.
    oldest_tombstone_ms: int | None = None


# The key matrix of one pass holds every record's key padded to the widest one, plus its
# length; past this many bytes the pass falls back to a dict keyed by bytes (slower, unbounded).
KEY_MATRIX_MAX_BYTES = 256 * 1024 * 1024


def latest_record_mask(batches: list) -> np.ndarray:
    """For every record of `batches`, in order: True if no later record has the same key.
    Records with a null key are always True (nothing can supersede them).

    Without a Python step per record: the keys become rows of one uint8 matrix (zero-padded,
    with the length appended so b"a" and b"a\\x00" differ), read as tuples of 64-bit words; a
    stable sort of those tuples puts each key's records together in record order, and the last
    of each run is its latest."""
    columns = [batch.arrays() for batch in batches]
    total = sum(len(arrays.key_lengths) for arrays in columns)
    width = max((int(arrays.key_lengths.max(initial=-1)) for arrays in columns), default=-1)
    if width < 0:  # no record has a key
        return np.ones(total, dtype=bool)
    row_bytes = -(-(width + 4) // 8) * 8  # whole 64-bit words, so rows sort as integer tuples
    if total * row_bytes > KEY_MATRIX_MAX_BYTES:
        return _latest_record_mask_by_dict(columns, total)
    keys = np.zeros((total, row_bytes), dtype=np.uint8)
    null_keys = np.zeros(total, dtype=bool)
    row = 0
    for arrays in columns:
        lengths = arrays.key_lengths
        count = len(lengths)
        block = keys[row:row + count]
        if width and count:
            payload = np.frombuffer(arrays.payload, dtype=np.uint8)
            cols = np.arange(width)
            inside = cols[None, :] < lengths[:, None]
            # Clipped so that padding positions index something; `inside` zeroes them after.
            where = np.minimum(arrays.key_positions[:, None] + cols[None, :], max(len(payload) - 1, 0))
            block[:, :width] = np.where(inside, payload[where] if len(payload) else 0, 0)
        block[:, width:width + 4] = lengths.astype(">i4").view(np.uint8).reshape(count, 4)
        null_keys[row:row + count] = lengths < 0
        row += count
    words = keys.view(np.uint64)  # (total, row_bytes // 8); any consistent order groups equal keys
    order = np.lexsort(words.T[::-1])  # stable: equal keys stay in record order
    ordered = words[order]
    last_of_key = np.ones(total, dtype=bool)
    last_of_key[:-1] = np.any(ordered[1:] != ordered[:-1], axis=1)
    latest = np.zeros(total, dtype=bool)
    latest[order[last_of_key]] = True
    return latest | null_keys


def _latest_record_mask_by_dict(columns: list, total: int) -> np.ndarray:
    """latest_record_mask for key sets too wide for the matrix: one dict entry per key."""
    last_index: dict[bytes, int] = {}
    null_keys = np.zeros(total, dtype=bool)
    index = 0
    for arrays in columns:
        payload = arrays.payload
        for position, length in zip(arrays.key_positions.tolist(), arrays.key_lengths.tolist()):
            if length < 0:
                null_keys[index] = True
            else:
                last_index[bytes(payload[position:position + length])] = index
            index += 1
    latest = np.zeros(total, dtype=bool)
    latest[np.fromiter(last_index.values(), dtype=np.int64, count=len(last_index))] = True
    return latest | null_keys


def _gather(payload: np.ndarray, positions: np.ndarray, lengths: np.ndarray) -> bytes:
    """The bytes of the given (position, length) runs of payload, concatenated, without a loop."""
    sizes = np.maximum(lengths, 0).astype(np.int64)
    total_bytes = int(sizes.sum())
    if total_bytes == 0:
        return b""
    run_starts = np.cumsum(sizes) - sizes
    indexes = np.arange(total_bytes, dtype=np.int64) + np.repeat(positions - run_starts, sizes)
    return payload[indexes].tobytes()


def filter_batch(batch: RecordBatch, keep: np.ndarray) -> bytes:
    """A copy of batch holding only the records where keep is True, with their original
    offsets, the batch's span (last_offset_delta), term and producer fields. Keeping nothing
    gives a record-less batch, so the log's offsets stay contiguous."""
    arrays = batch.arrays()
    table = batch.table()
    keep = np.asarray(keep, dtype=bool)
    headers_lengths = table["headers_length"]
    values_end = int(np.maximum(arrays.value_lengths, 0).sum(dtype=np.int64)) + (
        int(arrays.value_positions[0]) if len(table) else 0
    )
    headers_positions = field_positions(headers_lengths) + values_end
    payload = np.frombuffer(arrays.payload, dtype=np.uint8)
    return assemble_batch(
        offset_deltas=table["offset_delta"][keep],
        timestamps_ms=arrays.timestamps_ms[keep],
        key_lengths=arrays.key_lengths[keep],
        value_lengths=arrays.value_lengths[keep],
        headers_lengths=headers_lengths[keep],
        payload_parts=[
            _gather(payload, arrays.key_positions[keep], arrays.key_lengths[keep]),
            _gather(payload, arrays.value_positions[keep], arrays.value_lengths[keep]),
            _gather(payload, headers_positions[keep], headers_lengths[keep]),
        ],
        last_offset_delta=batch.last_offset_delta,
        base_offset=batch.base_offset,
        leader_term=batch.leader_term,
        producer_id=batch.producer_id,
        producer_epoch=batch.producer_epoch,
        base_sequence=batch.base_sequence,
        attributes=batch.attributes,
    )


def _cleaned_batch(batch: RecordBatch, latest: np.ndarray, tombstone_horizon_ms: int, stats: CompactionStats):
    """The batch's bytes with superseded records (latest False) and expired tombstones removed
    (the very same buffer when nothing goes)."""
    arrays = batch.arrays()
    keep = latest.copy()
    tombstones = keep & (arrays.value_lengths < 0) & (arrays.key_lengths >= 0)
    expired_tombstones = tombstones & (arrays.timestamps_ms < tombstone_horizon_ms)
    keep &= ~expired_tombstones
    stats.tombstones_removed += int(expired_tombstones.sum())
    kept_tombstones = tombstones & ~expired_tombstones
    if kept_tombstones.any():
        oldest_ms = int(arrays.timestamps_ms[kept_tombstones].min())
        if stats.oldest_tombstone_ms is None or oldest_ms < stats.oldest_tombstone_ms:
            stats.oldest_tombstone_ms = oldest_ms
    stats.records_before += len(keep)
    stats.records_after += int(keep.sum())
    if bool(keep.all()):
        return batch.buffer
    return filter_batch(batch, keep)


def compact_segments(segments: list[Segment], delete_retention_ms: int, now_ms: int, index_interval_bytes: int):
    """Clean the given closed segments; returns (a Segment for each — the same object when
    nothing in it changed, else the swapped-in replacement — and stats)."""
    stats = CompactionStats()
    views = [segment.read(segment.base_offset, segment.size_bytes, None) for segment in segments]
    latest = latest_record_mask([batch for view in views for batch in iter_batches(view)])
    cursor = 0  # into latest: the second pass meets the records in the same order
    tombstone_horizon_ms = now_ms - delete_retention_ms
    cleaned_segments = []
    for segment, view in zip(segments, views):
        cleaned_path = segment.log_path + ".cleaned"
        cleaned = None  # opened at the first batch that changes; untouched segments are not rewritten
        try:
            position = 0
            for batch in iter_batches(view):
                count = batch.record_count
                if batch.is_control:
                    # Leader markers and Raft membership entries: the group needs every one of
                    # them as written (a membership entry lost here would change who votes).
                    cleaned_bytes = batch.buffer
                else:
                    cleaned_bytes = _cleaned_batch(batch, latest[cursor:cursor + count], tombstone_horizon_ms, stats)
                cursor += count
                if cleaned is None and cleaned_bytes is not batch.buffer:
                    cleaned = open(cleaned_path, "wb")
                    cleaned.write(view[:position])
                if cleaned is not None:
                    cleaned.write(cleaned_bytes)
                position += batch.batch_length
            if cleaned is not None:
                cleaned.flush()
                os.fsync(cleaned.fileno())
        except BaseException:
            if cleaned is not None:
                with contextlib.suppress(OSError):
                    cleaned.close()
                os.unlink(cleaned_path)  # a partial copy would keep a full disk full until the next open
            raise
        finally:
            if cleaned is not None:
                cleaned.close()
        stats.bytes_before += segment.size_bytes
        if cleaned is None:
            stats.bytes_after += segment.size_bytes
            cleaned_segments.append(segment)
            continue
        for index_path in (segment.offset_index.path, segment.time_index.path):
            os.unlink(index_path)
        os.replace(cleaned_path, segment.log_path)
        replacement = Segment.open(segment.directory, segment.base_offset, index_interval_bytes, recover=True)
        replacement.note_durable()  # fsynced above (power-loss tests, synced.py)
        stats.bytes_after += replacement.size_bytes
        cleaned_segments.append(replacement)
        stats.segments_cleaned += 1
    return cleaned_segments, stats
