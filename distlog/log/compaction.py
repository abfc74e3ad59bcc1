"""Log compaction: keep the last record per key in the closed segments, drop old tombstones,
and swap each cleaned segment in atomically.

Decisions, and why:
- Only closed segments are read and rewritten; the active segment takes appends.
- A record with a null key cannot be superseded, so it is always kept.
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
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from distlog.log.batch import RecordBatch, filter_batch, iter_batches
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


def _keys_of(batch: RecordBatch) -> tuple[list, np.ndarray]:
    """(keys as bytes or None, record offsets) of one batch."""
    arrays = batch.arrays()
    payload = arrays.payload
    keys = [
        None if length < 0 else bytes(payload[position : position + length])
        for position, length in zip(arrays.key_positions.tolist(), arrays.key_lengths.tolist())
    ]
    return keys, arrays.offsets


def latest_offsets_by_key(segments: list[Segment]) -> dict[bytes, int]:
    """The offset of the last record of every non-null key in segments."""
    latest: dict[bytes, int] = {}
    for segment in segments:
        for batch in iter_batches(segment.read(segment.base_offset, segment.size_bytes, None)):
            keys, offsets = _keys_of(batch)
            for key, offset in zip(keys, offsets.tolist()):
                if key is not None:
                    latest[key] = offset
    return latest


def _cleaned_batch(batch: RecordBatch, latest: dict, tombstone_horizon_ms: int, stats: CompactionStats):
    """The batch's bytes with superseded records and expired tombstones removed (the very
    same buffer when nothing goes)."""
    keys, offsets = _keys_of(batch)
    arrays = batch.arrays()
    keep = np.fromiter(
        (key is None or latest[key] == offset for key, offset in zip(keys, offsets.tolist())),
        dtype=bool,
        count=len(keys),
    )
    tombstones = keep & (arrays.value_lengths < 0) & np.array([key is not None for key in keys], dtype=bool)
    expired_tombstones = tombstones & (arrays.timestamps_ms < tombstone_horizon_ms)
    keep &= ~expired_tombstones
    stats.tombstones_removed += int(expired_tombstones.sum())
    kept_tombstones = tombstones & ~expired_tombstones
    if kept_tombstones.any():
        oldest_ms = int(arrays.timestamps_ms[kept_tombstones].min())
        if stats.oldest_tombstone_ms is None or oldest_ms < stats.oldest_tombstone_ms:
            stats.oldest_tombstone_ms = oldest_ms
    stats.records_before += len(keys)
    stats.records_after += int(keep.sum())
    if bool(keep.all()):
        return batch.buffer
    return filter_batch(batch, keep)


def compact_segments(segments: list[Segment], delete_retention_ms: int, now_ms: int, index_interval_bytes: int):
    """Clean the given closed segments; returns (a Segment for each — the same object when
    nothing in it changed, else the swapped-in replacement — and stats)."""
    stats = CompactionStats()
    latest = latest_offsets_by_key(segments)
    tombstone_horizon_ms = now_ms - delete_retention_ms
    cleaned_segments = []
    for segment in segments:
        view = segment.read(segment.base_offset, segment.size_bytes, None)
        cleaned_path = segment.log_path + ".cleaned"
        cleaned = None  # opened at the first batch that changes; untouched segments are not rewritten
        try:
            position = 0
            for batch in iter_batches(view):
                cleaned_bytes = _cleaned_batch(batch, latest, tombstone_horizon_ms, stats)
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
        stats.bytes_after += replacement.size_bytes
        cleaned_segments.append(replacement)
        stats.segments_cleaned += 1
    return cleaned_segments, stats
