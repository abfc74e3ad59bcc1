"""Control batches (a Raft leader's marker) take offsets, but consumers pass over them and
producers may not write them."""

import uuid

import pytest

from distlog.client import Admin, Consumer, Producer
from distlog.client.connection import BrokerConnection
from distlog.consensus.partition_storage import leader_marker_batch
from distlog.log.batch import ATTR_CONTROL
from distlog.log.batch_builder import build_batch
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import ProduceRequest
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    with running_brokers(str(tmp_path), 1) as (brokers, _):
        yield brokers[0], brokers[0].config.listen


def topic_with_a_marker_at_offset_2(instance, address):
    """Records a (0), b (1), a control batch (2), c (3) in partition 0 of a new topic."""
    topic = f"c-{uuid.uuid4().hex[:8]}"
    with Admin(address) as admin:
        admin.create_topic(topic)
    with Producer(address, linger_ms=0) as producer:
        for value in (b"a", b"b"):
            producer.send(topic, value).get(5)
        # What a new Raft leader appends; no producer can (see the test below).
        instance.replicas[(topic, 0)].log.append(leader_marker_batch(0, 1), assign_offsets=True, leader_term=1)
        assert producer.send(topic, b"c").get(5).offset == 3
    return topic


def consumer_from_the_start(address, topic):
    consumer = Consumer(address, fetch_max_wait_ms=50)
    consumer.assign([(topic, 0)])
    consumer.seek_to_beginning()
    return consumer


def test_poll_passes_over_control_records_and_moves_the_position_past_them(broker):
    topic = topic_with_a_marker_at_offset_2(*broker)
    with consumer_from_the_start(broker[1], topic) as consumer:
        records = []
        for _ in range(50):
            records.extend(consumer.poll(timeout=0.1))
            if len(records) >= 3:
                break
        assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (3, b"c")]
        assert consumer.position((topic, 0)) == 4
        consumer.seek((topic, 0), 2)  # a seek onto the marker lands on the next real record
        assert [r.offset for r in consumer.poll(timeout=5)] == [3]


def test_poll_batches_passes_over_control_batches(broker):
    topic = topic_with_a_marker_at_offset_2(*broker)
    with consumer_from_the_start(broker[1], topic) as consumer:
        batches = []
        for _ in range(50):
            batches.extend(consumer.poll_batches(timeout=0.1))
            if consumer.position((topic, 0)) == 4:
                break
        assert [b.base_offset for _, b, _ in batches] == [0, 1, 3]
        assert not any(b.is_control for _, b, _ in batches)


def test_a_produce_carrying_a_control_batch_is_refused_and_writes_nothing(broker):
    instance, address = broker
    topic = f"c-{uuid.uuid4().hex[:8]}"
    with Admin(address) as admin:
        admin.create_topic(topic)
    forged = build_batch([b"not yours"], attributes=ATTR_CONTROL)
    connection = BrokerConnection(address)
    try:
        response = connection.request(
            ProduceRequest(acks=1, timeout_ms=1000, partitions=[{"topic": topic, "partition": 0, "records": forged}]), 5)
    finally:
        connection.close()
    (result,) = response.partitions
    assert result["error_code"] == ErrorCode.INVALID_REQUEST
    assert "control batch" in result["error_message"]
    assert instance.replicas[(topic, 0)].log_end_offset == 0
