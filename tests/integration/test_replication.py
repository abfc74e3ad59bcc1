"""Replication on real broker processes (3 brokers, RF=3): leader and follower crashes (SIGKILL), an
isolated leader (fault rules on the real transport), a rolling restart; after each, every
acknowledged write is there exactly once and every replica's committed range is byte-identical."""

import signal
import time
import uuid

import pytest

from distlog.broker.launcher import restart_broker as restart, start_brokers, stop_brokers
from distlog.client import Admin, Consumer, TopicPartition
from distlog.client.connection import BrokerConnection
from distlog.client.probe import set_fault_rules
from distlog.log.batch_builder import build_batch
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import ACKS_ALL, ProduceRequest
from tests.integration.replication_helpers import (
    SteadyProducer, assert_every_ack_exactly_once, assert_replicas_identical, describe, leader_of,
    read_everything, sigkill, wait_for,
)

pytestmark = pytest.mark.integration

# Hang guards, generous on a loaded 2-core machine; the tests assert behaviour, not speed.
ELECTION_GUARD_S = 15
CATCH_UP_GUARD_S = 30


@pytest.fixture
def cluster(tmp_path):
    brokers = start_brokers(3, str(tmp_path))
    try:
        yield brokers
    finally:
        stop_brokers(brokers)


def new_topic(brokers, partitions=1) -> str:
    topic = f"r-{uuid.uuid4().hex[:8]}"
    with Admin(brokers[0].address) as admin:
        admin.create_topic(topic, partitions=partitions, replication_factor=3)
    wait_for(lambda: all(leader_of(brokers, topic, p) for p in range(partitions)), ELECTION_GUARD_S, "leaders elected")
    return topic


def broker_by_id(brokers, broker_id):
    return next(b for b in brokers if b.broker_id == broker_id)


def finish(brokers, topic, partitions, producer):
    """Every ack exactly once in what a consumer reads, then stop all and compare replicas."""
    live = next(b for b in brokers if b.process.poll() is None)
    records = read_everything(live.address, topic, partitions, expected=len(producer.acked))
    assert_every_ack_exactly_once(producer.acked, records)
    stop_brokers(brokers)
    assert_replicas_identical(brokers, topic, partitions)


def test_a_killed_leader_is_replaced_and_no_acknowledged_write_is_lost(cluster):
    topic = new_topic(cluster)
    with SteadyProducer(cluster[0].address, topic, partition=0) as producer:
        wait_for(lambda: len(producer.acked) >= 200, CATCH_UP_GUARD_S, "writes before the kill")
        old = leader_of(cluster, topic, 0)
        killed_at = time.monotonic()
        sigkill(broker_by_id(cluster, old))
        wait_for(lambda: leader_of(cluster, topic, 0, exclude=(old,)) not in (None, old), ELECTION_GUARD_S,
                 "a new leader")
        wait_for(lambda: producer.acked_after(killed_at) >= 200, CATCH_UP_GUARD_S, "writes acked by the new leader")
        restart(broker_by_id(cluster, old))
    assert not producer.failed, f"sends failed: {producer.failed[:3]}"
    finish(cluster, topic, 1, producer)


def test_a_killed_follower_loses_nothing_and_catches_up(cluster):
    topic = new_topic(cluster)
    leader = leader_of(cluster, topic, 0)
    follower = next(b for b in cluster if b.broker_id != leader)
    with SteadyProducer(cluster[0].address, topic, partition=0) as producer:
        wait_for(lambda: len(producer.acked) >= 200, CATCH_UP_GUARD_S, "writes before the kill")
        sigkill(follower)
        killed_at = time.monotonic()
        wait_for(lambda: producer.acked_after(killed_at) >= 300, CATCH_UP_GUARD_S, "writes with one follower down")
        restart(follower)
        wait_for(lambda: len(describe(cluster[0].address, topic)["partitions"][0]["in_sync"]) == 3,
                 CATCH_UP_GUARD_S, "the follower back in sync")
    assert not producer.failed, f"sends failed: {producer.failed[:3]}"
    finish(cluster, topic, 1, producer)


