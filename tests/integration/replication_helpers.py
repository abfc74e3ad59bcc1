"""Helpers for replication tests on real broker processes: leaders, steady producers,
and the byte-for-byte comparison of every replica's committed range."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from distlog.client import Consumer, Producer, TopicPartition
from distlog.client.connection import BrokerConnection
from distlog.consensus.partition_storage import PartitionStorage
from distlog.log.batch import peek_header
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.protocol.messages import MetadataRequest


def sigkill(broker) -> None:
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait(10)


def wait_for(condition, timeout_s: float, what: str):
    """Poll condition() until it returns something truthy; the deadline is a hang guard only."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.02)  # polling interval of a condition, not synchronisation


def describe(address: str, topic: str) -> dict:
    """The topic as the broker at `address` itself reports it (its Metadata answer)."""
    connection = BrokerConnection(address)
    try:
        [answer] = connection.request(MetadataRequest(topics=[topic]), 2.0).topics
    finally:
        connection.close()
    return answer


def leader_of(brokers, topic: str, partition: int, exclude=()):
    """The leader every live broker (but those in `exclude`) agrees on, or None."""
    seen = set()
    for broker in brokers:
        if broker.process.poll() is not None or broker.broker_id in exclude:
            continue
        try:
            seen.add(describe(broker.address, topic)["partitions"][partition]["leader"])
        except Exception:
            return None
    return seen.pop() if len(seen) == 1 and None not in seen else None


class SteadyProducer:
    """A thread sending numbered values at a bounded rate, remembering each acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, partition=None, rate_per_s: float = 200, max_records: int = 20_000,
                 **producer_settings):
        self.topic, self.partition = topic, partition
        self.rate_per_s, self.max_records = rate_per_s, max_records
        self.producer = Producer(bootstrap, acks="all", linger_ms=2, **producer_settings)
        self.acked: dict = {}  # value -> (partition, offset)
        self.failed: list = []
        self.ack_times: list = []  # monotonic time of each acknowledgement
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        for i in range(self.max_records):
            if self._stop.is_set():
                break
            value = b"v%08d" % i
            self.producer.send(self.topic, value, partition=self.partition,
                               callback=lambda err, md, value=value: self._done(value, err, md))
            pause = started + (i + 1) / self.rate_per_s - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)  # pacing the load, not waiting for anything

    def _done(self, value, err, md) -> None:
        with self._lock:
            if err is None:
                self.acked[value] = (md.partition, md.offset)
                self.ack_times.append(time.monotonic())
            else:
                self.failed.append((value, err))

    def acked_after(self, t: float) -> int:
        with self._lock:
            return sum(1 for at in self.ack_times if at > t)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.producer.close(timeout=30)


def read_everything(bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float = 30) -> list:
    """Every record of the topic, read from the start until `expected` arrived (or the hang guard)."""
    records = []
    with Consumer(bootstrap) as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.5))
    return records


def assert_every_ack_exactly_once(acked: dict, records: list) -> None:
    values = [r.value for r in records]
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    lost = [v for v in acked if v not in counts]
    duplicated = [v for v, n in counts.items() if n > 1]
    assert not lost, f"{len(lost)} acknowledged writes are gone, e.g. {lost[:3]}"
    assert not duplicated, f"{len(duplicated)} values were written twice, e.g. {duplicated[:3]}"
    for record in records:
        if record.value in acked:
            assert acked[record.value] == (record.partition, record.offset), "an ack named the wrong offset"


def committed_batches(data_dir: str, topic: str, partition: int):
    """(commit index, [(base offset, crc, batch bytes)]) of one stopped broker's replica."""
    directory = os.path.join(data_dir, "topics", f"{topic}-{partition}")
    with open(os.path.join(data_dir, "raft-state.json")) as f:  # distlog/consensus/hard_state_store.py
        commit = json.load(f)[f"{topic}-{partition}"]["commit"]
    log = PartitionLog.open(directory, LogConfig())
    try:
        storage = PartitionStorage(log)
        batches, offset = [], log.log_start_offset
        while offset <= min(commit, log.log_end_offset - 1):
            view = log.read(offset, 1 << 20)
            position = 0
            while position < len(view):
                header = peek_header(view, position)
                if header.base_offset > commit:
                    break
                batches.append((header.base_offset, header.crc, bytes(view[position:position + header.batch_length])))
                position += header.batch_length
                offset = header.last_offset + 1
            if not len(view):
                break
        del storage
        return commit, batches
    finally:
        log.close()


def assert_replicas_identical(brokers, topic: str, partitions: int, replicas_per_partition: int = 3) -> None:
    """Stopped brokers: every replica's committed range is the same bytes (compared by CRC and in
    full) over the prefix all of them committed."""
    for partition in range(partitions):
        holders = [b for b in brokers if os.path.exists(os.path.join(b.data_dir, "topics", f"{topic}-{partition}"))]
        assert len(holders) == replicas_per_partition
        views = [committed_batches(b.data_dir, topic, partition) for b in holders]
        common = min(commit for commit, _ in views)
        prefixes = [[(base, crc) for base, crc, _ in batches if base <= common] for _, batches in views]
        assert all(p == prefixes[0] for p in prefixes), f"replicas of {topic}-{partition} differ below {common}"
        contents = [b"".join(data for base, _, data in batches if base <= common) for _, batches in views]
        assert len(set(contents)) == 1
