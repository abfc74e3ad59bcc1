"""Client delivery guarantees that regressed once: flush waits for lingering records, a user
callback cannot stall the producer, and a blocking request never eats a pipelined reply."""

import time
import uuid

import numpy as np

import pytest

from distlog.client import Admin, Consumer, Producer
from distlog.client.cluster import ClusterView
from distlog.protocol.messages import FetchRequest

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(one_broker):
    name = f"d-{uuid.uuid4().hex[:8]}"
    with Admin(one_broker.address) as admin:
        admin.create_topic(name, partitions=2)
    return name


def test_flush_waits_for_records_still_lingering_in_open_batches(one_broker, topic):
    # linger far beyond the test: only flush() can make these records go out
    with Producer(one_broker.address, linger_ms=60_000) as producer:
        futures = [producer.send(topic, b"%d" % i, partition=i % 2) for i in range(10)]
        producer.flush(timeout=5)
        assert all(f.done() for f in futures), "flush() returned before every record was acknowledged"
        assert sorted(f.get(0).offset for f in futures) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_a_raising_callback_neither_stalls_the_producer_nor_skips_other_callbacks(one_broker, topic):
    seen = []

    def explode(error, metadata):
        raise RuntimeError("a bug in user code")

    producer = Producer(one_broker.address, linger_ms=60_000)
    try:
        first = producer.send(topic, b"a", partition=0, callback=explode)
        producer.send(topic, b"b", partition=0, callback=lambda e, m: seen.append(m.offset))
        producer.flush(timeout=5)  # one batch: both callbacks run from one completion
        assert first.get(timeout=0).offset == 0
        later = producer.send(topic, b"c", partition=0)
        producer.flush(timeout=5)
        assert later.get(timeout=0).offset == 2, "the sender thread died with the callback"
    finally:
        producer.close(timeout=5)
    assert seen == [1]


def test_a_metadata_refresh_does_not_swallow_a_pipelined_reply(one_broker, topic):
    cluster = ClusterView(one_broker.address, request_timeout_s=5)
    try:
        cluster.refresh([topic])
        connection = cluster.connection(one_broker.address)
        assert connection.transport.wait_connected(5)
        fetch = FetchRequest(0, 1, 1024, [{"topic": topic, "partition": 0, "fetch_offset": 0, "max_bytes": 1024}])
        cid = connection.send(fetch)
        assert cid is not None
        cluster.refresh([topic])  # the fetch's reply arrives while this waits for its own
        assert connection.socket.poll(2000), "the fetch reply was consumed by the metadata request"
        reply = connection.poll_reply()
        assert reply is not None and reply[0] == cid
    finally:
        cluster.close()


def test_seek_to_beginning_while_a_fetch_is_in_flight_does_not_stall_the_consumer(one_broker, topic):
    with Producer(one_broker.address, linger_ms=0) as producer:
        for i in range(2):  # two batches, so each fetch below returns one
            producer.send(topic, b"%d" % i, partition=0).get(5)
    with Consumer(one_broker.address, fetch_max_wait_ms=100, max_partition_fetch_bytes=1,
                  request_timeout_ms=30_000) as consumer:
        consumer.assign([(topic, 0)])
        first = []
        for _ in range(50):
            first = consumer.poll(timeout=0.2)
            if first:
                break
        assert [r.offset for r in first] == [0]  # and a prefetch of offset 1 is now in flight
        consumer.seek_to_beginning()
        again = consumer.poll(timeout=3)
        assert [r.offset for r in again][:1] == [0], "the consumer stalled on a fetch whose reply was dropped"


def test_send_batch_stamps_each_record_with_its_own_timestamp(one_broker, topic):
    array_values = np.zeros((300, 8), dtype=np.uint8)
    array_timestamps_ms = 1_000_000 + np.arange(300, dtype=np.int64)
    keys = np.arange(300, dtype=np.uint32).view(np.uint8).reshape(300, 4)  # spread over both partitions
    with Producer(one_broker.address, batch_size=1024) as producer:  # and over many batches each
        producer.send_batch(topic, array_values, keys=keys, timestamps_ms=array_timestamps_ms)
        producer.send_batch(topic, [b"list"] * 3, partition=0, timestamps_ms=[5, 6, 7])
        producer.send_batch(topic, [b"scalar"] * 2, partition=1, timestamps_ms=9)
        producer.flush(timeout=5)
    with Consumer(one_broker.address, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0), (topic, 1)])
        records = []
        for _ in range(100):
            records.extend(consumer.poll(timeout=0.1))
            if len(records) >= 305:
                break
    stamped = [(int.from_bytes(r.key, "little"), r.timestamp_ms) for r in records if r.key is not None]
    assert sorted(stamped) == [(i, 1_000_000 + i) for i in range(300)]
    assert sorted(r.timestamp_ms for r in records if r.value == b"list") == [5, 6, 7]
    assert [r.timestamp_ms for r in records if r.value == b"scalar"] == [9, 9]


def test_the_producer_notices_a_topic_recreated_with_more_partitions_within_metadata_max_age(one_broker, topic):
    with Producer(one_broker.address, metadata_max_age_ms=100) as producer:
        assert producer.partitions_for(topic) == [0, 1]
        with Admin(one_broker.address) as admin:
            admin.delete_topic(topic)
            admin.create_topic(topic, partitions=4)
        deadline_s = time.monotonic() + 10
        while producer.partitions_for(topic) != [0, 1, 2, 3]:
            assert time.monotonic() < deadline_s, f"still {producer.partitions_for(topic)} partitions"
            time.sleep(0.02)
        assert producer.send(topic, b"on the new partition", partition=3).get(5).offset == 0
