"""Client deadlines (issue #9): one unreachable broker or leaderless partition never stalls the rest.

Driven against fake brokers on loopback ports (tests/client/fakes.py). A broker "paused" is one of
two things, as SIGSTOP is to a client: a SilentListener when the client had not connected yet
(the TCP handshake completes, nothing else), or a FakeBroker set silent when it had (requests go
out, no answer comes back).
"""

import time

import pytest

from distlog.client import Consumer, Producer, RequestTimedOutError
from distlog.client.cluster import ClusterView
from distlog.client.consumer import TopicPartition
from distlog.protocol.errors import DistlogError
from distlog.protocol.messages import MetadataRequest, ProduceRequest
from tests.client.fakes import FakeCluster, SilentListener

TOPIC = "t"
# What "within the timeout" allows on top: scheduling on a busy two-core machine, not a retry.
MARGIN_S = 1.0
# Bounds waits that should end much sooner, so a regression fails instead of hanging.
HANG_GUARD_S = 10.0
from distlog.client.cluster import REFRESH_BACKOFF_MAX_S

# Backing off to REFRESH_BACKOFF_MAX_S, 2 s of waiting holds this many lookups and a few more for
# the first short steps; a loop without backoff made thousands.
LOOKUPS_IN_2_S = int(2 / REFRESH_BACKOFF_MAX_S) + 4


@pytest.fixture
def listener():
    silent = SilentListener()
    yield silent
    silent.close()


def make_cluster(brokers, partitions, records_per_partition=0):
    cluster = FakeCluster(brokers, TOPIC, partitions)
    for p, log in enumerate(cluster.logs):
        log.extend(b"p%d-%d" % (p, i) for i in range(records_per_partition))
    return cluster


@pytest.fixture
def two_brokers():
    """Partition 0 led by broker 1, partition 1 by broker 2, three records each."""
    cluster = make_cluster(2, 2, records_per_partition=3)
    yield cluster
    cluster.stop()


def pause(cluster, broker_id, how, listener):
    """Make `broker_id` unreachable the way a paused broker is (see the module docstring)."""
    if how == "before-connect":
        cluster.advertised[broker_id] = listener.address
    else:
        cluster.brokers[broker_id].silent = True


def wait_for(condition, what):
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"hang guard: {what} did not happen within {HANG_GUARD_S} s"
        time.sleep(0.01)


def poll_until(consumer, count):
    """Poll until `count` records came (or the hang guard is up); returns them."""
    records, deadline = [], time.monotonic() + HANG_GUARD_S
    while len(records) < count and time.monotonic() < deadline:
        records.extend(consumer.poll(timeout=0.5))
    return records


# ------------------------------------------------------------------------------- metadata


def test_metadata_comes_from_the_next_broker_while_the_first_never_answers(two_brokers, listener):
    view = ClusterView([listener.address, two_brokers.brokers[1].address], request_timeout_s=10)
    try:
        started = time.monotonic()
        view.refresh([TOPIC])
        elapsed_s = time.monotonic() - started
    finally:
        view.close()
    assert view.leader_endpoint(TOPIC, 0) == two_brokers.brokers[1].address
    # Before the fix the first broker had the whole of its share (10 s / 2) to answer.
    assert elapsed_s < MARGIN_S, f"one paused bootstrap broker held the metadata lookup for {elapsed_s:.2f} s"


def test_a_broker_that_left_a_metadata_request_unanswered_is_asked_last_next_time(two_brokers):
    two_brokers.brokers[1].silent = True
    view = ClusterView(two_brokers.bootstrap, request_timeout_s=10)
    try:
        view.refresh([TOPIC])
        view.refresh([TOPIC])
    finally:
        view.close()
    assert two_brokers.brokers[1].count(MetadataRequest) == 1, "the silent broker was asked first again"
    assert two_brokers.brokers[2].count(MetadataRequest) == 2


