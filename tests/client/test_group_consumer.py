"""Consumer in a consumer group, against the fake coordinator of tests/client/group_fakes.py:
joining, sharing partitions, committing, handing partitions over, losing them, leaving."""

import time

import pytest

from distlog.client import Consumer, TopicPartition
from distlog.client.group import CommitFailedError
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import (
    LEAVE_EPOCH,
    ConsumerGroupHeartbeatRequest,
    FindCoordinatorRequest,
    OffsetCommitRequest,
)
from tests.client.group_fakes import FakeGroupCluster

T = "t"
GROUP = "g"
HANG_GUARD_S = 10.0  # bounds waits that should end much sooner
MARGIN_S = 1.0  # scheduling on a busy machine, on top of a timeout


@pytest.fixture
def cluster():
    """Two brokers (broker 1 coordinates), topic t of 2 partitions with 5 records each."""
    fake = FakeGroupCluster(2, T, 2)
    for p, log in enumerate(fake.logs):
        log.extend(b"p%d-%d" % (p, i) for i in range(5))
    yield fake
    fake.stop()


@pytest.fixture
def consumers(cluster):
    made = []

    def make(**options):
        consumer = Consumer(cluster.bootstrap, GROUP, fetch_max_wait_ms=50, **options)
        made.append(consumer)
        return consumer

    yield make
    for consumer in made:
        consumer.close()


def poll_until(condition, *consumers, timeout_s=HANG_GUARD_S):
    """Poll every consumer in turn until condition() holds; the records each got."""
    got = {id(c): [] for c in consumers}
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline_s, "condition not reached in time"
        for consumer in consumers:
            got[id(consumer)].extend(consumer.poll(timeout=0.05))
    return [got[id(c)] for c in consumers]


def tp(p):
    return TopicPartition(T, p)


def test_a_subscribed_consumer_joins_gets_every_partition_and_reads_from_the_start(cluster, consumers):
    consumer = consumers()
    assigned = []
    consumer.subscribe([T], on_assign=assigned.extend)
    records = read_all(consumer, 10)
    assert sorted(assigned) == [tp(0), tp(1)] and consumer.assignment() == {tp(0), tp(1)}
    assert sorted(r.value for r in records) == sorted(v for log in cluster.logs for v in log)
    assert cluster.members(GROUP) == {"member-1": {(T, 0), (T, 1)}}


def read_all(consumer, count):
    records = []
    deadline_s = time.monotonic() + HANG_GUARD_S
    while len(records) < count:
        assert time.monotonic() < deadline_s, f"read {len(records)} of {count} records"
        records.extend(consumer.poll(timeout=0.05))
    return records


def test_commit_stores_the_positions_and_a_new_member_starts_there(cluster, consumers):
    first = consumers(enable_auto_commit=False)
    first.subscribe([T])
    read_all(first, 10)
    first.commit()
    assert cluster.committed(GROUP) == {(T, 0): 5, (T, 1): 5}
    assert first.committed([tp(0), tp(1)]) == {tp(0): 5, tp(1): 5}
    first.close()
    cluster.logs[0].append(b"new")
    second = consumers(enable_auto_commit=False)
    second.subscribe([T])
    assert [r.value for r in read_all(second, 1)] == [b"new"]


def test_commit_of_given_offsets_and_committed_of_a_partition_without_one(cluster, consumers):
    consumer = consumers(enable_auto_commit=False)
    consumer.subscribe([T])
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    consumer.commit({tp(0): 2})
    assert consumer.committed([tp(0), tp(1)]) == {tp(0): 2, tp(1): None}


def test_auto_commit_commits_positions_during_poll(cluster, consumers):
    consumer = consumers(auto_commit_interval_ms=100)
    consumer.subscribe([T])
    read_all(consumer, 10)
    poll_until(lambda: cluster.committed(GROUP) == {(T, 0): 5, (T, 1): 5}, consumer)


