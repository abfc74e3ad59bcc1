"""The producer's record accumulator: records land in preallocated per-partition buffers and are
sealed into record batches that the sender thread ships.

send() copies a record's key and value into the open buffers of its partition (a bytearray
slice assignment and a few list appends — no allocation per record). When a partition's buffers
are full, or its linger time is up, they are sealed: one call to build_batch_from_arrays turns
them into a record batch, and the buffers are reused for the next one. RecordAccumulator is the
one object user threads and the sender thread share; its lock guards everything in it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import NamedTuple

import numpy as np

from distlog.client.errors import BufferFullError, ProducerClosedError, RequestTimedOutError
from distlog.log.batch import ROW_SIZE, build_batch, build_batch_from_arrays

_log = logging.getLogger(__name__)


class RecordMetadata(NamedTuple):
    """Where a record landed, as Kafka clients report it."""

    topic: str
    partition: int
    offset: int  # -1 with acks=0: the broker never says
    timestamp_ms: int


class ProducerBatch:
    """One partition's records sent as one record batch; completes all its record futures at once."""

    __slots__ = ("topic", "partition", "record_count", "size_bytes", "data", "timestamps_ms", "callbacks",
                 "created_s", "completed_s", "attempts", "retry_at_s", "base_offset", "error", "done")

    def __init__(self, topic: str, partition: int):
        self.topic = topic
        self.partition = partition
        self.record_count = 0
        self.size_bytes = 0
        self.data = None
        self.timestamps_ms = None
        self.callbacks = None  # [(index, callback)] only when a caller gave one
        self.created_s = time.monotonic()
        self.completed_s = None
        self.attempts = 0
        self.retry_at_s = 0.0
        self.base_offset = -1
        self.error = None
        self.done = threading.Event()

    def metadata(self, index: int) -> RecordMetadata:
        offset = self.base_offset + index if self.base_offset >= 0 else -1
        return RecordMetadata(self.topic, self.partition, offset, int(self.timestamps_ms[index]))

    def complete(self, base_offset: int = -1, error: Exception | None = None) -> None:
        """Resolve every record's future (then run callbacks, confluent-style: callback(err, metadata))."""
        self.base_offset = base_offset
        self.error = error
        self.completed_s = time.monotonic()
        self.done.set()
        if self.callbacks:
            for index, callback in self.callbacks:
                try:
                    callback(error, None if error else self.metadata(index))
                except Exception:  # user code runs on the sender thread: a bug there must not kill it
                    _log.exception("a delivery callback for %s-%d raised", self.topic, self.partition)


class FutureRecordMetadata:
    """What send() returns: .get(timeout) gives RecordMetadata or raises the delivery error."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: ProducerBatch, index: int):
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        return self._batch.done.is_set()

    def get(self, timeout: float | None = None) -> RecordMetadata:
        if not self._batch.done.wait(timeout):
            raise RequestTimedOutError(f"record not acknowledged within {timeout} s (still in flight)")
        if self._batch.error is not None:
            raise self._batch.error
        return self._batch.metadata(self._index)

    @property
    def batch_latency_s(self) -> float | None:
        """Seconds from the first record of this record's batch being queued to its acknowledgement."""
        batch = self._batch
        return None if batch.completed_s is None else batch.completed_s - batch.created_s

    def exception(self, timeout: float | None = None):
        self._batch.done.wait(timeout)
        return self._batch.error


