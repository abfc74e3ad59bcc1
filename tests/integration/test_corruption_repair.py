"""Corruption on real brokers at RF=3 (issue #12): bytes really flipped or cut in a segment file.

A damaged replica is repaired from the others and nothing acknowledged is lost: every acked
record is read back exactly once, the replicas end byte-identical, and `topic verify` is clean
after the repair. Damage on every replica leaves the partition offline, never shorter."""

import json
import os
import time
import uuid

import pytest

from distlog.broker.launcher import restart_broker as restart, start_brokers, stop_brokers
from distlog.client import Admin
from distlog.client.connection import BrokerConnection
from distlog.log.batch import HEADER_SIZE, iter_batches
from distlog.log.recovery import DAMAGE_RECORD, QUARANTINE_DIR
from distlog.log.verify import verify_topic
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import FetchRequest
from tests.integration.replication_helpers import (
    SteadyProducer, assert_every_ack_exactly_once, assert_replicas_identical, describe, leader_of,
    read_everything, sigkill, wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ELECTION_GUARD_S = 15
REPAIR_GUARD_S = 45  # the scrub runs on the 5 s housekeeping turn; then a refetch
SEGMENT_BYTES = 8192


@pytest.fixture
def cluster(tmp_path):
    brokers = start_brokers(3, str(tmp_path))
    try:
        yield brokers
    finally:
        stop_brokers(brokers)


def _topic_with_records(brokers, count=3000):
    """A 1-partition RF=3 topic of many small segments holding `count` acknowledged records."""
    topic = f"c-{uuid.uuid4().hex[:8]}"
    with Admin(brokers[0].address) as admin:
        admin.create_topic(topic, partitions=1, replication_factor=3, config={"segment.bytes": str(SEGMENT_BYTES)})
    wait_for(lambda: leader_of(brokers, topic, 0), ELECTION_GUARD_S, "a leader")
    producer = SteadyProducer(brokers[0].address, topic, partition=0, rate_per_s=2000, max_records=count)
    with producer:
        wait_for(lambda: len(producer.acked) + len(producer.failed) >= count, 60, "the records acknowledged")
    assert not producer.failed, producer.failed[:3]
    wait_for(lambda: _in_sync(brokers, topic) == 3, 30, "every replica in sync")
    return topic, producer


def _in_sync(brokers, topic):
    try:
        return len(describe(brokers[0].address, topic)["partitions"][0]["in_sync"])
    except Exception:
        return 0


def _partition_dir(broker, topic):
    return os.path.join(broker.data_dir, "topics", f"{topic}-0")


def _closed_segment(broker, topic, which=1):
    directory = _partition_dir(broker, topic)
    names = sorted(n for n in os.listdir(directory) if n.endswith(".log"))
    assert len(names) > which + 2, f"too few segments to damage an older one: {names}"
    return os.path.join(directory, names[which])


def _flip_payload_bit(path, batch=1):
    """Flip one bit in the payload of a batch of the segment at path (through the page cache,
    so a running broker's next read of it sees it too)."""
    with open(path, "rb") as f:
        data = f.read()
    position = 0
    for _ in range(batch):
        position += next(iter_batches(data[position:], verify=False)).batch_length
    target = position + HEADER_SIZE + 30
    with open(path, "r+b") as f:
        f.seek(target)
        f.write(bytes([data[target] ^ 0x04]))
        f.flush()
        os.fsync(f.fileno())


def _verify(brokers, topic):
    """verify_topic over the brokers' files, with the high watermark a live broker reports."""
    high_watermarks = {}
    live = [b for b in brokers if b.process.poll() is None]
    if live:
        watermark = describe(live[0].address, topic)["partitions"][0]["high_watermark"]
        if watermark is not None and watermark > 0:
            high_watermarks[0] = watermark - 1  # the high watermark is the first offset not committed
    return verify_topic({b.broker_id: b.data_dir for b in brokers}, topic, high_watermarks=high_watermarks)


def _repaired(brokers, topic):
    """Verify is clean and a quarantine exists whose damage is marked repaired."""
    [report] = _verify(brokers, topic)
    return report["ok"] and any(_repaired_records(b, topic) for b in brokers)


def _repaired_records(broker, topic):
    root = os.path.join(_partition_dir(broker, topic), QUARANTINE_DIR)
    if not os.path.isdir(root):
        return []
    records = []
    for name in os.listdir(root):
        with open(os.path.join(root, name, DAMAGE_RECORD)) as f:
            record = json.load(f)
        if record["repaired_at"] is not None:
            records.append(record)
    return records


def _finish(brokers, topic, producer):
    records = read_everything(brokers[0].address, topic, 1, expected=len(producer.acked))
    assert_every_ack_exactly_once(producer.acked, records)
    assert len(records) == len(producer.acked)
    stop_brokers(brokers)
    assert_replicas_identical(brokers, topic, 1)
    [report] = _verify(brokers, topic)
    assert report["ok"], report


def test_a_flipped_bit_in_a_followers_older_segment_is_found_and_repaired(cluster):
    topic, producer = _topic_with_records(cluster)
    leader = leader_of(cluster, topic, 0)
    follower = next(b for b in cluster if b.broker_id != leader)
    sigkill(follower)
    _flip_payload_bit(_closed_segment(follower, topic))  # the index is intact: open trusts it, the scrub finds it
    restart(follower)
    wait_for(lambda: _repaired(cluster, topic), REPAIR_GUARD_S, "the follower's copy repaired")
    [record] = _repaired_records(follower, topic)
    assert record["held_until"] >= len(producer.acked)
    _finish(cluster, topic, producer)


def test_a_leader_that_reads_damage_in_its_own_log_steps_down_and_is_repaired(cluster):
    topic, producer = _topic_with_records(cluster)
    leader_id = leader_of(cluster, topic, 0)
    leader = next(b for b in cluster if b.broker_id == leader_id)
    _flip_payload_bit(_closed_segment(leader, topic, which=2))
    # A consumer reading from the start reaches the damaged batch on the leader, which answers
    # CORRUPT_MESSAGE for it, steps down and repairs; the consumer reads on from the new leader.
    records = read_everything(cluster[0].address, topic, 1, expected=len(producer.acked), timeout_s=60)
    assert_every_ack_exactly_once(producer.acked, records)
    assert leader_of(cluster, topic, 0) != leader_id
    wait_for(lambda: _repaired(cluster, topic), REPAIR_GUARD_S, "the old leader's copy repaired")
    assert _repaired_records(leader, topic)
    _finish(cluster, topic, producer)


def test_a_truncated_closed_segment_is_quarantined_and_refetched(cluster):
    topic, producer = _topic_with_records(cluster)
    victim = next(b for b in cluster if b.broker_id != leader_of(cluster, topic, 0))
    sigkill(victim)
    damaged = _closed_segment(victim, topic, which=3)
    original = open(damaged, "rb").read()
    with open(damaged, "r+b") as f:
        f.truncate(len(original) // 2)
    restart(victim)
    wait_for(lambda: _repaired(cluster, topic), REPAIR_GUARD_S, "the truncated copy repaired")
    [quarantine] = os.listdir(os.path.join(_partition_dir(victim, topic), QUARANTINE_DIR))
    kept = open(os.path.join(_partition_dir(victim, topic), QUARANTINE_DIR, quarantine, os.path.basename(damaged)),
                "rb").read()
    assert kept == original[:len(original) // 2]  # the damaged file kept as found, for inspection
    _finish(cluster, topic, producer)


def test_the_same_damage_on_every_replica_leaves_the_partition_offline_not_shorter(cluster):
    topic, producer = _topic_with_records(cluster)
    for broker in cluster:
        sigkill(broker)
    for broker in cluster:
        damaged = _closed_segment(broker, topic, which=2)
        _flip_payload_bit(damaged)
        os.unlink(damaged[:-4] + ".index")  # open scans it whole and finds the damage at once
    for broker in cluster:
        restart(broker)
    # No replica may lead: each lost entries that may be committed. Watched for a while (a
    # window of several election timeouts, not a wait for anything).
    watch_until = time.monotonic() + 5
    while time.monotonic() < watch_until:
        assert all(describe(b.address, topic)["partitions"][0]["leader"] is None for b in cluster)
        time.sleep(0.2)
    connection = BrokerConnection(cluster[0].address)
    try:
        request = FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                               partitions=[{"topic": topic, "partition": 0, "fetch_offset": 0, "max_bytes": 1 << 20}])
        [entry] = connection.request(request, 5).partitions
    finally:
        connection.close()
    assert entry["error_code"] == ErrorCode.NOT_LEADER and "damaged" in entry["error_message"], entry
    assert entry["records"] == b""
    [report] = _verify(cluster, topic)
    assert not report["ok"]
    assert all(any("not repaired" in p["problem"] for p in replica["problems"]) for replica in report["replicas"])
    # Nothing was deleted: each replica's quarantine holds the records past the damage.
    for broker in cluster:
        root = os.path.join(_partition_dir(broker, topic), QUARANTINE_DIR)
        [quarantine] = os.listdir(root)
        assert len([n for n in os.listdir(os.path.join(root, quarantine)) if n.endswith(".log")]) >= 3