def test_a_second_member_gets_a_partition_only_after_the_first_revoked_and_committed_it(cluster, consumers):
    events = []
    first = consumers(auto_commit_interval_ms=60_000)
    first.subscribe([T], on_assign=lambda tps: events.append(("a1", tps)),
                    on_revoke=lambda tps: events.append(("r1", tps, dict(cluster.committed(GROUP)))))
    read_all(first, 10)
    second = consumers(auto_commit_interval_ms=60_000)
    second.subscribe([T], on_assign=lambda tps: events.append(("a2", tps, dict(cluster.committed(GROUP)))))
    poll_until(lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1, first, second)
    moved = next(iter(second.assignment()))
    kinds = [event[0] for event in events]
    assert kinds == ["a1", "r1", "a2"]
    assert events[1][1] == [moved]
    # revocation commits its position (auto-commit) before the partition goes to the new owner
    assert events[2][1] == [moved] and events[2][2][moved] == 5
    assert second.position(moved) == 5  # starts where the first one stopped: nothing read twice


def test_a_fenced_member_loses_its_partitions_without_committing_and_joins_again(cluster, consumers):
    lost, revoked = [], []
    consumer = consumers(auto_commit_interval_ms=60_000)
    consumer.subscribe([T], on_revoke=revoked.extend, on_lost=lost.extend)
    read_all(consumer, 10)
    cluster.fence(GROUP, "member-1")
    [again] = poll_until(lambda: lost and "member-1" in cluster.rejoined_as, consumer)
    assert sorted(lost) == [tp(0), tp(1)] and revoked == []
    assert cluster.committed(GROUP) == {}  # nothing committed for the lost partitions
    # Given back as a new member with nothing committed: read again from auto_offset_reset (earliest).
    again += read_all(consumer, 10 - len(again))
    assert sorted(r.value for r in again) == sorted(v for log in cluster.logs for v in log)


def test_an_expired_member_is_unknown_and_joins_again_under_its_own_id(cluster, consumers):
    consumer = consumers()
    consumer.subscribe([T])
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    cluster.expire(GROUP, "member-1")
    poll_until(lambda: "member-1" in cluster.rejoined_as and len(consumer.assignment()) == 2, consumer)


def test_a_moved_coordinator_is_found_again_and_the_partitions_kept(cluster, consumers):
    revoked = []
    consumer = consumers()
    consumer.subscribe([T], on_revoke=revoked.extend)
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    finds = len(cluster.requests(FindCoordinatorRequest))
    cluster.coordinator_id = 2  # broker 1 now answers NOT_COORDINATOR; broker 2 takes the group over
    poll_until(lambda: any(broker == 2 and isinstance(r, ConsumerGroupHeartbeatRequest)
                           for broker, r in list(cluster.group_requests)), consumer)
    assert len(cluster.requests(FindCoordinatorRequest)) > finds
    assert revoked == [] and consumer.assignment() == {tp(0), tp(1)}


def test_coordinator_not_available_while_offsets_topic_is_created_is_retried(cluster, consumers):
    cluster.find_errors.extend([ErrorCode.COORDINATOR_NOT_AVAILABLE] * 3)
    consumer = consumers()
    consumer.subscribe([T])
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    assert len(cluster.requests(FindCoordinatorRequest)) >= 4


def test_another_heartbeat_error_is_raised_from_poll_with_the_brokers_message(cluster, consumers):
    cluster.heartbeat_errors.append(ErrorCode.INVALID_GROUP_ID)
    consumer = consumers()
    consumer.subscribe([T])
    with pytest.raises(DistlogError) as raised:
        poll_until(lambda: False, consumer, timeout_s=HANG_GUARD_S)
    assert raised.value.code == ErrorCode.INVALID_GROUP_ID and "injected" in str(raised.value)
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)  # and goes on afterwards


def test_a_stale_epoch_commit_heartbeats_and_is_retried_once(cluster, consumers):
    consumer = consumers(enable_auto_commit=False)
    consumer.subscribe([T])
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    cluster.commit_errors.append(ErrorCode.STALE_MEMBER_EPOCH)
    heartbeats = len(cluster.requests(ConsumerGroupHeartbeatRequest))
    consumer.commit({tp(0): 3})
    assert cluster.committed(GROUP)[(T, 0)] == 3
    assert len(cluster.requests(ConsumerGroupHeartbeatRequest)) > heartbeats