class PartitionAccumulator:
    """Preallocated buffers for the open batch of one partition."""

    def __init__(self, topic: str, partition: int, batch_size_bytes: int, max_records: int):
        self.topic = topic
        self.partition = partition
        self.capacity_bytes = batch_size_bytes
        self.max_records = max_records
        # Keys and values are copied into these two buffers, allocated once per partition and
        # reused for every batch; numpy views them in place when the batch is sealed.
        self.values = bytearray(batch_size_bytes)
        self.keys = bytearray(batch_size_bytes)
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.value_end = 0
        self.key_end = 0
        # Per-record lengths and timestamps: list.append is cheaper per record than a numpy
        # store, and the lists become numpy columns in one call at seal time.
        self.value_lengths = []
        self.key_lengths = []
        self.timestamps_ms = []
        self.headers = None  # {index: headers} only for records that have them
        self.opened_s = time.monotonic()
        self.batch = ProducerBatch(self.topic, self.partition)

    def try_append(self, value, key, timestamp_ms: int, headers) -> int:
        """Copy one record in and return its index in the batch, or -1 if it does not fit."""
        index = self.count
        value_start, key_start = self.value_end, self.key_end
        value_length = -1 if value is None else len(value)
        key_length = -1 if key is None else len(key)
        value_end = value_start + value_length if value_length > 0 else value_start
        key_end = key_start + key_length if key_length > 0 else key_start
        if index >= self.max_records or value_end > self.capacity_bytes or key_end > self.capacity_bytes:
            return -1
        if index == 0:
            self.opened_s = self.batch.created_s = time.monotonic()
        if value_length > 0:
            self.values[value_start:value_end] = value
            self.value_end = value_end
        if key_length > 0:
            self.keys[key_start:key_end] = key
            self.key_end = key_end
        self.value_lengths.append(value_length)
        self.key_lengths.append(key_length)
        self.timestamps_ms.append(timestamp_ms)
        if headers:
            if self.headers is None:
                self.headers = {}
            self.headers[index] = headers
        self.count = index + 1
        return index

    def seal(self) -> ProducerBatch:
        """Turn the buffered records into a record batch and start a fresh one in the same buffers."""
        n = self.count
        batch = self.batch
        timestamps = np.array(self.timestamps_ms, dtype=np.int64)
        value_lengths = np.array(self.value_lengths, dtype=np.int32)
        key_lengths = np.array(self.key_lengths, dtype=np.int32)
        if self.headers:
            batch.data = self._build_with_headers(n, timestamps, value_lengths, key_lengths)
        else:
            batch.data = build_batch_from_arrays(
                np.frombuffer(self.values, dtype=np.uint8, count=self.value_end),
                np.frombuffer(self.keys, dtype=np.uint8, count=self.key_end),
                timestamps,
                value_lengths=value_lengths,
                key_lengths=key_lengths,
            )
        batch.record_count = n
        batch.timestamps_ms = timestamps
        batch.size_bytes = self.key_end + self.value_end + n * ROW_SIZE  # what append() reserved for it
        self._reset()
        return batch

    def _build_with_headers(self, n: int, timestamps, value_lengths, key_lengths) -> bytes:
        values, keys = [], []
        value_pos = key_pos = 0
        for i in range(n):  # the rare path: headers need per-record msgpack anyway
            value_length, key_length = int(value_lengths[i]), int(key_lengths[i])
            values.append(None if value_length < 0 else bytes(self.values[value_pos:value_pos + value_length]))
            keys.append(None if key_length < 0 else bytes(self.keys[key_pos:key_pos + key_length]))
            value_pos += max(value_length, 0)
            key_pos += max(key_length, 0)
        headers = [self.headers.get(i) for i in range(n)]
        return build_batch(values, keys, timestamps.tolist(), headers)


def build_single_batch(topic: str, partition: int, value, key, timestamp_ms: int, headers) -> ProducerBatch:
    """A batch of one record too big for the accumulator buffers."""
    batch = ProducerBatch(topic, partition)
    batch.data = build_batch([value], [key], [timestamp_ms], [headers] if headers else None)
    batch.record_count = 1
    batch.timestamps_ms = np.array([timestamp_ms], dtype=np.int64)
    return batch


