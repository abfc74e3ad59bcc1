"""A partition replica: the object the broker calls for one partition's appends, reads and offsets.

Today a partition has exactly one replica, so the leader is this broker and the high watermark is
the log end offset (the broker's loop flushes, per the flush policy, before any reply leaves, so
no one sees a record that a crash could take back under flush.policy=always). This class is the
seam where the Raft group plugs in: `append_as_leader` becomes a Raft proposal, the high
watermark becomes the commit index, and `is_leader` comes from the Raft role.
"""

from __future__ import annotations

from distlog.log.batch import iter_batches
from distlog.log.partition_log import PartitionLog


class ControlBatchRefusedError(ValueError):
    """A produce carried a control batch: only the system writes those (see ATTR_CONTROL)."""


class PartitionReplica:
    """One topic-partition's replica on this broker."""

    def __init__(self, topic: str, partition: int, log: PartitionLog):
        self.topic = topic
        self.partition = partition
        self.log = log
        self.leader_epoch = 0

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    def append_as_leader(self, records) -> tuple:
        """Append the batches in `records` (offsets assigned here); returns (base_offset, last_offset)."""
        for batch in iter_batches(records, verify=False):  # one header look per batch; append verifies
            if batch.is_control:
                raise ControlBatchRefusedError(
                    "a batch in this produce is flagged as a control batch (attributes bit 5); only brokers "
                    "write those: clear the bit"
                )
        return self.log.append(records, assign_offsets=True, leader_term=self.leader_epoch)

    def read(self, offset: int, max_bytes: int):
        """Whole batches from `offset`, never past the high watermark."""
        return self.log.read(offset, max_bytes, max_offset=self.high_watermark)

    def offset_for_timestamp(self, timestamp_ms: int):
        return self.log.offset_for_timestamp(timestamp_ms)

    def maybe_flush(self, now_ms: int) -> bool:
        return self.log.maybe_flush(now_ms)

    def run_housekeeping(self, now_ms: int) -> None:
        """Retention and compaction, called now and then from the broker loop."""
        self.log.apply_retention(now_ms)
        if self.log.config.cleanup_policy == "compact":
            self.log.compact(now_ms)

    def close(self) -> None:
        self.log.close()

    def delete(self) -> None:
        self.log.delete()