def test_metadata_with_an_older_leader_epoch_does_not_bring_back_the_old_leader(two_brokers):
    """KIP-320: a broker that has not heard of an election yet still names the old leader."""
    addresses = {i: b.address for i, b in two_brokers.brokers.items()}
    view = ClusterView(two_brokers.bootstrap)
    try:
        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 2, 5
        view.refresh([TOPIC])
        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 1, 4  # stale
        view.refresh([TOPIC])
        assert view.leader_endpoint(TOPIC, 0) == addresses[2]

        view.invalidate(TOPIC, 0)  # the leader said NOT_LEADER
        view.refresh([TOPIC])
        assert view.leader_endpoint(TOPIC, 0) is None, "stale metadata brought back a leader of an older epoch"

        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 1, 6
        view.refresh([TOPIC])
        assert view.leader_endpoint(TOPIC, 0) == addresses[1]

        view.forget(TOPIC)  # the topic is gone (maybe created again): its epochs start over
        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 2, 0
        view.refresh([TOPIC])
        assert view.leader_endpoint(TOPIC, 0) == addresses[2]
    finally:
        view.close()


# ------------------------------------------------------------------------------- consumer


@pytest.mark.parametrize("how", ["before-connect", "after-connect"])
def test_poll_returns_the_reachable_partitions_records_within_its_timeout(two_brokers, listener, how):
    pause(two_brokers, 2, how, listener)
    with Consumer(two_brokers.brokers[1].address, request_timeout_ms=5_000) as consumer:
        consumer.assign([(TOPIC, 0), (TOPIC, 1)])
        consumer.seek_to_beginning()
        started = time.monotonic()
        records = consumer.poll(timeout=1.0)
        elapsed_s = time.monotonic() - started
        assert [r.value for r in records] == [b"p0-0", b"p0-1", b"p0-2"]
        assert elapsed_s < 1.0 + MARGIN_S, f"poll(timeout=1) took {elapsed_s:.2f} s"

        started = time.monotonic()
        assert consumer.poll(timeout=0.5) == []  # nothing more can come: the timeout holds
        assert time.monotonic() - started < 0.5 + MARGIN_S


def test_poll_waits_out_a_partition_without_a_leader_without_spinning_then_reads_it(two_brokers):
    two_brokers.leaders[0] = None  # an election is under way
    with Consumer(two_brokers.bootstrap) as consumer:
        consumer.assign([(TOPIC, 0)])
        consumer.seek_to_beginning()
        asked_before = sum(b.count(MetadataRequest) for b in two_brokers.brokers.values())
        started = time.monotonic()
        assert consumer.poll(timeout=2.0) == []
        assert time.monotonic() - started < 2.0 + MARGIN_S
        asked = sum(b.count(MetadataRequest) for b in two_brokers.brokers.values()) - asked_before
        # backing off from 0.1 s to 1 s, about 5 lookups fit in 2 s; asking every turn is 20
        assert asked <= LOOKUPS_IN_2_S, f"{asked} metadata requests in 2 s while waiting for a leader"

        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 2, 1
        assert [r.value for r in poll_until(consumer, 3)] == [b"p0-0", b"p0-1", b"p0-2"]


def test_a_consumer_follows_a_leader_change_through_a_leaderless_moment(two_brokers):
    with Consumer(two_brokers.bootstrap, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(TOPIC, 0)])
        consumer.seek((TOPIC, 0), 0)
        assert len(poll_until(consumer, 3)) == 3
        with two_brokers.lock:  # the election: broker 1 steps down, none leads, then broker 2 does
            two_brokers.leaders[0] = None
            two_brokers.logs[0].append(b"after the election")
        assert consumer.poll(timeout=0.5) == []  # the consumer's fetch to broker 1 is answered NOT_LEADER
        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 2, 1
        assert [r.value for r in poll_until(consumer, 1)] == [b"after the election"]


def test_position_waits_at_most_its_timeout_for_a_leader_that_does_not_answer(two_brokers, listener):
    pause(two_brokers, 2, "before-connect", listener)
    with Consumer(two_brokers.brokers[1].address) as consumer:
        consumer.assign([(TOPIC, 0), (TOPIC, 1)])
        consumer.seek_to_beginning()
        assert consumer.position((TOPIC, 0), timeout=5) == 0
        started = time.monotonic()
        with pytest.raises(RequestTimedOutError):
            consumer.position(TopicPartition(TOPIC, 1), timeout=0.5)
        assert time.monotonic() - started < 0.5 + MARGIN_S


# ------------------------------------------------------------------------------- producer