class RecordAccumulator:
    """Open batches of every partition, the queue of sealed ones, and the buffer-memory budget."""

    def __init__(self, batch_size: int, buffer_memory: int, max_block_s: float, linger_s: float,
                 on_sealed=None):
        self.batch_size = batch_size
        self.buffer_memory = buffer_memory
        self.max_block_s = max_block_s
        self.linger_s = linger_s
        # Row-table sizing: a batch of tiny records is sealed by count before it fills its bytes.
        self.max_records = max(64, batch_size // 16)
        self.on_sealed = on_sealed  # called (lock held) with (topic, partition) when a batch seals
        self.lock = threading.Lock()
        self._space_freed = threading.Condition(self.lock)
        self._partitions: dict = {}
        self._sealed: deque = deque()
        self._buffered_bytes = 0
        self._unfinished: set = set()  # sealed batches not yet acknowledged or failed
        self.closed = False
        self.aborted = False  # closed, and the sender fails whatever is undelivered instead of sending it

    def append(self, topic: str, partition: int, value, key, timestamp_ms: int, headers, callback):
        """Add one record; returns (future, wake) where wake says the sender should look now
        (a new batch opened, so a linger clock started, or one was sealed)."""
        size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0) + ROW_SIZE
        with self.lock:
            if self._buffered_bytes + size > self.buffer_memory or self.closed:
                self._wait_for_space(size)
            self._buffered_bytes += size
            buffers = self._partitions.get((topic, partition)) or self._open(topic, partition)
            index = buffers.try_append(value, key, timestamp_ms, headers)
            wake = index <= 0
            if index < 0:
                self._seal(buffers)
                index = buffers.try_append(value, key, timestamp_ms, headers)
            if index < 0:  # bigger than a whole batch: it travels alone
                batch = build_single_batch(topic, partition, value, key, timestamp_ms, headers)
                batch.size_bytes = size
                self._enqueue(batch)
                index = 0
            else:
                batch = buffers.batch
            if callback is not None:
                if batch.callbacks is None:
                    batch.callbacks = []
                batch.callbacks.append((index, callback))
        return FutureRecordMetadata(batch, index), wake

    def append_sealed(self, batch: ProducerBatch) -> FutureRecordMetadata:
        """Queue a batch built elsewhere (send_batch), once its bytes fit in the budget."""
        with self.lock:
            self._wait_for_space(batch.size_bytes)
            self._buffered_bytes += batch.size_bytes
            self._enqueue(batch)
        return FutureRecordMetadata(batch, 0)

    def drain(self, now_s: float) -> list:
        """Seal what lingered long enough (everything once closing); return all sealed."""
        with self.lock:
            for buffers in self._partitions.values():
                if buffers.count and (self.closed or now_s - buffers.opened_s >= self.linger_s):
                    self._seal(buffers)
            drained = list(self._sealed)
            self._sealed.clear()
        return drained

    def seconds_until_ready(self, now_s: float) -> float:
        """How long the sender may sleep before some batch should be sealed (capped at 0.1 s)."""
        wait_s = 0.1
        with self.lock:
            if self._sealed:
                return 0.0
            for buffers in self._partitions.values():
                if buffers.count:
                    wait_s = min(wait_s, max(0.0, buffers.opened_s + self.linger_s - now_s))
        return wait_s

    def is_empty(self) -> bool:
        with self.lock:
            return not self._sealed and not any(b.count for b in self._partitions.values())

    def release(self, batch: ProducerBatch) -> None:
        """A batch is finished (acknowledged or failed): give back its memory."""
        with self.lock:
            self._buffered_bytes -= batch.size_bytes
            self._unfinished.discard(batch)
            self._space_freed.notify_all()

    def seal_all(self) -> list:
        """Seal every open batch now, whatever its linger time, and return every batch not yet
        finished: what a flush waits for. Records still in open buffers count too, and records
        other threads send after this call do not, so a flush ends even under a steady stream."""
        with self.lock:
            for buffers in self._partitions.values():
                self._seal(buffers)
            return list(self._unfinished)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._space_freed.notify_all()

    def abort(self) -> None:
        """Close, and have the sender fail every undelivered batch now rather than keep trying."""
        with self.lock:
            self.closed = self.aborted = True
            self._space_freed.notify_all()

    def _open(self, topic: str, partition: int) -> PartitionAccumulator:
        buffers = self._partitions[(topic, partition)] = PartitionAccumulator(topic, partition, self.batch_size, self.max_records)
        return buffers

    def _wait_for_space(self, size: int) -> None:
        deadline = None
        while not self.closed and self._buffered_bytes + size > self.buffer_memory and self._buffered_bytes > 0:
            deadline = deadline or time.monotonic() + self.max_block_s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BufferFullError(
                    f"producer buffer full ({self._buffered_bytes} of buffer_memory={self.buffer_memory} bytes) for "
                    f"max_block_ms={self.max_block_s * 1000:.0f}: the brokers are not keeping up or cannot be reached"
                )
            self._space_freed.wait(remaining)
        if self.closed:
            raise ProducerClosedError()

    def _seal(self, buffers: PartitionAccumulator) -> None:
        if buffers.count == 0:
            return
        self._enqueue(buffers.seal())
        if self.on_sealed is not None:
            self.on_sealed(buffers.topic, buffers.partition)

    def _enqueue(self, batch: ProducerBatch) -> None:
        self._sealed.append(batch)
        self._unfinished.add(batch)
