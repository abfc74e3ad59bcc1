"""Producer: send() records and get futures; batching, shipping and retries happen in the background.

    producer = Producer("tcp://127.0.0.1:9092", acks="all")
    future = producer.send("orders", b"value", key=b"customer-7")
    print(future.get(timeout=10))          # RecordMetadata(topic, partition, offset, timestamp_ms)
    producer.send_batch("orders", values)  # many records in one call (a list or a uint8 array)
    producer.close()                       # flushes first

Any number of user threads may call send(). Records go into the RecordAccumulator; the sender
thread (distlog/client/sender.py) owns every socket and ships sealed batches. Delivery semantics
are Kafka's. With acks='all' the producer is idempotent by default (enable_idempotence): every
batch carries a producer id and sequence numbers, so a retry of a batch whose acknowledgement
was lost is recognised by the leader instead of written twice, and a partition's batches land
in the order they were sent (distlog/client/sequencer.py). Without it (acks=0 or 1, or
enable_idempotence=False) a retried batch may be written twice, and with more than one request
in flight a retry can reorder batches of one partition.

batch_size defaults to 1 MB (Kafka's is 16 KiB), just under a default topic's max.message.bytes
(1 MiB + 12). A batch only grows that large while its partition's earlier batches are in
flight (or with send_batch), so light traffic still leaves after linger_ms; under load one
partition's throughput is bounded by max_in_flight batches per round trip, and at RF=3 a
round trip is two fsyncs deep: 256 KiB batches held one partition to ~470k records/s of 100 B,
1 MB batches reached ~820k. For the same reason max_in_flight defaults to 10 (Kafka's is 5;
an idempotent producer may use up to 16, the brokers' dedup window).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping

import numpy as np

from distlog.client.accumulator import FutureRecordMetadata, ProducerBatch, RecordAccumulator
from distlog.client.cluster import ClusterView
from distlog.client.errors import ProducerClosedError, RequestTimedOutError
from distlog.client.partitioner import StickyPartitioner, partition_for_key, partitions_for_keys
from distlog.client.sender import PartitionCounts, Sender, SenderSettings, WakePipe
from distlog.client.sequencer import MAX_IN_FLIGHT
from distlog.log.batch import HEADER_SIZE, ROW_SIZE, peek_header
from distlog.log.batch_builder import build_batch, build_batch_from_arrays
from distlog.protocol.errors import DistlogError, ErrorCode

ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}
# close() without a timeout: how long the sender may take to exit once everything is delivered.
SENDER_EXIT_WAIT_S = 30.0
# close() past its timeout: how long to wait for the sender to fail what is left and exit.
SENDER_ABORT_WAIT_S = 1.0


_time_ns = time.time_ns


def _no_such_partition(topic: str, partition: int, partition_count: int) -> DistlogError:
    return DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        f"topic '{topic}' has partitions 0..{partition_count - 1}, not {partition}"
                        " (a partition number within that range; `distlog topic describe` lists them)")


def _as_bytes(data, what: str):
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, str or None, got {type(data).__name__} (serialize it first)")


class Producer:
    """Sends records to distlog; behaves like kafka-python's KafkaProducer / confluent's Producer."""

    def __init__(
        self,
        bootstrap,
        *,
        acks="all",
        linger_ms: float = 5,
        batch_size: int = 1_000_000,
        buffer_memory: int = 64 * 1024 * 1024,
        max_block_ms: float = 60_000,
        retries: int = 2**31 - 1,
        retry_backoff_ms: float = 100,
        request_timeout_ms: float = 30_000,
        delivery_timeout_ms: float = 120_000,
        max_in_flight: int = 10,
        max_request_bytes: int = 4 * 1024 * 1024,
        enable_idempotence: bool | None = None,
        metadata_max_age_ms: float = 300_000,
        shm: bool | None = None,
    ):
        if acks not in ACKS:
            raise ValueError(f"acks must be 'all', 1 or 0, got {acks!r}")
        # As in Kafka 3: on by default with acks='all', off otherwise unless asked for.
        if enable_idempotence is None:
            enable_idempotence = ACKS[acks] == -1
        elif enable_idempotence and ACKS[acks] != -1:
            raise ValueError(f"enable_idempotence=True needs acks='all' (got acks={acks!r}), as in Kafka: with "
                             "fewer acknowledgements a leader change can lose batches the sequence numbers count on")
        if enable_idempotence and not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"an idempotent producer keeps at most {MAX_IN_FLIGHT} requests in flight (the "
                             f"brokers remember that many batches per producer), got max_in_flight={max_in_flight}")
        self.idempotent = enable_idempotence
        if batch_size < 1024:
            raise ValueError(f"batch_size must be at least 1024 bytes, got {batch_size}")
        self.batch_size = batch_size
        self.max_block_s = max_block_ms / 1000
        self._bootstrap = bootstrap
        self.request_timeout_s = request_timeout_ms / 1000
        self._cluster = ClusterView(bootstrap, request_timeout_s=self.request_timeout_s)
        # shm: batches to same-host brokers go through a shared-memory ring (opt-in; env DISTLOG_SHM=1).
        self.shm = os.environ.get("DISTLOG_SHM") == "1" if shm is None else bool(shm)
        self._cluster.shm = self.shm
        self._sticky = StickyPartitioner()
        self._partition_counts = PartitionCounts()
        self._accumulator = RecordAccumulator(batch_size, buffer_memory, self.max_block_s, linger_ms / 1000,
                                              on_sealed=self._on_batch_sealed)
        self._append = self._accumulator.append
        self._wake_pipe = WakePipe()
        settings = SenderSettings(ACKS[acks], retries, retry_backoff_ms / 1000, request_timeout_ms / 1000,
                                  delivery_timeout_ms / 1000, max_in_flight, max_request_bytes, enable_idempotence,
                                  metadata_max_age_ms / 1000)
        sender = Sender(self._accumulator, self._cluster, settings, self._partition_counts, self._wake_pipe)
        self._sender_counters = sender.counters
        self._sender = threading.Thread(target=sender.run, name="distlog-producer-sender", daemon=True)
        self._sender.start()
        self._closed = False

    # ----------------------------------------------------------------------------- user API

    def send(self, topic: str, value=None, key=None, partition: int | None = None, headers=None,
             timestamp_ms: int | None = None, callback=None) -> FutureRecordMetadata:
        """Queue one record; returns a future. `callback(error, metadata)` runs on delivery (sender thread).

        Blocks up to max_block_ms for metadata or buffer space, then raises BufferFullError /
        RequestTimedOutError / DistlogError(UNKNOWN_TOPIC_OR_PARTITION)."""
        # This runs once per record: every line here is on the hot path, so the common cases
        # (bytes already, no headers, a known topic) take no call they can avoid.
        if value is not None and type(value) is not bytes:
            value = _as_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = _as_bytes(key, "key")
        if headers:
            # A dict, as confluent-kafka takes, or (name, value) pairs: iterating a dict itself
            # would unpack each name's characters as a pair.
            pairs = headers.items() if isinstance(headers, Mapping) else headers
            headers = [(str(name), _as_bytes(data, "header value") or b"") for name, data in pairs]
        if timestamp_ms is None:
            timestamp_ms = _time_ns() // 1_000_000
        partition_count = self._partition_counts.counts.get(topic) or self._partition_count(topic)
        if partition is None:
            partition = partition_for_key(key, partition_count) if key is not None else self._sticky.partition(topic, partition_count)
        elif not 0 <= partition < partition_count:
            self._check_partition_again(topic, partition)
        future, wake = self._append(topic, partition, value, key, timestamp_ms, headers, callback)
        if wake:
            self._wake_pipe.wake()
        return future

    def send_batch(self, topic: str, values, keys=None, partition: int | None = None,
                   timestamps_ms=None) -> list:
        """Send many records in one call; returns one future per record batch, each resolving to
        the RecordMetadata of the batch's first record (the rest follow at consecutive offsets).

        values: a list of bytes, or a uint8 array (n, width). keys likewise (None = no keys).
        timestamps_ms: None (now), one int for every record, or one per record.
        Without `partition`, keyed records are spread by murmur2 (vectorized for arrays), unkeyed
        ones go to the sticky partition. Batches are cut at batch_size bytes."""
        n = len(values)
        if n == 0:
            return []
        if timestamps_ms is not None and np.ndim(timestamps_ms) > 0:
            # per record: each batch below takes its own rows' timestamps
            timestamps_ms = np.asarray(timestamps_ms, dtype=np.int64)
            if timestamps_ms.shape != (n,):
                raise ValueError(f"timestamps_ms has {timestamps_ms.size} entries for {n} records")
        partition_count = self._partition_count(topic)
        if keys is not None and not isinstance(keys, np.ndarray):
            keys = [_as_bytes(k, "key") for k in keys]  # once, for partitioning and for the batches
        if partition is not None:
            if not 0 <= partition < partition_count:
                self._check_partition_again(topic, partition)
            targets = np.full(n, partition, dtype=np.int64)
        elif keys is None:
            targets = np.full(n, self._sticky.partition(topic, partition_count), dtype=np.int64)
        elif isinstance(keys, np.ndarray):
            targets = partitions_for_keys(keys, partition_count)
        else:
            targets = np.array([partition_for_key(k, partition_count) for k in keys], dtype=np.int64)
        futures = []
        for target in np.unique(targets):
            rows = np.flatnonzero(targets == target)
            for data, count in self._batches_for_rows(values, keys, rows, timestamps_ms):
                batch = ProducerBatch(topic, int(target))
                batch.data, batch.record_count, batch.size_bytes = data, count, len(data)
                batch.timestamps_ms = np.array([peek_header(data).first_timestamp_ms], dtype=np.int64)
                futures.append(self._accumulator.append_sealed(batch))
        self._wake()
        return futures

    def _batches_for_rows(self, values, keys, rows, timestamps_ms):
        """Yield (batch bytes, record count) for `rows` of values/keys, at most batch_size each."""
        as_arrays = isinstance(values, np.ndarray)
        if as_arrays:
            record_bytes = values.shape[1] + (keys.shape[1] if isinstance(keys, np.ndarray) else 0) + ROW_SIZE
        else:
            record_bytes = max(1, int(np.mean([len(values[i] or b"") for i in rows[:100]]))) + ROW_SIZE
        per_batch = max(1, (self.batch_size - HEADER_SIZE) // record_bytes)
        per_record = isinstance(timestamps_ms, np.ndarray)
        # Rows in one run (one partition's records, the common case) are sliced, not gathered:
        # a slice of the caller's array is a view, where fancy indexing copies every value.
        contiguous = as_arrays and len(rows) > 0 and int(rows[-1]) - int(rows[0]) + 1 == len(rows)
        for start in range(0, len(rows), per_batch):
            chunk = rows[start:start + per_batch]
            count = len(chunk)
            if contiguous:
                chunk = slice(int(chunk[0]), int(chunk[0]) + count)
            chunk_timestamps_ms = timestamps_ms[chunk] if per_record else timestamps_ms
            if as_arrays:
                key_chunk = keys[chunk] if isinstance(keys, np.ndarray) else None
                yield build_batch_from_arrays(values[chunk], key_chunk, chunk_timestamps_ms, writable=True), count
            else:
                key_chunk = [keys[i] for i in chunk] if keys is not None else None
                if chunk_timestamps_ms is not None:
                    chunk_timestamps_ms = np.broadcast_to(chunk_timestamps_ms, count).tolist()
                yield build_batch([_as_bytes(values[i], "value") for i in chunk], key_chunk, chunk_timestamps_ms,
                                  writable=True), count

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered (without waiting out linger_ms) and wait until every record
        sent so far is acknowledged or failed; RequestTimedOutError after `timeout` seconds."""
        pending = self._accumulator.seal_all()
        self._wake()  # after sealing, so the sender cannot go back to sleep without seeing them
        deadline_s = None if timeout is None else time.monotonic() + timeout
        for batch in pending:
            remaining_s = None if deadline_s is None else max(0.0, deadline_s - time.monotonic())
            if not batch.done.wait(remaining_s):
                unfinished = sum(not b.done.is_set() for b in pending)
                raise RequestTimedOutError(f"flush did not finish within {timeout} s ({unfinished} batches pending)")

    def metrics(self) -> dict:
        """Counters since the producer was made, in the spirit of Kafka's producer metrics:
        records_sent / records_failed (acknowledged / failed for good), batches_sent, bytes_sent
        (batch bytes acknowledged), requests_sent, retries (batches sent again),
        requests_throttled (refused by a broker at its limits, THROTTLING, and retried), and now:
        buffer_bytes_used (records waiting in the accumulator) and batch_size_avg."""
        counters = dict(self._sender_counters)
        counters["buffer_bytes_used"] = self._accumulator.buffered_bytes
        counters["batch_size_avg"] = counters["bytes_sent"] / counters["batches_sent"] if counters["batches_sent"] else 0.0
        return counters

    def partitions_for(self, topic: str) -> list:
        """The topic's partition numbers (kafka-python's KafkaProducer.partitions_for), looked up
        within max_block_ms when this producer has not sent to it yet."""
        return list(range(self._partition_count(topic)))

    def list_topics(self, timeout: float | None = None) -> list:
        """Every topic's name, internal ones left out (confluent-kafka's Producer.list_topics(),
        as names). Asked on a connection of its own: the producer's sockets belong to its sender
        thread, and ZeroMQ sockets are not to be shared between threads."""
        if self._closed:
            raise ProducerClosedError()
        lookup = ClusterView(self._bootstrap, request_timeout_s=self.request_timeout_s)
        try:
            lookup.refresh(timeout_s=self.request_timeout_s if timeout is None else timeout)
            return sorted(name for name in lookup.topics if not name.startswith("__"))
        finally:
            lookup.close()

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender thread and close sockets. Safe to call twice.

        As Kafka's close(timeout): records not delivered within `timeout` seconds fail with
        ProducerClosedError instead of being retried on, and close() itself does not raise."""
        if self._closed:
            return
        self._closed = True
        deadline_s = None if timeout is None else time.monotonic() + timeout
        try:
            if not self._accumulator.closed:
                self.flush(timeout)
        except RequestTimedOutError:
            pass  # what is left is failed below
        self._accumulator.close()
        self._wake()
        self._sender.join(SENDER_EXIT_WAIT_S if deadline_s is None else max(0.0, deadline_s - time.monotonic()))
        if self._sender.is_alive():
            self._accumulator.abort()
            self._wake()
            # Usually immediate; longer only while the sender sits in a blocking metadata call,
            # after which it fails the rest and closes its sockets on its own.
            self._sender.join(SENDER_ABORT_WAIT_S)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------------------ internals

    def _wake(self) -> None:
        self._wake_pipe.wake()

    def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.counts.get(topic)
        if count is not None:
            return count
        if self._accumulator.closed:
            raise ProducerClosedError()
        self._partition_counts.request(topic)
        self._wake()
        return self._partition_counts.wait(topic, self.max_block_s)

    def _check_partition_again(self, topic: str, partition: int) -> None:
        """For a partition past the known count: look the count up anew (partitions may have
        been added since this producer last asked), and raise if it is still past it."""
        if self._accumulator.closed:
            raise ProducerClosedError()
        self._partition_counts.request_again(topic)
        self._wake()
        partition_count = self._partition_counts.wait(topic, self.max_block_s)
        if not 0 <= partition < partition_count:
            raise _no_such_partition(topic, partition, partition_count)

    def _on_batch_sealed(self, topic: str, partition: int) -> None:
        self._sticky.on_batch_sealed(topic, partition, self._partition_counts.counts.get(topic, 1))
