"""Retention: which whole closed segments time and size limits delete (pure decision)."""

from __future__ import annotations

from distlog.log.config import LogConfig


def expired_segment_count(segments: list, config: LogConfig, now_ms: int) -> int:
    """How many segments, from the oldest, retention deletes. The last (active) segment is
    never counted. Time: a segment goes once its newest record is older than retention.ms.
    Size (as Kafka): a segment goes while the log would still hold >= retention.bytes without it.
    0 for a topic whose cleanup.policy is not 'delete': compaction owns those, and deleting
    a segment would take the only copy of its keys' latest values."""
    if config.cleanup_policy != "delete":
        return 0
    closed = segments[:-1]
    count = 0
    if config.retention_ms >= 0:
        oldest_kept_ms = now_ms - config.retention_ms
        while count < len(closed) and closed[count].max_timestamp_ms < oldest_kept_ms:
            count += 1
    if config.retention_bytes >= 0:
        remaining_bytes = sum(segment.size_bytes for segment in segments[count:])
        while count < len(closed) and remaining_bytes - closed[count].size_bytes >= config.retention_bytes:
            remaining_bytes -= closed[count].size_bytes
            count += 1
    return count