@pytest.mark.parametrize("how", ["before-connect", "after-connect"])
def test_sends_to_reachable_leaders_are_acknowledged_while_another_leader_is_paused(two_brokers, listener, how):
    pause(two_brokers, 2, how, listener)
    bootstrap = [two_brokers.advertised[2], two_brokers.brokers[1].address]  # the paused one first
    producer = Producer(bootstrap, linger_ms=0, delivery_timeout_ms=60_000)
    try:
        started = time.monotonic()  # send() looks the topic up, so the clock starts before it
        stuck = [producer.send(TOPIC, b"to paused %d" % i, partition=1) for i in range(20)]
        flowing = [producer.send(TOPIC, b"to healthy %d" % i, partition=0) for i in range(20)]
        offsets = [future.get(timeout=HANG_GUARD_S).offset for future in flowing]
        acked_in_s = time.monotonic() - started
        assert offsets == list(range(3, 23))
        assert acked_in_s < 3.0, f"records for a healthy leader took {acked_in_s:.2f} s to be acknowledged"
        assert not any(future.done() for future in stuck)

        started = time.monotonic()
        with pytest.raises(RequestTimedOutError):
            producer.flush(timeout=0.5)
        assert time.monotonic() - started < 0.5 + MARGIN_S
    finally:
        started = time.monotonic()
        producer.close(timeout=0.5)
        closed_in_s = time.monotonic() - started
    assert closed_in_s < 0.5 + MARGIN_S, f"close(timeout=0.5) took {closed_in_s:.2f} s"
    assert all(isinstance(future.exception(0), DistlogError) for future in stuck)


def test_a_producer_waits_out_a_leaderless_partition_without_spinning_then_delivers(two_brokers):
    two_brokers.leaders[0] = None
    producer = Producer(two_brokers.bootstrap, linger_ms=0)
    try:
        producer.partitions_for(TOPIC)
        asked_before = sum(b.count(MetadataRequest) for b in two_brokers.brokers.values())
        future = producer.send(TOPIC, b"during the election", partition=0)
        with pytest.raises(RequestTimedOutError):
            future.get(timeout=2.0)  # no leader to send to
        asked = sum(b.count(MetadataRequest) for b in two_brokers.brokers.values()) - asked_before
        assert asked <= LOOKUPS_IN_2_S, f"{asked} metadata requests in 2 s while waiting for a leader"
        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 2, 1
        assert future.get(timeout=HANG_GUARD_S).offset == 3
    finally:
        producer.close(timeout=1)


def test_a_producer_follows_a_leader_change_through_a_leaderless_moment(two_brokers):
    producer = Producer(two_brokers.bootstrap, linger_ms=0, retry_backoff_ms=10)
    try:
        assert producer.send(TOPIC, b"before", partition=0).get(timeout=HANG_GUARD_S).offset == 3
        two_brokers.leaders[0] = None  # broker 1 steps down; now it answers NOT_LEADER
        future = producer.send(TOPIC, b"after", partition=0)
        wait_for(lambda: two_brokers.brokers[1].count(ProduceRequest) >= 2, "the NOT_LEADER answer")
        two_brokers.leaders[0], two_brokers.leader_epochs[0] = 2, 1
        assert future.get(timeout=HANG_GUARD_S).offset == 4
    finally:
        producer.close(timeout=1)
    assert two_brokers.logs[0][3:] == [b"before", b"after"]


def test_a_batch_whose_leader_stopped_answering_goes_to_the_leader_elected_meanwhile(two_brokers):
    """A paused leader says nothing, not NOT_LEADER: the request timing out is the only sign."""
    producer = Producer(two_brokers.bootstrap, linger_ms=0, request_timeout_ms=500, retry_backoff_ms=10)
    try:
        producer.partitions_for(TOPIC)
        two_brokers.brokers[2].silent = True
        future = producer.send(TOPIC, b"while broker 2 is paused", partition=1)
        wait_for(lambda: two_brokers.brokers[2].count(ProduceRequest) >= 1, "the produce to the paused leader")
        two_brokers.leaders[1], two_brokers.leader_epochs[1] = 1, 1  # elected while broker 2 is away
        assert future.get(timeout=HANG_GUARD_S).offset == 3
    finally:
        producer.close(timeout=1)