def isolate(brokers, isolated):
    """Cut `isolated` off from every other broker, both ways, on the real transport."""
    others = [f"broker-{b.broker_id}" for b in brokers if b is not isolated]
    set_fault_rules(isolated.address, {"drop_to": others, "drop_from": others}, timeout_s=5)
    for b in brokers:
        if b is not isolated:
            name = f"broker-{isolated.broker_id}"
            set_fault_rules(b.address, {"drop_to": [name], "drop_from": [name]}, timeout_s=5)


def heal(brokers):
    for b in brokers:
        set_fault_rules(b.address, {}, timeout_s=5)


def produce_directly(address, topic, value, timeout_ms=1500):
    """One acks=all produce straight to one broker: its ProduceResponse partition entry."""
    connection = BrokerConnection(address)
    try:
        request = ProduceRequest(ACKS_ALL, timeout_ms, [{"topic": topic, "partition": 0, "records": build_batch([value])}])
        return connection.request(request, timeout_ms / 1000 + 5).partitions[0]
    finally:
        connection.close()


def test_an_isolated_leader_accepts_no_write_and_the_majority_goes_on(cluster):
    topic = new_topic(cluster)
    old = broker_by_id(cluster, leader_of(cluster, topic, 0))
    majority = [b for b in cluster if b is not old]
    with SteadyProducer(majority[0].address, topic, partition=0) as producer:
        wait_for(lambda: len(producer.acked) >= 100, CATCH_UP_GUARD_S, "writes before the cut")
        isolate(cluster, old)
        cut_at = time.monotonic()
        doomed = produce_directly(old.address, topic, b"isolated-write")
        assert doomed["error_code"] in (ErrorCode.NOT_LEADER, ErrorCode.REQUEST_TIMED_OUT), \
            f"the isolated leader acknowledged an acks=all write: {doomed}"
        # check-quorum: the isolated leader steps down by itself
        wait_for(lambda: describe(old.address, topic)["partitions"][0]["leader"] != old.broker_id,
                 ELECTION_GUARD_S, "the isolated leader stepping down")
        refused = produce_directly(old.address, topic, b"isolated-write-2", timeout_ms=500)
        assert refused["error_code"] != 0, "a broker cut off from the majority took a write"
        # (Until they elect, the majority's brokers may still name the old leader.)
        wait_for(lambda: (lambda leader: leader if leader not in (None, old.broker_id) else None)(
            leader_of(majority, topic, 0)), ELECTION_GUARD_S, "a majority leader other than the old one")
        wait_for(lambda: producer.acked_after(cut_at) >= 200, CATCH_UP_GUARD_S, "writes on the majority side")
        heal(cluster)
        wait_for(lambda: len(describe(majority[0].address, topic)["partitions"][0]["in_sync"]) == 3,
                 CATCH_UP_GUARD_S, "the old leader back in sync")
    finish(cluster, topic, 1, producer)


def test_a_rolling_restart_under_load_fails_no_send(cluster):
    topic = new_topic(cluster, partitions=3)
    with SteadyProducer(cluster[0].address, topic, rate_per_s=300) as producer:
        wait_for(lambda: len(producer.acked) >= 100, CATCH_UP_GUARD_S, "writes before the restarts")
        for broker in cluster:
            assert broker.stop() == 0  # SIGTERM: leadership is handed over first
            stopped_at = time.monotonic()
            restart(broker)
            wait_for(lambda: producer.acked_after(stopped_at) >= 100, CATCH_UP_GUARD_S, "writes after a restart")
            wait_for(lambda: all(len(p["in_sync"]) == 3 for p in describe(cluster[0].address, topic)["partitions"]),
                     CATCH_UP_GUARD_S, "every replica back in sync")
    assert not producer.failed, f"{len(producer.failed)} sends failed in a rolling restart: {producer.failed[:3]}"
    finish(cluster, topic, 3, producer)


