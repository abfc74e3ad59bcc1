"""Producer: send() records, get futures; a background sender thread batches, ships and retries them.

    producer = Producer("tcp://127.0.0.1:9092", acks="all")
    future = producer.send("orders", b"value", key=b"customer-7")
    print(future.get(timeout=10))          # RecordMetadata(topic, partition, offset, timestamp_ms)
    producer.send_batch("orders", values)  # many records in one call (a list or a uint8 array)
    producer.close()                       # flushes first

Threads: any number of user threads may call send(); one sender thread owns every socket.
They share the accumulators under one lock and talk through a wake-up pipe, poked once per
batch (not per record). Delivery semantics are Kafka's without idempotence: a retried batch
may be written twice if the first attempt's acknowledgement was lost, and with more than one
request in flight a retry can reorder batches of one partition.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque

import numpy as np
import zmq

from distlog.client.accumulator import (
    FutureRecordMetadata,
    PartitionAccumulator,
    ProducerBatch,
    build_single_batch,
)
from distlog.client.cluster import ClusterView
from distlog.client.errors import BufferFullError, ProducerClosedError, RequestTimedOutError
from distlog.client.partitioner import partition_for_key, partitions_for_keys
from distlog.log.batch import HEADER_SIZE, ROW_SIZE, build_batch, build_batch_from_arrays, peek_header
from distlog.protocol.errors import DistlogError, ErrorCode, is_retriable
from distlog.protocol.messages import ErrorResponse, ProduceRequest

ACKS = {"all": -1, "-1": -1, -1: -1, "1": 1, 1: 1, "0": 0, 0: 0}


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
        batch_size: int = 256 * 1024,
        buffer_memory: int = 64 * 1024 * 1024,
        max_block_ms: float = 60_000,
        retries: int = 2**31 - 1,
        retry_backoff_ms: float = 100,
        request_timeout_ms: float = 30_000,
        delivery_timeout_ms: float = 120_000,
        max_in_flight: int = 5,
        max_request_bytes: int = 4 * 1024 * 1024,
    ):
        if acks not in ACKS:
            raise ValueError(f"acks must be 'all', 1 or 0, got {acks!r}")
        if batch_size < 1024:
            raise ValueError(f"batch_size must be at least 1024 bytes, got {batch_size}")
        self.acks = ACKS[acks]
        self.linger_s = linger_ms / 1000
        self.batch_size = batch_size
        self.buffer_memory = buffer_memory
        self.max_block_s = max_block_ms / 1000
        self.retries = retries
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.request_timeout_s = request_timeout_ms / 1000
        self.delivery_timeout_s = delivery_timeout_ms / 1000
        self.max_in_flight = max_in_flight
        self.max_request_bytes = max_request_bytes
        # Row-table sizing: a batch of tiny records is sealed by count before it fills its bytes.
        self._max_records = max(64, batch_size // 16)
        self._cluster = ClusterView(bootstrap, request_timeout_s=self.request_timeout_s)
        self._lock = threading.Lock()
        self._space_freed = threading.Condition(self._lock)
        self._metadata_arrived = threading.Condition(self._lock)
        self._accumulators: dict = {}
        self._sealed: deque = deque()
        self._buffered_bytes = 0
        self._unfinished_batches = 0
        self._all_done = threading.Condition(self._lock)
        self._partition_counts: dict = {}  # topic -> partition count, written by the sender thread
        self._metadata_errors: dict = {}  # topic -> DistlogError from the last lookup
        self._wanted_topics: set = set()
        self._sticky: dict = {}
        self._flush_requested = False
        self._closing = False
        self._closed = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._sender = threading.Thread(target=self._run_sender, name="distlog-producer-sender", daemon=True)
        self._sender.start()

    # ----------------------------------------------------------------------------- user API

    def send(self, topic: str, value=None, key=None, partition: int | None = None, headers=None,
             timestamp_ms: int | None = None, callback=None) -> FutureRecordMetadata:
        """Queue one record; returns a future. `callback(error, metadata)` runs on delivery (sender thread).

        Blocks up to max_block_ms for metadata or buffer space, then raises BufferFullError /
        RequestTimedOutError / DistlogError(UNKNOWN_TOPIC_OR_PARTITION)."""
        if value is not None and type(value) is not bytes:
            value = _as_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = _as_bytes(key, "key")
        if headers:
            headers = [(str(name), _as_bytes(data, "header value") or b"") for name, data in headers]
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        partition_count = self._partition_counts.get(topic) or self._partition_count(topic)
        if partition is None:
            partition = partition_for_key(key, partition_count) if key is not None else self._sticky_partition(topic, partition_count)
        elif not 0 <= partition < partition_count:
            raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{topic}' has partitions 0..{partition_count - 1}, not {partition}")
        size = (len(key) if key is not None else 0) + (len(value) if value is not None else 0) + ROW_SIZE
        with self._lock:
            if self._buffered_bytes + size > self.buffer_memory or self._closing:
                self._wait_for_space(size)
            self._buffered_bytes += size
            accumulator = self._accumulators.get((topic, partition)) or self._accumulator(topic, partition)
            index = accumulator.try_append(value, key, timestamp_ms, headers)
            wake = index <= 0  # a new batch opened (its linger clock starts) or the old one is full
            if index < 0:
                self._seal(accumulator)
                index = accumulator.try_append(value, key, timestamp_ms, headers)
            if index < 0:  # bigger than a whole batch: it travels alone
                batch = build_single_batch(topic, partition, value, key, timestamp_ms, headers)
                self._queue_sealed(batch)
                index = 0
            else:
                batch = accumulator.batch
            batch.size_bytes += size
            if callback is not None:
                if batch.callbacks is None:
                    batch.callbacks = []
                batch.callbacks.append((index, callback))
        if wake:
            self._wake()
        return FutureRecordMetadata(batch, index)

    def send_batch(self, topic: str, values, keys=None, partition: int | None = None,
                   timestamps_ms=None) -> list:
        """Send many records in one call; returns one future per batch, each resolving to the
        RecordMetadata of the batch's first record (offsets of the rest follow consecutively).

        values: a list of bytes, or a uint8 array (n, width). keys likewise (None = no keys).
        Without `partition`, keyed records are spread by murmur2 (vectorized), unkeyed ones go to
        the sticky partition. Batches are cut at batch_size bytes."""
        values_2d = values if isinstance(values, np.ndarray) else None
        n = len(values)
        if n == 0:
            return []
        partition_count = self._partition_count(topic)
        if partition is not None:
            targets = np.full(n, partition, dtype=np.int64)
        elif keys is None:
            targets = np.full(n, self._sticky_partition(topic, partition_count), dtype=np.int64)
        elif isinstance(keys, np.ndarray):
            targets = partitions_for_keys(keys, partition_count)
        else:
            targets = np.array([partition_for_key(_as_bytes(k, "key"), partition_count) for k in keys], dtype=np.int64)
        futures = []
        for target in np.unique(targets):
            rows = np.flatnonzero(targets == target)
            futures.extend(self._send_rows(topic, int(target), values, keys, rows, values_2d is not None, timestamps_ms))
        return futures

    def _send_rows(self, topic, partition, values, keys, rows, as_arrays, timestamps_ms) -> list:
        futures = []
        if as_arrays:
            record_bytes = values.shape[1] + (keys.shape[1] if isinstance(keys, np.ndarray) else 0) + ROW_SIZE
        else:
            record_bytes = max(1, int(np.mean([len(values[i]) for i in rows[:100]]))) + ROW_SIZE
        per_batch = max(1, min(self._max_records, (self.batch_size - HEADER_SIZE) // record_bytes))
        for start in range(0, len(rows), per_batch):
            chunk = rows[start:start + per_batch]
            if as_arrays:
                key_chunk = keys[chunk] if isinstance(keys, np.ndarray) else None
                data = build_batch_from_arrays(values[chunk], key_chunk, timestamps_ms)
            else:
                key_chunk = [_as_bytes(keys[i], "key") for i in chunk] if keys is not None else None
                data = build_batch([_as_bytes(values[i], "value") for i in chunk], key_chunk)
            batch = ProducerBatch(topic, partition)
            batch.data = data
            batch.record_count = len(chunk)
            batch.size_bytes = len(data)
            batch.timestamps_ms = np.array([peek_header(data).first_timestamp_ms], dtype=np.int64)
            with self._lock:
                self._wait_for_space(batch.size_bytes)
                self._buffered_bytes += batch.size_bytes
                self._queue_sealed(batch)
            self._wake()
            futures.append(FutureRecordMetadata(batch, 0))
        return futures

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait until every record sent so far is acknowledged or failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flush_requested = True
        self._wake()
        with self._lock:
            while self._unfinished_batches:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RequestTimedOutError(f"flush did not finish within {timeout} s ({self._unfinished_batches} batches pending)")
                self._all_done.wait(remaining if remaining is not None else 0.5)
            self._flush_requested = False

    def partitions_for(self, topic: str) -> list:
        return list(range(self._partition_count(topic)))

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender thread and close sockets. Safe to call twice."""
        if self._closed:
            return
        try:
            if not self._closing:
                self.flush(timeout)
        finally:
            with self._lock:
                self._closing = True
            self._wake()
            self._sender.join(timeout if timeout is not None else 30)
            self._closed = True
            os.close(self._wake_read)
            os.close(self._wake_write)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --------------------------------------------------------------- user-thread internals

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the sender will wake anyway) or closed (we are done)

    def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is not None:
            return count
        if self._closing:
            raise ProducerClosedError()
        deadline = time.monotonic() + self.max_block_s
        with self._lock:
            self._metadata_errors.pop(topic, None)
            self._wanted_topics.add(topic)
        self._wake()
        with self._lock:
            while topic not in self._partition_counts:
                if topic in self._metadata_errors:
                    raise self._metadata_errors[topic]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RequestTimedOutError(f"no metadata for topic '{topic}' within max_block_ms={self.max_block_s * 1000:.0f}; is the cluster up?")
                self._metadata_arrived.wait(min(remaining, 0.5))
            return self._partition_counts[topic]

    def _sticky_partition(self, topic: str, partition_count: int) -> int:
        partition = self._sticky.get(topic)
        if partition is None or partition >= partition_count:
            partition = self._sticky[topic] = random.randrange(partition_count)
        return partition

    def _accumulator(self, topic: str, partition: int) -> PartitionAccumulator:
        accumulator = self._accumulators.get((topic, partition))
        if accumulator is None:
            accumulator = PartitionAccumulator(topic, partition, self.batch_size, self._max_records)
            self._accumulators[(topic, partition)] = accumulator
        return accumulator

    def _wait_for_space(self, size: int) -> None:
        """Called with the lock held: wait for buffer space, up to max_block_ms."""
        if self._closing:
            raise ProducerClosedError()
        deadline = None
        while self._buffered_bytes + size > self.buffer_memory and self._buffered_bytes > 0:
            deadline = deadline or time.monotonic() + self.max_block_s
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BufferFullError(
                    f"producer buffer full ({self._buffered_bytes} of buffer_memory={self.buffer_memory} bytes) for "
                    f"max_block_ms={self.max_block_s * 1000:.0f}: the brokers are not keeping up or cannot be reached"
                )
            self._space_freed.wait(remaining)

    def _seal(self, accumulator: PartitionAccumulator) -> None:
        """Called with the lock held."""
        if accumulator.count == 0:
            return
        self._queue_sealed(accumulator.seal())
        if self._sticky.get(accumulator.topic) == accumulator.partition:
            count = self._partition_counts.get(accumulator.topic, 1)
            if count > 1:
                self._sticky[accumulator.topic] = (accumulator.partition + random.randrange(1, count)) % count

    def _queue_sealed(self, batch: ProducerBatch) -> None:
        self._sealed.append(batch)
        self._unfinished_batches += 1

    # ------------------------------------------------------------------------ sender thread

    def _run_sender(self) -> None:
        sender = _Sender(self)
        try:
            sender.run()
        finally:
            sender.close()


