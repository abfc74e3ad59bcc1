"""A partition whose log failed to reach the disk: its failed writes are never served, and it
takes no more writes, until a restart recovers it from what is on disk."""

import errno
import os
import time
import uuid

import pytest

from distlog.broker.metadata import place_replicas
from distlog.client import Admin, Consumer, DistlogError, ErrorCode, Producer
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    with running_brokers(str(tmp_path), 1) as (brokers, _):
        yield brokers[0], brokers[0].config.listen


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


def test_a_partition_a_follower_cannot_open_is_offline_and_the_broker_keeps_serving(tmp_path):
    topic = f"s-{uuid.uuid4().hex[:8]}"
    on_broker_2 = [p for p, replicas in enumerate(place_replicas(topic, 2, 1, [1, 2])) if replicas == [2]][0]
    with running_brokers(str(tmp_path), 2) as (brokers, threads):
        # something that is not a partition log sits where broker 2 would create one
        os.makedirs(os.path.join(brokers[1].config.data_dir, "topics"), exist_ok=True)
        with open(os.path.join(brokers[1].config.data_dir, "topics", f"{topic}-{on_broker_2}"), "w") as blocker:
            blocker.write("in the way")
        bootstrap = brokers[0].config.listen
        deadline_s = time.monotonic() + 5
        while 2 not in brokers[0].peer_sync_state:  # so the controller waits for broker 2 below
            assert time.monotonic() < deadline_s, "broker 2 never synced with the controller"
            time.sleep(0.01)
        with Admin(bootstrap) as admin:
            admin.create_topic(topic, partitions=2)
        producer = Producer(bootstrap, linger_ms=0, retries=0)
        try:
            with pytest.raises(DistlogError) as info:
                producer.send(topic, b"x", partition=on_broker_2).get(5)
            assert info.value.code == ErrorCode.STORAGE_ERROR
            assert producer.send(topic, b"x", partition=1 - on_broker_2).get(5).offset == 0
        finally:
            producer.close(timeout=5)
        assert threads[1].is_alive(), "broker 2 died applying the metadata"


def test_metadata_that_cannot_be_saved_is_applied_only_where_the_metadata_log_holds_it(tmp_path):
    """Brokers 1-3 are the controllers (they hold the metadata log); broker 4 only pulls images."""
    first, second = (f"s-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with running_brokers(str(tmp_path), 4) as (brokers, threads):
        standby, observer = brokers[1], brokers[3]
        assert observer.metadata_quorum is None and standby.metadata_quorum is not None

        def blocker(broker):  # a directory where the save writes its temp file
            path = os.path.join(broker.config.data_dir, f"metadata.json.{os.getpid()}.tmp")
            os.makedirs(path)
            return path

        with Admin(observer.config.listen, request_timeout_s=5) as admin:
            blocked = blocker(standby)
            admin.create_topic(first)  # committed by the controllers: the metadata log holds it
            wait_for(lambda: first in standby.metadata.topics, "the standby applying what its log committed")
            os.rmdir(blocked)

            blocked = blocker(observer)
            admin.create_topic(second, timeout_s=0.5)  # answered without the observer, which syncs meanwhile
            assert threads[3].is_alive(), "the observer died on a metadata version it could not save"
            assert second not in observer.metadata.topics, "applied a version it could not persist"
            os.rmdir(blocked)
            wait_for(lambda: second in observer.metadata.topics, "the observer catching up once it can save")
            versions = {broker.metadata.version for broker in brokers}
            wait_for(lambda: len({broker.metadata.version for broker in brokers}) == 1,
                     f"every broker on one metadata version (had {versions})")


def wait_for(condition, what, timeout_s=10.0):
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, f"no {what} within {timeout_s} s"
        time.sleep(0.01)  # polling a condition
