"""The producer's per-partition accumulator: records land in preallocated buffers, sealed into batches.

send() copies a record's key and value into the open accumulator of its partition (a bytearray
slice assignment and a few numpy stores — no allocation per record). When the accumulator is
full, or its linger time is up, it is sealed: one call to build_batch_from_arrays turns the
buffers into a record batch, and the buffers are reused for the next one.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

import numpy as np

from distlog.log.batch import build_batch, build_batch_from_arrays


class RecordMetadata(NamedTuple):
    """Where a record landed, as Kafka clients report it."""

    topic: str
    partition: int
    offset: int  # -1 with acks=0: the broker never says
    timestamp_ms: int


class ProducerBatch:
    """One partition's records sent as one record batch; completes all its record futures at once."""

    __slots__ = ("topic", "partition", "record_count", "size_bytes", "data", "timestamps_ms", "callbacks",
                 "created_s", "attempts", "retry_at_s", "base_offset", "error", "done")

    def __init__(self, topic: str, partition: int):
        self.topic = topic
        self.partition = partition
        self.record_count = 0
        self.size_bytes = 0
        self.data = None
        self.timestamps_ms = None
        self.callbacks = None  # [(index, callback)] only when a caller gave one
        self.created_s = time.monotonic()
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
        self.done.set()
        if self.callbacks:
            for index, callback in self.callbacks:
                callback(error, None if error else self.metadata(index))


class FutureRecordMetadata:
    """What send() returns: .get(timeout) gives RecordMetadata or raises the delivery error."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: ProducerBatch, index: int):
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        return self._batch.done.is_set()

    def get(self, timeout: float | None = None) -> RecordMetadata:
        from distlog.client.errors import RequestTimedOutError

        if not self._batch.done.wait(timeout):
            raise RequestTimedOutError(f"record not acknowledged within {timeout} s (still in flight)")
        if self._batch.error is not None:
            raise self._batch.error
        return self._batch.metadata(self._index)

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
        self.values = bytearray(batch_size_bytes)
        self.keys = bytearray(batch_size_bytes)
        self.value_lengths = np.empty(max_records, dtype=np.int32)
        self.key_lengths = np.empty(max_records, dtype=np.int32)
        self.timestamps_ms = np.empty(max_records, dtype=np.int64)
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.value_end = 0
        self.key_end = 0
        self.headers = None  # {index: headers} only for records that have them
        self.opened_s = time.monotonic()
        self.batch = ProducerBatch(self.topic, self.partition)

    def has_room(self, key_bytes: int, value_bytes: int) -> bool:
        return (self.count < self.max_records and self.value_end + value_bytes <= self.capacity_bytes
                and self.key_end + key_bytes <= self.capacity_bytes)

    def append(self, value, key, timestamp_ms: int, headers) -> int:
        """Copy one record in (the caller checked has_room); returns its index in the batch."""
        index = self.count
        if index == 0:
            self.opened_s = time.monotonic()
        if value is None:
            self.value_lengths[index] = -1
        else:
            end = self.value_end + len(value)
            self.values[self.value_end:end] = value
            self.value_end = end
            self.value_lengths[index] = len(value)
        if key is None:
            self.key_lengths[index] = -1
        else:
            end = self.key_end + len(key)
            self.keys[self.key_end:end] = key
            self.key_end = end
            self.key_lengths[index] = len(key)
        self.timestamps_ms[index] = timestamp_ms
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
        timestamps = self.timestamps_ms[:n].copy()
        if self.headers:
            batch.data = self._build_with_headers(n, timestamps)
        else:
            batch.data = build_batch_from_arrays(
                np.frombuffer(self.values, dtype=np.uint8, count=self.value_end),
                np.frombuffer(self.keys, dtype=np.uint8, count=self.key_end),
                timestamps,
                value_lengths=self.value_lengths[:n],
                key_lengths=self.key_lengths[:n],
            )
        batch.record_count = n
        batch.timestamps_ms = timestamps
        self._reset()
        return batch

    def _build_with_headers(self, n: int, timestamps) -> bytes:
        values, keys = [], []
        value_pos = key_pos = 0
        for i in range(n):  # the rare path: headers need per-record msgpack anyway
            value_length, key_length = int(self.value_lengths[i]), int(self.key_lengths[i])
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