class _Sender:
    """The sender thread's state: what is queued per broker, what is in flight, what waits to retry."""

    def __init__(self, producer: Producer):
        self.producer = producer
        self.cluster = producer._cluster
        self.poller = zmq.Poller()
        self.poller.register(producer._wake_read, zmq.POLLIN)
        self.registered: set = set()
        self.waiting: list = []  # batches not yet sent (new or retrying)
        self.in_flight: dict = {}  # endpoint -> {cid: (sent_at_s, [batches])}

    def run(self) -> None:
        p = self.producer
        while True:
            now_s = time.monotonic()
            with p._lock:
                self._collect(now_s)
                wanted, p._wanted_topics = p._wanted_topics, set()
                closing = p._closing
            if wanted:
                self._lookup(wanted)
            self._send(now_s)
            if closing and not self.waiting and not any(self.in_flight.values()):
                with p._lock:
                    if not p._sealed and not any(a.count for a in p._accumulators.values()):
                        return
            self._poll(self._timeout_ms(now_s))
            self._receive()
            self._expire(time.monotonic())

    def close(self) -> None:
        self.cluster.close()

    def _collect(self, now_s: float) -> None:
        """With the lock held: seal what lingered long enough (or everything when flushing)."""
        p = self.producer
        for accumulator in p._accumulators.values():
            if accumulator.count and (p._flush_requested or p._closing or now_s - accumulator.opened_s >= p.linger_s):
                p._seal(accumulator)
        while p._sealed:
            self.waiting.append(p._sealed.popleft())

    def _lookup(self, topics: set) -> None:
        p = self.producer
        try:
            self.cluster.refresh(sorted(topics))
        except DistlogError as error:
            with p._lock:
                for topic in topics:
                    p._metadata_errors[topic] = error
                p._metadata_arrived.notify_all()
            return
        with p._lock:
            for topic in topics:
                info = self.cluster.topics.get(topic)
                if info is None:
                    p._metadata_errors[topic] = DistlogError(
                        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                        f"topic '{topic}' does not exist (create it with `distlog topic create {topic}`)")
                else:
                    p._partition_counts[topic] = info.partition_count
            p._metadata_arrived.notify_all()

    def _send(self, now_s: float) -> None:
        p = self.producer
        by_endpoint: dict = {}
        stale_topics = set()
        still_waiting = []
        for batch in self.waiting:
            if batch.retry_at_s > now_s:
                still_waiting.append(batch)
                continue
            endpoint = self.cluster.leader_endpoint(batch.topic, batch.partition)
            if endpoint is None:
                stale_topics.add(batch.topic)
                still_waiting.append(batch)
                continue
            by_endpoint.setdefault(endpoint, []).append(batch)
        for endpoint, batches in by_endpoint.items():
            still_waiting.extend(self._send_to(endpoint, batches, now_s))
        self.waiting = still_waiting
        if stale_topics:
            try:
                self.cluster.refresh(sorted(stale_topics), timeout_s=min(1.0, p.request_timeout_s))
            except DistlogError:
                pass  # the batches stay waiting; their delivery timeout bounds the wait

    def _send_to(self, endpoint: str, batches: list, now_s: float) -> list:
        """Send as many requests as the in-flight window allows; return the batches left over."""
        p = self.producer
        connection = self.cluster.connection(endpoint)
        if endpoint not in self.registered:
            self.poller.register(connection.socket, zmq.POLLIN)
            self.registered.add(endpoint)
        in_flight = self.in_flight.setdefault(endpoint, {})
        left = list(batches)
        while left and (len(in_flight) < p.max_in_flight or p.acks == 0):
            request_batches, size, taken = [], 0, set()
            for batch in left:
                key = (batch.topic, batch.partition)
                if key in taken:  # one batch per partition per request keeps a partition's batches in order
                    continue
                if request_batches and size + len(batch.data) > p.max_request_bytes:
                    break
                request_batches.append(batch)
                taken.add(key)
                size += len(batch.data)
            partitions = [{"topic": b.topic, "partition": b.partition, "records": b.data} for b in request_batches]
            cid = connection.send(ProduceRequest(acks=p.acks, timeout_ms=int(p.request_timeout_s * 1000), partitions=partitions))
            if cid is None:
                break  # not connected right now; try again on the next turn
            ids = {id(b) for b in request_batches}
            left = [b for b in left if id(b) not in ids]
            for batch in request_batches:
                batch.attempts += 1
            if p.acks == 0:
                for batch in request_batches:
                    self._finish(batch, -1, None)
            else:
                in_flight[cid] = (now_s, request_batches)
        return left

    def _poll(self, timeout_ms: int) -> None:
        events = dict(self.poller.poll(timeout_ms))
        if self.producer._wake_read in events:
            try:
                while os.read(self.producer._wake_read, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _timeout_ms(self, now_s: float) -> int:
        p = self.producer
        timeout_s = 0.1
        with p._lock:
            for accumulator in p._accumulators.values():
                if accumulator.count:
                    timeout_s = min(timeout_s, max(0.0, accumulator.opened_s + p.linger_s - now_s))
            if p._sealed or p._wanted_topics or p._flush_requested:
                timeout_s = 0
        if self.waiting:
            timeout_s = min(timeout_s, 0.01)
        return int(timeout_s * 1000)

    def _receive(self) -> None:
        for endpoint, in_flight in self.in_flight.items():
            if not in_flight:
                continue
            connection = self.cluster.connection(endpoint)
            while True:
                try:
                    reply = connection.poll_reply()
                except DistlogError:
                    continue  # an undecodable reply: the request will time out and be retried
                if reply is None:
                    break
                cid, response = reply
                entry = in_flight.pop(cid, None)
                if entry is None:
                    continue  # a late reply to a request we already gave up on
                self._on_response(entry[1], response)

    def _on_response(self, batches: list, response) -> None:
        if isinstance(response, ErrorResponse):
            for batch in batches:
                self._failed(batch, DistlogError(response.error_code, response.error_message))
            return
        results = {(r["topic"], r["partition"]): r for r in response.partitions}
        for batch in batches:
            result = results.get((batch.topic, batch.partition))
            if result is None:
                self._failed(batch, DistlogError(ErrorCode.UNKNOWN_SERVER_ERROR, "the broker's reply left out this partition"))
            elif result["error_code"]:
                self._failed(batch, DistlogError(result["error_code"], result["error_message"]))
            else:
                self._finish(batch, result["base_offset"], None)

    def _failed(self, batch: ProducerBatch, error: DistlogError) -> None:
        p = self.producer
        now_s = time.monotonic()
        past_deadline = now_s - batch.created_s >= p.delivery_timeout_s
        if is_retriable(error.code) and batch.attempts <= p.retries and not past_deadline:
            if error.code in (ErrorCode.NOT_LEADER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.BROKER_NOT_AVAILABLE):
                self.cluster.topics.pop(batch.topic, None)  # refresh before the retry goes out
            batch.retry_at_s = now_s + min(1.0, p.retry_backoff_s * (2 ** min(batch.attempts - 1, 10)))
            self.waiting.append(batch)
        else:
            self._finish(batch, -1, error)

    def _finish(self, batch: ProducerBatch, base_offset: int, error) -> None:
        p = self.producer
        try:
            batch.complete(base_offset, error)
        finally:
            with p._lock:
                p._buffered_bytes -= batch.size_bytes
                p._unfinished_batches -= 1
                p._space_freed.notify_all()
                if p._unfinished_batches == 0:
                    p._all_done.notify_all()

    def _expire(self, now_s: float) -> None:
        p = self.producer
        for endpoint, in_flight in self.in_flight.items():
            for cid, (sent_at_s, batches) in list(in_flight.items()):
                if now_s - sent_at_s >= p.request_timeout_s:
                    del in_flight[cid]
                    for batch in batches:
                        self._failed(batch, RequestTimedOutError(f"no produce reply from {endpoint} within {p.request_timeout_s:.3g} s"))
        expired = [b for b in self.waiting if now_s - b.created_s >= p.delivery_timeout_s]
        if expired:
            self.waiting = [b for b in self.waiting if now_s - b.created_s < p.delivery_timeout_s]
            for batch in expired:
                self._finish(batch, -1, RequestTimedOutError(
                    f"records for {batch.topic}-{batch.partition} not delivered within delivery_timeout_ms="
                    f"{p.delivery_timeout_s * 1000:.0f}: no leader reachable"))
