"""Real brokers that record their fsyncs (DISTLOG_RECORD_SYNCED=1, passed through the environment),
SIGKILLed mid-produce, then power-cut (chaos/disk_faults.cut_power) and started again: every
acks=all write survives at RF=1 with flush.policy=always and at RF=3 with every broker cut at
once; the unsafe control (unsafe.skip.raft.fsync under flush.policy=never) loses some."""

import threading
import time
import uuid

import pytest

from distlog.broker.launcher import restart_broker, start_brokers, stop_brokers
from distlog.chaos.disk_faults import cut_power
from distlog.client import Admin, Consumer, Producer
from distlog.log.synced import RECORD_SYNCED_ENV
from distlog.protocol.messages import LATEST_TIMESTAMP
from tests.integration.replication_helpers import leader_of, wait_for

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0  # only for a hang
ACKS_BEFORE_THE_CUT = 300
UNSAFE = {"flush.policy": "never", "unsafe.skip.raft.fsync": "true"}


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setenv(RECORD_SYNCED_ENV, "1")  # the brokers inherit the test's environment


@pytest.fixture
def cluster(tmp_path, recording, request):
    brokers = start_brokers(request.param, str(tmp_path))
    try:
        yield brokers
    finally:
        stop_brokers(brokers)


class Sender:
    """A thread sending unique values with acks=all until stopped; `acked` holds those answered."""

    def __init__(self, address: str, topic: str):
        self.topic = topic
        self.producer = Producer(address, acks="all", enable_idempotence=True, linger_ms=2,
                                 request_timeout_ms=2000, delivery_timeout_ms=int(HANG_GUARD_S * 1000))
        self.acked: list = []
        self.errors: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            n = 0
            while not self._stop.is_set():
                value = b"v%07d" % n
                self.producer.send(self.topic, value, callback=lambda error, _md, v=value: error is None and self.acked.append(v))
                n += 1
                self._stop.wait(0.001)  # a steady stream, not synchronisation
        except Exception as error:  # reported by wait_for_acks
            self.errors.append(error)

    def wait_for_acks(self, count: int) -> None:
        wait_for(lambda: len(self.acked) >= count or self.errors, HANG_GUARD_S, f"{count} acknowledgements")
        assert not self.errors, self.errors

    def stop(self) -> list:
        """Stop sending; what was not answered fails (the brokers are down). Returns the acked values."""
        self._stop.set()
        self._thread.join(10)
        self.producer.close(timeout=1)
        return list(self.acked)


def cut_power_and_restart(brokers) -> dict:
    """Every broker is down (SIGKILLed): cut the power of all, then start them again."""
    cuts = {broker.broker_id: cut_power(broker.data_dir) for broker in brokers}
    for broker in brokers:
        restart_broker(broker)
    return cuts


def read_values(brokers, topic: str, partitions: int) -> list:
    wait_for(lambda: all(leader_of(brokers, topic, p) for p in range(partitions)), HANG_GUARD_S,
             "a leader for every partition")
    address = brokers[0].address
    with Admin(address) as admin:
        ends = admin.list_offsets({(topic, p): LATEST_TIMESTAMP for p in range(partitions)})
    consumer = Consumer(address, fetch_max_wait_ms=50)
    try:
        consumer.assign(list(ends))
        consumer.seek_to_beginning()
        values, deadline = [], time.monotonic() + HANG_GUARD_S
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "hung reading the topic back"
            values.extend(r.value for r in consumer.poll(timeout=0.2))
        return values
    finally:
        consumer.close()


def produce_then_cut_power(brokers, partitions: int, replication_factor: int, config: dict):
    topic = f"power-{uuid.uuid4().hex[:8]}"
    with Admin(brokers[0].address) as admin:
        admin.create_topic(topic, partitions=partitions, replication_factor=replication_factor, config=config)
    sender = Sender(",".join(b.address for b in brokers), topic)
    try:
        sender.wait_for_acks(ACKS_BEFORE_THE_CUT)
        for broker in brokers:  # mid-produce, every broker before any restarts: a whole-cluster power cut
            broker.kill()  # SIGKILL, and reaped
    finally:
        acked = sender.stop()
    cuts = cut_power_and_restart(brokers)
    return acked, cuts, read_values(brokers, topic, partitions)


@pytest.mark.parametrize("cluster", [1], indirect=True)
def test_at_rf1_with_flush_always_every_acknowledged_write_survives_a_power_cut(cluster):
    acked, _, values = produce_then_cut_power(cluster, 2, 1, {"flush.policy": "always"})
    stored = set(values)
    lost = [v for v in acked if v not in stored]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes are gone after the power cut, e.g. {lost[:3]}"


@pytest.mark.parametrize("cluster", [3], indirect=True)
def test_at_rf3_every_acknowledged_write_survives_a_power_cut_of_every_broker(cluster):
    acked, _, values = produce_then_cut_power(cluster, 3, 3, {})
    stored = set(values)
    lost = [v for v in acked if v not in stored]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes are gone after the power cut, e.g. {lost[:3]}"


@pytest.mark.parametrize("cluster", [3], indirect=True)
def test_the_unsafe_control_loses_acknowledged_writes_to_the_same_power_cut(cluster):
    acked, cuts, values = produce_then_cut_power(cluster, 3, 3, UNSAFE)
    assert all(cut.get("bytes", 0) > 0 for cut in cuts.values()), cuts
    stored = set(values)
    assert [v for v in acked if v not in stored], "unsafe.skip.raft.fsync kept every acknowledged write"
