"""GroupMembership, the member's side of KIP-848 without sockets: each test plays the coordinator
by hand, feeding answers and time, and checks what the member asks to do next."""

import pytest

from distlog.client.group import (
    RETRY_BACKOFF_MIN_S,
    Assign,
    FindCoordinator,
    GroupError,
    GroupMembership,
    Heartbeat,
    Lose,
    Revoke,
)
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    JOIN_EPOCH,
    LEAVE_EPOCH,
    ConsumerGroupHeartbeatResponse,
    FindCoordinatorResponse,
)

COORDINATOR = "tcp://127.0.0.1:7001"
T = "orders"


def answer(member_id="m-1", epoch=1, assignment=(), interval_ms=1000, error=ErrorCode.NONE):
    wire = [{"topic": T, "partitions": sorted(assignment)}] if assignment else []
    return ConsumerGroupHeartbeatResponse(int(error), "", member_id, epoch, interval_ms, wire)


def found(address=COORDINATOR, error=ErrorCode.NONE):
    return FindCoordinatorResponse(int(error), "", None if error else 1, None if error else address)


def heartbeat(membership, now_s):
    action = membership.next_action(now_s)
    assert isinstance(action, Heartbeat), action
    return action.request


def tps(*partitions):
    return frozenset((T, p) for p in partitions)


@pytest.fixture
def member():
    """Subscribed to T, its coordinator found, nothing sent yet."""
    membership = GroupMembership("g", "client-a", session_timeout_ms=10_000)
    membership.subscribe([T])
    assert isinstance(membership.next_action(0.0), FindCoordinator)
    assert membership.next_action(0.0) is None  # one lookup at a time
    membership.on_coordinator_found(found(), 0.0)
    return membership


def joined(member, partitions=(0, 1), now_s=0.0):
    """Joined and owning `partitions` (the Assign carried out)."""
    heartbeat(member, now_s)
    member.on_heartbeat_response(answer(assignment=partitions), now_s)
    if partitions:
        action = member.next_action(now_s)
        assert action == Assign(tps(*partitions))
        member.assigned(action.partitions)
    return member


def test_join_sends_an_empty_member_id_epoch_0_then_uses_the_name_the_coordinator_gave(member):
    join = heartbeat(member, 0.0)
    assert (join.member_id, join.member_epoch, join.subscribed_topics, join.owned_partitions) == ("", JOIN_EPOCH, [T], [])
    assert join.session_timeout_ms == 10_000 and join.client_id == "client-a"
    assert member.next_action(0.0) is None  # one heartbeat out at a time
    member.on_heartbeat_response(answer(member_id="m-7", epoch=3, assignment=[0, 2]), 0.0)
    action = member.next_action(0.0)
    assert action == Assign(tps(0, 2))
    assert member.next_action(0.0) is None  # the offsets lookup is under way: no second Assign
    member.assigned(action.partitions)
    report = heartbeat(member, 0.0)  # at once, not after the interval: the coordinator waits for it
    assert (report.member_id, report.member_epoch) == ("m-7", 3)
    assert report.owned_partitions == [{"topic": T, "partitions": [0, 2]}]


def test_heartbeats_go_every_interval_carrying_the_whole_subscription_and_what_is_owned(member):
    joined(member, [0, 1])
    heartbeat(member, 0.0)
    member.on_heartbeat_response(answer(assignment=[0, 1], interval_ms=500), 0.0)
    assert member.next_action(0.49) is None
    again = heartbeat(member, 0.5)
    assert again.subscribed_topics == [T] and again.owned_partitions == [{"topic": T, "partitions": [0, 1]}]


def test_a_shrunk_assignment_is_revoked_before_a_grown_one_is_taken_and_each_reported_at_once(member):
    joined(member, [0, 1])
    heartbeat(member, 0.0)
    member.on_heartbeat_response(answer(epoch=2, assignment=[1, 2]), 0.0)
    assert member.next_action(0.0) == Revoke(tps(0))  # first let go of 0
    member.revoked(tps(0))
    assert member.next_action(0.0) == Assign(tps(2))
    member.assigned(tps(2))
    report = heartbeat(member, 0.0)
    assert report.owned_partitions == [{"topic": T, "partitions": [1, 2]}] and report.member_epoch == 2


def test_only_revocation_is_reported_before_the_coordinator_grows_the_assignment(member):
    joined(member, [0, 1])
    heartbeat(member, 0.0)
    member.on_heartbeat_response(answer(epoch=2, assignment=[1]), 0.0)
    assert member.next_action(0.0) == Revoke(tps(0))
    member.revoked(tps(0))
    report = heartbeat(member, 0.0)
    assert report.owned_partitions == [{"topic": T, "partitions": [1]}]