def test_a_commit_by_a_member_the_group_forgot_fails(cluster, consumers):
    consumer = consumers(enable_auto_commit=False)
    consumer.subscribe([T])
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    cluster.commit_errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
    with pytest.raises(CommitFailedError):
        consumer.commit({tp(0): 3})


def test_close_commits_and_leaves_at_once_so_the_other_member_takes_over(cluster, consumers):
    first = consumers(auto_commit_interval_ms=60_000)
    first.subscribe([T])
    read_all(first, 10)
    second = consumers()
    second.subscribe([T])
    poll_until(lambda: len(second.assignment()) == 1, first, second)
    first.close()
    assert [r.member_epoch for r in cluster.requests(ConsumerGroupHeartbeatRequest)
            if r.member_id == "member-1"][-1] == LEAVE_EPOCH
    assert cluster.committed(GROUP) == {(T, 0): 5, (T, 1): 5}
    poll_until(lambda: len(second.assignment()) == 2, second)
    assert {second.position(tp(0)), second.position(tp(1))} == {5}


def test_close_is_bounded_when_the_coordinator_does_not_answer(cluster, consumers):
    consumer = consumers()
    consumer.subscribe([T])
    poll_until(lambda: consumer.assignment() == {tp(0), tp(1)}, consumer)
    cluster.brokers[1].silent = True
    started_s = time.monotonic()
    consumer.close(timeout=1.0)
    assert time.monotonic() - started_s < 1.0 + MARGIN_S


def test_poll_keeps_its_timeout_while_a_heartbeat_goes_unanswered(cluster, consumers):
    consumer = consumers()
    consumer.subscribe([T])
    read_all(consumer, 10)
    cluster.brokers[1].silent = True  # the coordinator (and partition 0's leader) is paused
    for _ in range(5):
        started_s = time.monotonic()
        consumer.poll(timeout=0.2)
        assert time.monotonic() - started_s < 0.2 + MARGIN_S
    assert cluster.brokers[1].count(ConsumerGroupHeartbeatRequest) >= 1
    consumer.close(timeout=0.5)  # (the leave goes unanswered too)


def test_unsubscribe_revokes_commits_and_leaves(cluster, consumers):
    revoked = []
    consumer = consumers(auto_commit_interval_ms=60_000)
    consumer.subscribe([T], on_revoke=revoked.extend)
    read_all(consumer, 10)
    consumer.unsubscribe()
    assert sorted(revoked) == [tp(0), tp(1)] and consumer.assignment() == set()
    assert cluster.members(GROUP) == {} and cluster.committed(GROUP) == {(T, 0): 5, (T, 1): 5}
    consumer.assign([tp(0)])  # manual assignment is allowed again


def test_manual_assignment_with_a_group_commits_outside_the_membership(cluster, consumers):
    consumer = consumers(enable_auto_commit=False)
    consumer.assign([tp(1)])
    consumer.seek(tp(1), 0)
    read_all(consumer, 5)
    consumer.commit()
    [commit] = cluster.requests(OffsetCommitRequest)
    assert (commit.member_id, commit.member_epoch) == ("", LEAVE_EPOCH)
    assert cluster.committed(GROUP) == {(T, 1): 5}


def test_manual_assignment_auto_commits_too(cluster, consumers):
    consumer = consumers(auto_commit_interval_ms=50)
    consumer.assign([tp(0)])
    consumer.seek(tp(0), 0)
    read_all(consumer, 5)
    poll_until(lambda: cluster.committed(GROUP) == {(T, 0): 5}, consumer)


def test_mixing_subscribe_and_assign_or_groups_calls_without_a_group_are_refused(cluster, consumers):
    consumer = consumers()
    consumer.subscribe([T])
    with pytest.raises(ValueError, match="unsubscribe"):
        consumer.assign([tp(0)])
    plain = Consumer(cluster.bootstrap)
    try:
        with pytest.raises(ValueError, match="group_id"):
            plain.subscribe([T])
        with pytest.raises(ValueError, match="group_id"):
            plain.commit()
    finally:
        plain.close()
