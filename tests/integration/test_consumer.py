"""Consumer behaviour users rely on: iteration, out-of-range offsets, position and highwater."""

import os
import time
import uuid

import pytest

from distlog.client import Admin, Consumer, DistlogError, ErrorCode, Producer, RequestTimedOutError

pytestmark = pytest.mark.integration

# Deadlines in this file only stop a hung test; a healthy broker answers in milliseconds.
HANG_GUARD_S = 30.0


def polls_until(consumer, done, **poll_args):
    """Poll until done(records so far) holds; the records. AssertionError at the hang guard."""
    records, deadline = [], time.monotonic() + HANG_GUARD_S
    while not done(records):
        assert time.monotonic() < deadline, f"hung: {len(records)} records after {HANG_GUARD_S} s"
        records.extend(consumer.poll(timeout=0.2, **poll_args))
    return records


@pytest.fixture(scope="module")
def filled_topic(one_broker):
    topic = f"c-{uuid.uuid4().hex[:8]}"
    with Admin(one_broker.address) as admin:
        admin.create_topic(topic, partitions=2)
    with Producer(one_broker.address) as producer:
        for i in range(20):
            producer.send(topic, b"%d" % i, partition=i % 2)
    return one_broker.address, topic


def test_iteration_yields_every_record_and_stops_after_consumer_timeout(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap, consumer_timeout_ms=500, fetch_max_wait_ms=100) as consumer:
        consumer.assign([(topic, 0), (topic, 1)])
        values, deadline = [], time.monotonic() + HANG_GUARD_S
        while len(values) < 20:  # a broker stalled past 500 ms ends one iteration early: go again
            assert time.monotonic() < deadline, f"hung: {sorted(values)}"
            values.extend(int(r.value) for r in consumer)
        # with everything read, iterating stops once nothing arrives for consumer_timeout_ms
        assert [r.value for r in consumer] == []
    assert sorted(values) == list(range(20))


def test_an_offset_past_the_end_resets_per_auto_offset_reset(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek((topic, 0), 1000)
        records = polls_until(consumer, lambda records: len(records) >= 10)
        assert [r.offset for r in records] == list(range(10))
        assert consumer.highwater((topic, 0)) == 10


def test_auto_offset_reset_none_raises_offset_out_of_range(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap, auto_offset_reset="none", fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 1)])
        consumer.seek((topic, 1), 99)
        with pytest.raises(DistlogError) as info:
            polls_until(consumer, lambda records: False)  # until the error
        assert info.value.code == ErrorCode.OFFSET_OUT_OF_RANGE
        assert "offset 99 is out of range: this log holds offsets 0 to 9 " in info.value.message
        assert "(valid read positions are 0..10)" in info.value.message


def test_seek_to_end_skips_existing_records(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek_to_end()
        assert consumer.position((topic, 0)) == 10
        assert consumer.poll(timeout=0.3) == []


def test_unassigned_partitions_and_unknown_topics_are_refused(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap) as consumer:
        with pytest.raises(ValueError, match="not assigned"):
            consumer.seek((topic, 0), 0)
        with pytest.raises(DistlogError) as info:
            consumer.assign([("missing-topic", 0)])
        assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        with pytest.raises(DistlogError):
            consumer.assign([(topic, 5)])


def test_max_records_is_exact_even_inside_one_batch(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0)])
        got, deadline = [], time.monotonic() + HANG_GUARD_S
        while len(got) < 10:
            assert time.monotonic() < deadline, f"hung after {len(got)} records"
            records = consumer.poll(timeout=0.2, max_records=3)
            assert len(records) <= 3
            got.extend(records)
            if records:
                assert consumer.position((topic, 0)) == records[-1].offset + 1
        assert [r.offset for r in got] == list(range(10))
        consumer.seek((topic, 0), 4)
        assert [r.offset for r in polls_until(consumer, bool, max_records=2)] == [4, 5]


def test_a_batch_corrupted_on_disk_of_a_sole_copy_raises_instead_of_being_refetched_forever(fresh_broker):
    topic = "rot"
    with Admin(fresh_broker.address) as admin:
        admin.create_topic(topic)
    with Producer(fresh_broker.address, linger_ms=0) as producer:
        producer.send(topic, b"good").get(5)
        producer.send(topic, b"rotten").get(5)
    log_path = os.path.join(fresh_broker.data_dir, "topics", f"{topic}-0", "00000000000000000000.log")
    with open(log_path, "r+b") as segment:  # flip the last payload byte: the second batch's CRC breaks
        segment.seek(-1, os.SEEK_END)
        last = segment.read(1)
        segment.seek(-1, os.SEEK_END)
        segment.write(bytes([last[0] ^ 0xFF]))
    with Consumer(fresh_broker.address, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0)])
        records = []
        with pytest.raises(DistlogError) as info:
            deadline = time.monotonic() + HANG_GUARD_S
            while time.monotonic() < deadline:  # until the error
                records.extend(consumer.poll(timeout=0.1))
        # The broker refused to serve the damaged batch (CORRUPT_MESSAGE) and quarantined it; with
        # no other replica to repair from, the partition is offline, and says so.
        assert info.value.code == ErrorCode.STORAGE_ERROR and "offset 1" in info.value.message
        assert "only replica" in info.value.message
        assert [r.value for r in records] == [b"good"]
        with pytest.raises(DistlogError) as again:  # still offline: said again, not retried in silence
            while time.monotonic() < deadline:
                consumer.poll(timeout=0.1)
        assert again.value.code == ErrorCode.STORAGE_ERROR
    quarantined = os.listdir(os.path.join(os.path.dirname(log_path), "quarantine"))
    assert len(quarantined) == 1  # the damaged batch is kept, not deleted


def test_records_poll_takes_are_returned_even_if_the_next_prefetch_cannot_find_a_leader(filled_topic):
    bootstrap, topic = filled_topic
    with Consumer(bootstrap, fetch_max_wait_ms=50, max_partition_fetch_bytes=1) as consumer:
        consumer.assign([(topic, 0)])
        wait_for_data = consumer._wait_for_data

        def then_lose_the_cluster(timeout):  # the cluster becomes unreachable right after data arrived
            wait_for_data(timeout)
            consumer._cluster.topics.clear()
            consumer._cluster.refresh = fail_refresh

        def fail_refresh(*args, **kwargs):
            raise RequestTimedOutError("no broker answered (the test cut them off)")

        consumer._wait_for_data = then_lose_the_cluster
        deadline, records = time.monotonic() + HANG_GUARD_S, []
        while not records and time.monotonic() < deadline:
            records = consumer.poll(timeout=0.2)
        assert records and consumer.position((topic, 0)) == records[-1].offset + 1, \
            "poll advanced the position past records it then failed to return"
