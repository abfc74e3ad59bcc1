"""A partition whose log failed to reach the disk: its failed writes are never served, and it
takes no more writes, until a restart recovers it from what is on disk."""

import errno
import threading
import uuid

import pytest

from distlog.broker.launcher import free_loopback_ports
from distlog.broker.logs import BrokerLogger
from distlog.broker.server import Broker, BrokerConfig
from distlog.client import Admin, Consumer, DistlogError, ErrorCode, Producer


class _NullStream:
    def write(self, text):
        pass

    def flush(self):
        pass


@pytest.fixture
def broker(tmp_path):
    """A broker running in a thread of this process, so a test can break its disk."""
    (port,) = free_loopback_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    instance = Broker(BrokerConfig(1, str(tmp_path), address, {1: address}), BrokerLogger(1, _NullStream()))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    try:
        yield instance, address
    finally:
        instance.stop()
        thread.join(10)
        assert not thread.is_alive()


def failing_flush():
    """What PartitionLog.flush does from a failed fsync on, until the log is reopened."""
    raise OSError(errno.EIO, "Input/output error")


def test_a_failed_flush_takes_the_partition_offline_and_its_writes_are_never_served(broker):
    instance, address = broker
    topic = f"s-{uuid.uuid4().hex[:8]}"
    with Admin(address) as admin:
        admin.create_topic(topic, partitions=2)
    producer = Producer(address, linger_ms=0, retries=0)
    try:
        assert producer.send(topic, b"durable", partition=0).get(5).offset == 0
        replica = instance.replicas[(topic, 0)]
        replica.log.flush = failing_flush  # the disk fails under partition 0 only
        with pytest.raises(DistlogError) as info:
            producer.send(topic, b"lost", partition=0).get(5)
        assert info.value.code == ErrorCode.STORAGE_ERROR
        with pytest.raises(DistlogError) as info:
            producer.send(topic, b"after", partition=0).get(5)
        assert info.value.code == ErrorCode.STORAGE_ERROR
        assert replica.log_end_offset == 2, "an offline partition must not take more writes"
        assert producer.send(topic, b"elsewhere", partition=1).get(5).offset == 0
    finally:
        producer.close(timeout=5)
    with Consumer(address, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0)])
        records = []
        with pytest.raises(DistlogError) as info:
            for _ in range(50):
                records.extend(consumer.poll(timeout=0.1))
        assert info.value.code == ErrorCode.STORAGE_ERROR
        assert b"lost" not in [r.value for r in records], "a write whose produce failed was served"


def test_an_offline_partition_can_be_deleted_and_its_topic_created_afresh(broker):
    instance, address = broker
    topic = f"s-{uuid.uuid4().hex[:8]}"
    with Admin(address) as admin:
        admin.create_topic(topic)
        producer = Producer(address, linger_ms=0, retries=0)
        try:
            instance.replicas[(topic, 0)].log.flush = failing_flush
            with pytest.raises(DistlogError):
                producer.send(topic, b"lost").get(5)
            admin.delete_topic(topic)
            admin.create_topic(topic)
            assert producer.send(topic, b"fresh").get(5).offset == 0
        finally:
            producer.close(timeout=5)
