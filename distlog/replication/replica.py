"""A partition replica: the object the broker calls for one partition's appends, reads and offsets.

Today a partition has exactly one replica, so the leader is this broker and the high watermark is
the log end offset (the broker's loop flushes, per the flush policy, before any reply leaves, so
no one sees a record that a crash could take back under flush.policy=always). This class is the
seam where the Raft group plugs in: `append_as_leader` becomes a Raft proposal, the high
watermark becomes the commit index, and `is_leader` comes from the Raft role.
"""

from __future__ import annotations

from distlog.log.batch import ATTR_CONTROL, HEADER_SIZE, CorruptBatchError, peek_header
from distlog.log.partition_log import PartitionLog
from distlog.replication.producer_state import ProducerStateTable, batch_info

# How much of the log's tail a replica reads to rebuild its producer table (the first time an
# idempotent producer writes after the partition opened): the batches a producer could still be
# retrying sit at the very end, and this bounds the pause it costs.
PRODUCER_STATE_SCAN_BYTES = 16 * 1024 * 1024


class ControlBatchRefusedError(ValueError):
    """A produce carried a control batch: only the system writes those (see ATTR_CONTROL)."""


class PartitionReplica:
    """One topic-partition's replica on this broker."""

    def __init__(self, topic: str, partition: int, log: PartitionLog):
        self.topic = topic
        self.partition = partition
        self.log = log
        self.leader_epoch = 0
        self._producers = None  # ProducerStateTable, rebuilt on the first idempotent append

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
        """Append the batches in `records` (offsets assigned here); returns (base_offset, last_offset).

        A batch of an idempotent producer that this partition already holds is not written
        again: its first offsets are returned, as if it had just been appended."""
        view = memoryview(records).cast("B")
        headers = _headers_of(view)
        if any(header.attributes & ATTR_CONTROL for _, header in headers):
            raise ControlBatchRefusedError(
                "a batch in this produce is flagged as a control batch (attributes bit 5); only brokers "
                "write those: clear the bit"
            )
        if all(header.producer_id < 0 for _, header in headers):
            return self.log.append(view, assign_offsets=True, leader_term=self.leader_epoch)
        producers = self.producers
        first_offset = last_offset = None
        for position, header in headers:  # one batch at a time: any of them may be a duplicate
            info = batch_info(header)
            earlier = producers.check(info) if info is not None else None
            if earlier is not None:
                base_offset, batch_last_offset = earlier.base_offset, earlier.last_offset
            else:
                base_offset, batch_last_offset = self.log.append(
                    view[position:position + header.batch_length], assign_offsets=True, leader_term=self.leader_epoch)
                if info is not None:
                    producers.record(info._replace(base_offset=base_offset, last_offset=batch_last_offset))
            first_offset = base_offset if first_offset is None else first_offset
            last_offset = batch_last_offset
        return first_offset, last_offset

    @property
    def producers(self) -> ProducerStateTable:
        """The idempotent producers' table, read from the log's tail the first time it is needed:
        a partition only idempotent producers never wrote to costs nothing at startup."""
        if self._producers is None:
            self._producers = ProducerStateTable()
            self._rebuild_producer_state()
        return self._producers

    def _rebuild_producer_state(self) -> None:
        """Read the producer fields of the batches at the tail of the log (see PRODUCER_STATE_SCAN_BYTES)."""
        offset = self.log.tail_start_offset(PRODUCER_STATE_SCAN_BYTES)
        while offset < self.log.log_end_offset:
            view = self.log.read(offset, 1024 * 1024)
            if not len(view):
                return
            headers = _headers_of(view, allow_cut_off=True)
            if not headers:
                return
            for _, header in headers:
                info = batch_info(header)
                if info is not None:
                    self._producers.record(info)
                offset = header.last_offset + 1

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


def _headers_of(view: memoryview, allow_cut_off: bool = False) -> list:
    """(position, header) of every batch in view; only the fixed headers are read (the log's
    append verifies each batch in full)."""
    headers, position = [], 0
    while position + HEADER_SIZE <= len(view):
        header = peek_header(view, position)
        if position + header.batch_length > len(view):
            break
        headers.append((position, header))
        position += header.batch_length
    if position != len(view) and not allow_cut_off:
        raise CorruptBatchError(f"the produce's records end in {len(view) - position} bytes that are not a whole batch")
    return headers