def test_describe_shows_leaders_epochs_in_sync_replicas_and_offsets_and_marks_under_replication(cluster):
    topic = new_topic(cluster, partitions=3)
    with Admin(cluster[0].address) as admin:
        with SteadyProducer(cluster[0].address, topic, rate_per_s=500, max_records=300) as producer:
            wait_for(lambda: len(producer.acked) == 300, CATCH_UP_GUARD_S, "300 acknowledged writes")
        per_partition = {p: sum(1 for part, _ in producer.acked.values() if part == p) for p in range(3)}
        described = wait_for(lambda: (lambda d: d if all(p["high_watermark"] == per_partition[p["partition"]]
                                                          for p in d["partitions"]) else None)(admin.describe_topic(topic)),
                             CATCH_UP_GUARD_S, "every high watermark at the acknowledged count")
        for p in described["partitions"]:
            assert p["status"] == "ok" and sorted(p["in_sync"]) == [1, 2, 3] and p["leader_epoch"] >= 1
            assert p["log_end_offset"] == p["high_watermark"] and p["log_start_offset"] == 0
        victim = next(b for b in cluster if b.broker_id == 3)
        sigkill(victim)
        # A dead follower leaves the in-sync replicas after replica.lag.time.max.ms (10 s).
        described = wait_for(lambda: (lambda d: d if all(p["status"] == "under-replicated" for p in d["partitions"])
                                      else None)(admin.describe_topic(topic)), 30, "every partition under-replicated")
        for p in described["partitions"]:
            assert 3 not in p["in_sync"] and p["leader"] in (1, 2)


def test_a_paused_leader_is_replaced_and_the_producer_moves_on_without_waiting_out_its_timeout(cluster):
    topic = new_topic(cluster)
    with SteadyProducer(cluster[0].address, topic, partition=0, request_timeout_ms=30_000) as producer:
        wait_for(lambda: len(producer.acked) >= 200, CATCH_UP_GUARD_S, "writes before the pause")
        old = broker_by_id(cluster, leader_of(cluster, topic, 0))
        old.process.send_signal(signal.SIGSTOP)
        try:
            paused_at = time.monotonic()
            # A paused leader never says NOT_LEADER; the producer must notice the new leader on its
            # own, well before its 30 s request timeout (the guard says "well before", not how fast).
            wait_for(lambda: producer.acked_after(paused_at) >= 200, 15, "writes acked by a new leader")
        finally:
            old.process.send_signal(signal.SIGCONT)
        wait_for(lambda: len(describe(cluster[0].address, topic)["partitions"][0]["in_sync"]) == 3,
                 CATCH_UP_GUARD_S, "the old leader back in sync")
    assert not producer.failed, f"sends failed: {producer.failed[:3]}"
    finish(cluster, topic, 1, producer)


def test_a_consumer_of_a_paused_leader_reads_on_from_the_new_one_without_waiting_out_its_timeout(cluster):
    topic = new_topic(cluster)
    with SteadyProducer(cluster[0].address, topic, partition=0) as producer, \
            Consumer(cluster[0].address, request_timeout_ms=30_000) as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        seen = set()
        wait_for(lambda: seen.update(r.value for r in consumer.poll(timeout=0.2)) or len(seen) >= 200,
                 CATCH_UP_GUARD_S, "records before the pause")
        old = broker_by_id(cluster, leader_of(cluster, topic, 0))
        old.process.send_signal(signal.SIGSTOP)
        try:
            paused_at = time.monotonic()
            wait_for(lambda: producer.acked_after(paused_at) >= 100, 15, "writes acked by a new leader")
            with producer._lock:  # the producer's callbacks add to it meanwhile
                fresh = set(producer.acked) - seen
            # The guard is well inside the 30 s request timeout: the consumer must move on by itself.
            wait_for(lambda: seen.update(r.value for r in consumer.poll(timeout=0.2)) or fresh <= seen, 15,
                     "records written after the pause, read from the new leader")
        finally:
            old.process.send_signal(signal.SIGCONT)
