"""The Consumer's lookups that kafka-python and confluent-kafka users reach for: topics(),
beginning_offsets, end_offsets and offsets_for_times, against a real broker."""

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, DistlogError, Producer, TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    brokers = start_brokers(1, str(tmp_path_factory.mktemp("offsets-api")))
    try:
        yield brokers[0].address
    finally:
        stop_brokers(brokers)


def test_start_end_and_time_lookups_name_the_offsets_the_records_are_at(bootstrap):
    with Admin(bootstrap) as admin:
        admin.create_topic("timed", partitions=2)
    producer = Producer(bootstrap, acks="all", linger_ms=0)
    try:
        for i in range(10):  # partition 0: timestamps 1000, 1100, ..., 1900; partition 1 stays empty
            producer.send("timed", b"v%d" % i, partition=0, timestamp_ms=1000 + 100 * i).get(timeout=10)
    finally:
        producer.close()
    p0, p1 = TopicPartition("timed", 0), TopicPartition("timed", 1)
    consumer = Consumer(bootstrap)
    try:
        assert "timed" in consumer.topics() and consumer.list_topics() == consumer.topics()
        assert consumer.beginning_offsets([p0, p1]) == {p0: 0, p1: 0}
        assert consumer.end_offsets([("timed", 0), p1]) == {p0: 10, p1: 0}
        found = consumer.offsets_for_times({p0: 1350, p1: 0})
        assert found == {p0: 4, p1: None}  # 1400 is the first timestamp >= 1350
        assert consumer.offsets_for_times({p0: 5000}) == {p0: None}
        consumer.assign([p0])
        consumer.seek(p0, found[p0])
        assert [r.value for r in consumer.poll(timeout=5.0)][:2] == [b"v4", b"v5"]
        with pytest.raises(ValueError, match="milliseconds since the epoch"):
            consumer.offsets_for_times({p0: -5})
    finally:
        consumer.close()


def test_producer_and_consumer_both_list_topics_and_their_partitions(bootstrap):
    """confluent-kafka users call list_topics() on either; kafka-python's producer has partitions_for."""
    with Admin(bootstrap) as admin:
        admin.create_topic("listed", partitions=3)
    producer, consumer = Producer(bootstrap), Consumer(bootstrap)
    try:
        assert "listed" in producer.list_topics(timeout=10)
        assert producer.list_topics() == consumer.list_topics()
        assert not [name for name in producer.list_topics() if name.startswith("__")], "internal topics left out"
        assert producer.partitions_for("listed") == consumer.partitions_for("listed") == [0, 1, 2]
    finally:
        producer.close()
        consumer.close()
    with pytest.raises(DistlogError, match="closed"):
        producer.list_topics()