@pytest.mark.parametrize("code", [ErrorCode.FENCED_MEMBER_EPOCH, ErrorCode.UNKNOWN_MEMBER_ID])
def test_a_fenced_or_forgotten_member_loses_its_partitions_and_joins_again_under_its_own_id(member, code):
    joined(member, [0, 1])
    heartbeat(member, 0.0)
    assert member.on_heartbeat_response(answer(error=code), 0.0) is None  # not an error for the caller
    assert member.next_action(0.0) == Lose(tps(0, 1))  # not Revoke: nothing may be committed
    member.dropped()
    join = heartbeat(member, 0.0)
    # Its own id at epoch 0: the coordinator frees what the fenced incarnation held at once.
    assert (join.member_id, join.member_epoch, join.owned_partitions) == ("m-1", JOIN_EPOCH, [])


def test_a_session_without_a_successful_heartbeat_loses_the_partitions(member):
    joined(member, [0])
    heartbeat(member, 1.0)
    member.on_heartbeat_response(answer(error=ErrorCode.COORDINATOR_NOT_AVAILABLE), 1.0)
    assert isinstance(member.next_action(5.0), FindCoordinator)  # kept while within the session
    assert member.owned == tps(0)
    member.on_coordinator_failed(5.0)
    assert member.next_action(10.1) == Lose(tps(0))


@pytest.mark.parametrize("code", [ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
                                  ErrorCode.COORDINATOR_LOAD_IN_PROGRESS])
def test_a_moved_coordinator_is_found_again_after_a_backoff_and_the_partitions_kept(member, code):
    joined(member, [0, 1])
    heartbeat(member, 0.0)
    assert member.on_heartbeat_response(answer(error=code), 1.0) is None
    assert member.coordinator is None and member.owned == tps(0, 1)
    assert member.next_action(1.0) is None  # backing off
    assert isinstance(member.next_action(1.0 + RETRY_BACKOFF_MIN_S), FindCoordinator)
    member.on_coordinator_found(found("tcp://127.0.0.1:7002"), 1.1)
    again = heartbeat(member, 1.1)  # at once, to the new coordinator
    assert member.coordinator == "tcp://127.0.0.1:7002"
    assert (again.member_id, again.owned_partitions) == ("m-1", [{"topic": T, "partitions": [0, 1]}])


def test_coordinator_lookups_back_off_more_while_they_keep_failing():
    membership = GroupMembership("g")
    membership.subscribe([T])
    waits, now_s = [], 0.0
    for _ in range(6):
        assert isinstance(membership.next_action(now_s), FindCoordinator)
        membership.on_coordinator_found(found(error=ErrorCode.COORDINATOR_NOT_AVAILABLE), now_s)
        wait_s = 0.0
        while membership.next_action(now_s + wait_s) is None:
            wait_s += 0.01
        membership.on_coordinator_failed(now_s)  # the FindCoordinator just returned; undo
        waits.append(wait_s)
        now_s += 100
    assert waits == sorted(waits) and waits[-1] > 4 * waits[0]


def test_an_unanswered_heartbeat_looks_the_coordinator_up_again(member):
    joined(member, [0])
    heartbeat(member, 0.0)
    member.on_heartbeat_unanswered(0.0)
    assert isinstance(member.next_action(1.0), FindCoordinator)


def test_another_error_is_handed_back_once_and_heartbeats_go_on(member):
    heartbeat(member, 0.0)
    error = member.on_heartbeat_response(answer(error=ErrorCode.INVALID_GROUP_ID), 0.0)
    assert isinstance(error, GroupError) and error.code == ErrorCode.INVALID_GROUP_ID
    assert member.next_action(0.0) is None
    assert isinstance(member.next_action(2.0), Heartbeat)


def test_an_answer_older_than_the_one_taken_in_is_passed_over(member):
    joined(member, [0])
    heartbeat(member, 0.0)
    member.on_heartbeat_response(answer(epoch=5, assignment=[0]), 0.0)
    member.on_heartbeat_response(answer(epoch=3, assignment=[]), 0.0, pipelined=False)
    assert member.member_epoch == 5 and member.next_action(0.0) is None


def test_leaving_sends_epoch_minus_1_and_forgets_the_membership(member):
    joined(member, [0, 1])
    leave = member.leave_request()
    assert (leave.member_id, leave.member_epoch) == ("m-1", LEAVE_EPOCH)
    member.unsubscribed()
    assert member.next_action(100.0) is None and member.owned == frozenset() and member.member_id == ""
    assert member.leave_request() is None  # nothing to leave


def test_a_member_that_never_joined_has_nothing_to_leave():
    assert GroupMembership("g").leave_request() is None


def test_without_a_subscription_the_coordinator_is_only_looked_up_when_wanted():
    membership = GroupMembership("g")
    assert membership.next_action(0.0) is None
    membership.coordinator_wanted = True  # a manual assignment committing
    assert isinstance(membership.next_action(0.0), FindCoordinator)
    membership.on_coordinator_found(found(), 0.0)
    assert membership.next_action(0.0) is None  # no heartbeats: not a member


def test_a_new_subscription_is_reported_at_once(member):
    joined(member, [0])
    heartbeat(member, 0.0)
    member.on_heartbeat_response(answer(assignment=[0]), 0.0)
    member.subscribe([T, "payments"])
    assert heartbeat(member, 0.0).subscribed_topics == ["orders", "payments"]
