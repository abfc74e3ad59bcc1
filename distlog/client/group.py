"""Consumer group membership (KIP-848): what a member sends its coordinator and what it does with each answer.

Theory of operation
-------------------
The coordinator computes every assignment; the member only reports. `GroupMembership` is the
member's side as a state machine without sockets or clocks, in the manner of raft.py: the
caller passes the time (`now_s`) in, feeds it the coordinator's answers, and asks it
`next_action(now_s)` in a loop, carrying out each action until it returns None:

    FindCoordinator()  ask any broker which one coordinates the group; answer with
                       on_coordinator_found / on_coordinator_failed
    Heartbeat(request) send it to `coordinator`; answer with on_heartbeat_response or
                       on_heartbeat_unanswered (a timeout, a dropped connection)
    Revoke(tps)        the member owns partitions its assignment no longer has: call on_revoke,
                       commit their positions (with auto-commit), stop fetching them, then
                       call revoked(tps)
    Assign(tps)        the assignment has partitions the member does not own yet: look up their
                       committed offsets, seek there, call on_assign, then assigned(tps) (or
                       assign_failed() to have it asked again)
    Lose(tps)          the member was fenced, forgotten, or has not reached its coordinator for a
                       whole session: its partitions may be someone else's by now, so call
                       on_lost (on_revoke by default) WITHOUT committing, drop them, then call
                       dropped(); the member then joins again as a new one (member_id "", epoch 0)

Revocation comes before assignment, and each change of what the member owns is reported by a
heartbeat at once: the coordinator gives a partition to a new owner only once the old owner
has said it let go. Otherwise a heartbeat goes every heartbeat_interval_ms. A coordinator that
moved or is loading (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS)
is looked up again with a growing backoff while the member keeps its partitions; any other
error of a heartbeat is handed back (GroupError) for poll() to raise.

`GroupClient` below is the network glue for a Consumer: it sends what the membership asks
through the consumer's pipelined connections (so a heartbeat in flight never holds up poll())
and makes the few calls that have to wait (a synchronous commit, committed(), leaving on
close) as blocking requests bounded by a deadline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from distlog.client.cluster import ClusterView
from distlog.client.deadline import Deadline
from distlog.client.errors import RequestTimedOutError
from distlog.protocol.errors import DistlogError, ErrorCode, is_retriable
from distlog.protocol.messages import (
    JOIN_EPOCH,
    LEAVE_EPOCH,
    ConsumerGroupHeartbeatRequest,
    ErrorResponse,
    FindCoordinatorRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
)

log = logging.getLogger(__name__)

# The coordinator's answers that mean "ask again, maybe elsewhere": the member keeps its partitions.
COORDINATOR_MOVED = frozenset({ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
                               ErrorCode.COORDINATOR_LOAD_IN_PROGRESS})
# The coordinator no longer counts this member in: its partitions are someone else's by now.
MEMBERSHIP_LOST = frozenset({ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_MEMBER_EPOCH})
# Pauses between attempts to reach a coordinator that moved or is starting (an election of the
# __consumer_offsets leader takes about a second; its creation a little longer).
RETRY_BACKOFF_MIN_S = 0.05
RETRY_BACKOFF_MAX_S = 1.0
# The heartbeat interval until the coordinator names one.
DEFAULT_HEARTBEAT_INTERVAL_S = 1.0
# A blocking call to the coordinator: how long to wait for a connection before asking again who
# coordinates (a killed coordinator refuses connections at once), and for an answer once sent:
# longer than the coordinator's own wait for its records to commit (COMMIT_WAIT_S, 10 s), so a
# live coordinator always answers first and nothing is sent twice needlessly, yet far less
# than a whole request timeout (30 s) when the coordinator died with the request out.
COORDINATOR_CONNECT_WAIT_S = 1.0
COORDINATOR_ANSWER_WAIT_S = 12.0


class GroupError(DistlogError):
    """A consumer group call the coordinator refused (the code says why)."""


class CommitFailedError(GroupError):
    """A commit refused because this consumer is no longer a member (fenced, or its session
    expired): its partitions may be another member's now; they come back through on_assign."""


@dataclass(frozen=True)
class FindCoordinator:
    pass


@dataclass(frozen=True)
class Heartbeat:
    request: ConsumerGroupHeartbeatRequest


@dataclass(frozen=True)
class Revoke:
    partitions: frozenset


@dataclass(frozen=True)
class Assign:
    partitions: frozenset


@dataclass(frozen=True)
class Lose:
    partitions: frozenset


def topic_partitions(entries) -> frozenset:
    """[{topic, partitions}] (the wire shape of an assignment) -> {(topic, partition)}."""
    return frozenset((entry["topic"], p) for entry in entries for p in entry["partitions"])


def wire_partitions(tps) -> list:
    """{(topic, partition)} -> [{topic, partitions}], sorted, as heartbeats carry them."""
    by_topic: dict = {}
    for topic, partition in sorted(tps):
        by_topic.setdefault(topic, []).append(partition)
    return [{"topic": topic, "partitions": partitions} for topic, partitions in by_topic.items()]


class GroupMembership:
    """One member of consumer group `group_id`, sans I/O (see the module docstring)."""

    def __init__(self, group_id: str, client_id: str = "", session_timeout_ms: int = 10_000,
                 assignor: str | None = None, make_tp=lambda topic, partition: (topic, partition)):
        self.group_id = group_id
        self.client_id = client_id
        self.session_timeout_ms = session_timeout_ms
        self.assignor = assignor
        self._make_tp = make_tp  # how partitions are handed out (the Consumer's TopicPartition)
        self.member_id = ""
        self.member_epoch = JOIN_EPOCH
        self.subscription: tuple = ()  # sorted topics; empty: not a member
        self.owned = frozenset()  # what the member holds now
        self.target = frozenset()  # the assignment the coordinator last sent
        self.coordinator: str | None = None  # the coordinator's endpoint, None until found
        self.coordinator_id: int | None = None
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_INTERVAL_S
        self._finding = False  # a FindCoordinator is out
        self._heartbeat_out = False  # a heartbeat is out
        self._assigning = frozenset()  # an Assign is being carried out
        self._report_owned = False  # what the member owns changed since the last heartbeat went out
        self._next_heartbeat_s = 0.0
        self._next_find_s = 0.0
        self._backoff_s = RETRY_BACKOFF_MIN_S
        self._last_heard_s: float | None = None  # when a heartbeat last succeeded
        self._lost = False  # the coordinator said the member is gone
        # Found even without a subscription: a consumer with manual assignment commits there.
        self.coordinator_wanted = False

    @property
    def session_timeout_s(self) -> float:
        return self.session_timeout_ms / 1000

    @property
    def active(self) -> bool:
        """Whether the member wants to be in the group (it has subscribed)."""
        return bool(self.subscription)

    # --------------------------------------------------------------------------- caller's input

    def subscribe(self, topics) -> None:
        subscription = tuple(sorted(set(topics)))
        if subscription != self.subscription:
            self.subscription = subscription
            self._report_owned = True  # the coordinator learns the new subscription at once

    def unsubscribed(self) -> None:
        """The member left the group (after revoking all; what was out is forgotten): back to
        where it started."""
        self.subscription = ()
        self._heartbeat_out = False
        self._forget_membership()

    def revoked(self, partitions) -> None:
        self.owned = self.owned - frozenset(partitions)
        self._report_owned = True

    def assigned(self, partitions) -> None:
        partitions = frozenset(partitions)
        self._assigning = self._assigning - partitions
        self.owned = self.owned | partitions
        self._report_owned = True

    def assign_failed(self) -> None:
        """The committed offsets could not be looked up: the next turn asks again."""
        self._assigning = frozenset()

    def dropped(self) -> None:
        """The lost partitions are dropped: join again (epoch 0) under the same member id, which
        tells the coordinator this replaces the fenced incarnation, so what that one still held
        is free at once rather than after its session times out (KIP-848)."""
        self._forget_membership(keep_id=True)

    def _forget_membership(self, keep_id: bool = False) -> None:
        self.member_id, self.member_epoch = (self.member_id if keep_id else ""), JOIN_EPOCH
        self.owned = self.target = self._assigning = frozenset()
        self._lost = False
        self._last_heard_s = None
        self._report_owned = True

    # ----------------------------------------------------------------------------- what to do

    def next_action(self, now_s: float):
        """The next thing to do (see the module docstring), or None until something changes."""
        action = self._reconcile(now_s) if self.active else None
        if action is not None:
            return action
        if self.coordinator is None:
            if not (self.active or self.coordinator_wanted) or self._finding or now_s < self._next_find_s:
                return None
            self._finding = True
            return FindCoordinator()
        if not self.active or self._heartbeat_out or not (self._report_owned or now_s >= self._next_heartbeat_s):
            return None
        self._heartbeat_out = True
        self._report_owned = False
        return Heartbeat(self.heartbeat_request())

    def _reconcile(self, now_s: float):
        """Lose, Revoke or Assign, in that order of precedence, or None when owned is the assignment."""
        if self.owned and (self._lost or self._session_expired(now_s)):
            return Lose(self._tps(self.owned))
        if self._lost:
            self.dropped()
        revoke = self.owned - self.target
        if revoke:
            return Revoke(self._tps(revoke))
        assign = self.target - self.owned
        if assign and not self._assigning and self.coordinator is not None:
            self._assigning = assign  # while its committed offsets are asked of the coordinator
            return Assign(self._tps(assign))
        return None

    def _tps(self, partitions) -> frozenset:
        return frozenset(self._make_tp(*tp) for tp in partitions)

    def _session_expired(self, now_s: float) -> bool:
        return self._last_heard_s is not None and now_s - self._last_heard_s > self.session_timeout_s

    def heartbeat_request(self) -> ConsumerGroupHeartbeatRequest:
        return ConsumerGroupHeartbeatRequest(
            self.group_id, self.member_id, self.member_epoch, self.client_id, list(self.subscription),
            wire_partitions(self.owned), self.assignor, self.session_timeout_ms)

    def leave_request(self) -> ConsumerGroupHeartbeatRequest | None:
        """The heartbeat that leaves the group (its partitions are freed at once); None if not joined."""
        if not self.member_id:
            return None
        return ConsumerGroupHeartbeatRequest(self.group_id, self.member_id, LEAVE_EPOCH, self.client_id,
                                             list(self.subscription), [], self.assignor, self.session_timeout_ms)

    def next_heartbeat_in_s(self, now_s: float) -> float:
        """How long until a heartbeat is due (0: now), for a caller that sleeps between turns."""
        return max(0.0, self._next_heartbeat_s - now_s)

    # -------------------------------------------------------------------- coordinator's answers

    def on_coordinator_found(self, response, now_s: float) -> None:
        self._finding = False
        if response.error_code or not response.address:
            self.on_coordinator_failed(now_s)
            return
        self.coordinator, self.coordinator_id = response.address, response.coordinator_id
        self._next_heartbeat_s = now_s  # whatever was waiting for the coordinator goes now

    def on_coordinator_failed(self, now_s: float) -> None:
        self._finding = False
        self._next_find_s = now_s + self._next_backoff_s()

    def on_heartbeat_response(self, response, now_s: float, pipelined: bool = True) -> GroupError | None:
        """Take in the answer to the heartbeat that was out (or, not `pipelined`, to one the
        caller made on the side, waiting for it); the error to raise, if any."""
        if pipelined:
            self._heartbeat_out = False
        code = response.error_code
        if code == ErrorCode.NONE:
            self._on_heartbeat_ok(response, now_s)
            return None
        if code in MEMBERSHIP_LOST:
            self._lost = True
            self.target = frozenset()
            return None
        if code in COORDINATOR_MOVED:
            self.on_heartbeat_unanswered(now_s)
            return None
        self._next_heartbeat_s = now_s + max(self.heartbeat_interval_s, self._next_backoff_s())
        return GroupError(code, response.error_message or f"the heartbeat of group '{self.group_id}' was refused")

    def _on_heartbeat_ok(self, response, now_s: float) -> None:
        if response.member_id == self.member_id and 0 <= response.member_epoch < self.member_epoch:
            return  # an answer older than one already taken in (epochs only grow)
        self.member_id, self.member_epoch = response.member_id, response.member_epoch
        if response.heartbeat_interval_ms > 0:
            self.heartbeat_interval_s = response.heartbeat_interval_ms / 1000
        self.target = topic_partitions(response.assignment)
        self._last_heard_s = now_s
        self._backoff_s = RETRY_BACKOFF_MIN_S
        self._next_heartbeat_s = now_s + self.heartbeat_interval_s

    def on_heartbeat_unanswered(self, now_s: float) -> None:
        """The heartbeat timed out, its connection dropped, or the coordinator moved: find it again."""
        self._heartbeat_out = False
        self._report_owned = True  # the next heartbeat, to whoever coordinates now, goes at once
        self.coordinator = self.coordinator_id = None
        self._next_find_s = now_s + self._next_backoff_s()

    def heartbeat_abandoned(self) -> None:
        """The heartbeat that was out went to a coordinator since left behind: send the next."""
        self._heartbeat_out = False
        self._report_owned = True

    def on_commit_refused(self, code: int, now_s: float) -> None:
        """What a refused commit says about the membership."""
        if code in COORDINATOR_MOVED:
            self.on_heartbeat_unanswered(now_s)
        elif code in MEMBERSHIP_LOST:
            self._lost = True
            self.target = frozenset()

    def _next_backoff_s(self) -> float:
        backoff_s = self._backoff_s
        self._backoff_s = min(RETRY_BACKOFF_MAX_S, 2 * self._backoff_s)
        return backoff_s


# ---------------------------------------------------------------------------- blocking calls


def find_coordinator(cluster: ClusterView, group_id: str, deadline: Deadline) -> tuple:
    """(coordinator_id, endpoint) of the group, retrying while the coordinator is not available
    (the internal __consumer_offsets topic being created, say) until the deadline."""
    backoff_s = RETRY_BACKOFF_MIN_S
    while True:
        response = cluster.request_any(FindCoordinatorRequest(group_id), max(deadline.remaining_s(), 0.001))
        if not response.error_code and response.address:
            return response.coordinator_id, response.address
        code = response.error_code or ErrorCode.COORDINATOR_NOT_AVAILABLE
        if not is_retriable(code) or deadline.remaining_s() <= backoff_s:
            raise GroupError(code, response.error_message or f"no coordinator of group '{group_id}' is available")
        time.sleep(backoff_s)  # a retry backoff while __consumer_offsets gets a leader
        backoff_s = min(RETRY_BACKOFF_MAX_S, 2 * backoff_s)


def coordinator_call(cluster: ClusterView, group_id: str, request, error_of, deadline: Deadline,
                     coordinator: str | None = None, request_timeout_s: float = 30.0):
    """Send `request` to the group's coordinator and return (response, endpoint), finding the
    coordinator first (unless given) and again while error_of(response) says it moved or is
    loading, with a growing pause, until the deadline."""
    backoff_s = RETRY_BACKOFF_MIN_S
    while True:
        if coordinator is None:
            coordinator = find_coordinator(cluster, group_id, deadline)[1]
        connection = cluster.request_connection(coordinator)
        if not connection.transport.wait_connected(deadline.cap(COORDINATOR_CONNECT_WAIT_S)):
            if deadline.expired():
                raise RequestTimedOutError(f"the coordinator of group '{group_id}' at {coordinator} is not reachable")
            coordinator = None  # gone (killed, say): whoever coordinates now is asked for
            continue
        try:
            response = connection.request(request, max(0.001, deadline.cap(min(request_timeout_s, COORDINATOR_ANSWER_WAIT_S))))
        except RequestTimedOutError:
            if deadline.expired():
                raise
            coordinator = None
            continue
        code = error_of(response)
        if code not in COORDINATOR_MOVED or deadline.remaining_s() <= backoff_s:
            return response, coordinator
        time.sleep(backoff_s)  # a retry backoff: the coordinator moves or loads its groups
        backoff_s = min(RETRY_BACKOFF_MAX_S, 2 * backoff_s)
        coordinator = None


def commit_request(group_id: str, member_id: str, member_epoch: int, offsets: dict) -> OffsetCommitRequest:
    return OffsetCommitRequest(group_id, member_id, member_epoch, [
        {"topic": tp[0], "partition": tp[1], "offset": int(offset), "metadata": ""}
        for tp, offset in sorted(offsets.items())])


def commit_error(response, group_id: str) -> GroupError | None:
    """The first error of an OffsetCommit answer (top level, then per partition), or None."""
    if response.error_code:
        cls = CommitFailedError if response.error_code in MEMBERSHIP_LOST else GroupError
        return cls(response.error_code, response.error_message or f"group '{group_id}' refused the commit")
    for entry in response.partitions:
        if entry["error_code"]:
            return GroupError(entry["error_code"], f"{entry['topic']}-{entry['partition']}: {entry['error_message']}")
    return None


def fetch_request(group_id: str, partitions) -> OffsetFetchRequest:
    return OffsetFetchRequest(group_id, None if partitions is None else [
        {"topic": tp[0], "partition": tp[1]} for tp in sorted(partitions)])


# ------------------------------------------------------------------------------ consumer glue


@dataclass
class _Flight:
    kind: str  # "find", "heartbeat", "fetch", "commit"
    endpoint: str
    request: object
    cid: int | None  # None: not sent yet (the connection is not up); sent on a later turn
    started_s: float
    context: object = None


class GroupClient:
    """A Consumer's consumer group side: membership, offset commits and lookups. Driven by the
    consumer's poll() through `turn()`; replies reach it through `on_reply()`."""

    def __init__(self, consumer, group_id: str, *, client_id: str, session_timeout_ms: int, assignor,
                 enable_auto_commit: bool, auto_commit_interval_ms: int, make_tp):
        self.consumer = consumer
        self.group_id = group_id
        self.membership = GroupMembership(group_id, client_id, session_timeout_ms, assignor, make_tp)
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.on_assign = self.on_revoke = self.on_lost = None  # subscribe()'s callbacks
        self._flights: list = []
        self._next_auto_commit_s = time.monotonic() + self.auto_commit_interval_s
        self._committed: dict = {}  # tp -> the offset last committed (auto-commit skips unchanged ones)
        self._error: GroupError | None = None  # a heartbeat's error, raised by the next poll()
        self._acting = False  # carrying out actions (a callback's commit() must not start more)
        self._find_rotation = 0

    @property
    def cluster(self) -> ClusterView:
        return self.consumer._cluster

    @property
    def request_timeout_s(self) -> float:
        return self.consumer.request_timeout_s

    @property
    def in_flight(self) -> bool:
        return bool(self._flights)

    # ------------------------------------------------------------------------------- the turn

    def turn(self) -> None:
        """One turn of poll(): expire and (re)send requests, carry out what the membership asks,
        auto-commit when due; raises a heartbeat's error once."""
        now_s = time.monotonic()
        self._expire(now_s)
        self._abandon_left_coordinators(now_s)
        self._send_queued()
        if not self._acting:
            self._acting = True
            try:
                self._act(now_s)
            finally:
                self._acting = False
        if self.enable_auto_commit and now_s >= self._next_auto_commit_s:
            self._next_auto_commit_s = now_s + self.auto_commit_interval_s
            self._commit_async(self._changed_positions())
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _act(self, now_s: float) -> None:
        membership = self.membership
        while (action := membership.next_action(now_s)) is not None:
            if isinstance(action, Revoke):
                self._revoke(action.partitions, lost=False)
                membership.revoked(action.partitions)
            elif isinstance(action, Lose):
                self._revoke(action.partitions, lost=True)
                membership.dropped()
            elif isinstance(action, Assign):
                self._start(_Flight("fetch", membership.coordinator, fetch_request(self.group_id, action.partitions),
                                    None, now_s, action.partitions))
            elif isinstance(action, FindCoordinator):
                self._start(_Flight("find", self._find_endpoint(), FindCoordinatorRequest(self.group_id), None, now_s))
            elif isinstance(action, Heartbeat):
                self._start(_Flight("heartbeat", membership.coordinator, action.request, None, now_s))

    def _revoke(self, partitions, lost: bool) -> None:
        """on_revoke, then (unless lost) an auto-commit of their positions, then stop fetching."""
        callback = (self.on_lost or self.on_revoke) if lost else self.on_revoke
        if callback is not None:
            callback(sorted(partitions))
        if not lost and self.enable_auto_commit:
            positions = self.consumer._positions(partitions)
            if positions:
                try:
                    self.commit(positions, Deadline(min(self.request_timeout_s, self.membership.session_timeout_s / 2)))
                except DistlogError as error:
                    log.warning("group %s: committing revoked partitions failed: %s", self.group_id, error)
        for tp in partitions:
            self._committed.pop(tp, None)
        self.consumer._drop_partitions(partitions)

    def _find_endpoint(self) -> str:
        endpoints = list(dict.fromkeys([*self.cluster.brokers.values(), *self.cluster.bootstrap]))
        self._find_rotation += 1
        return endpoints[self._find_rotation % len(endpoints)]

    # ------------------------------------------------------------------------------- requests

    def _start(self, flight: _Flight) -> None:
        flight.cid = self.consumer._send(flight.endpoint, flight.request)
        self._flights.append(flight)

    def _send_queued(self) -> None:
        for flight in self._flights:
            if flight.cid is None:
                flight.cid = self.consumer._send(flight.endpoint, flight.request)

    def _timeout_s(self, flight: _Flight) -> float:
        if flight.kind == "find":
            return min(2.0, self.request_timeout_s)  # another broker is asked after this long
        # A coordinator that does not answer within a third of the session is looked for again,
        # so the member is heard before its session runs out; a commit or lookup waiting longer
        # would hold back every auto-commit (one at a time) and the assignment behind it.
        return min(self.request_timeout_s, self.membership.session_timeout_s / 3)

    def _abandon_left_coordinators(self, now_s: float) -> None:
        """Fail what is out to a coordinator the member has since moved away from: its answer,
        if one ever comes, is no use (the new coordinator is asked instead)."""
        current = self.membership.coordinator
        for flight in [f for f in self._flights if f.kind != "find" and f.endpoint != current]:
            self._flights.remove(flight)
            self._failed(flight, now_s)

    def _expire(self, now_s: float) -> None:
        for flight in [f for f in self._flights if now_s - f.started_s > self._timeout_s(f)]:
            self._flights.remove(flight)
            self._failed(flight, now_s)

    def on_disconnect(self, endpoint: str) -> None:
        """The connection to `endpoint` dropped: what was in flight on it is lost."""
        now_s = time.monotonic()
        for flight in [f for f in self._flights if f.endpoint == endpoint and f.cid is not None]:
            self._flights.remove(flight)
            self._failed(flight, now_s)

    def _failed(self, flight: _Flight, now_s: float) -> None:
        """An unanswered request. Unless it went to a coordinator already left behind, the
        coordinator is looked for again; a failed commit is simply sent again by the next
        auto-commit (its offsets were not taken as committed)."""
        membership = self.membership
        if flight.kind == "find":
            membership.on_coordinator_failed(now_s)
            return
        if flight.kind == "fetch":
            membership.assign_failed()
        if flight.endpoint == membership.coordinator:
            membership.on_heartbeat_unanswered(now_s)
        elif flight.kind == "heartbeat":
            membership.heartbeat_abandoned()

    def on_reply(self, endpoint: str, cid: int, response) -> bool:
        """Take in a reply if it answers one of ours; whether it did."""
        for flight in self._flights:
            if flight.cid == cid and flight.endpoint == endpoint:
                self._flights.remove(flight)
                self._answered(flight, response, time.monotonic())
                return True
        return False

    def _answered(self, flight: _Flight, response, now_s: float) -> None:
        membership = self.membership
        if isinstance(response, ErrorResponse):  # not even decoded as asked: count it as unanswered
            self._failed(flight, now_s)
        elif flight.kind == "find":
            membership.on_coordinator_found(response, now_s)
        elif flight.kind == "heartbeat":
            self._error = membership.on_heartbeat_response(response, now_s) or self._error
        elif flight.kind == "fetch":
            if not response.error_code:
                self._take_assignment(flight.context, response)
                return
            membership.assign_failed()
            membership.on_commit_refused(response.error_code, now_s)
            if response.error_code not in COORDINATOR_MOVED:
                self._error = GroupError(response.error_code, response.error_message)
        elif flight.kind == "commit":
            error = commit_error(response, self.group_id)
            if error is None:
                self._committed.update(flight.context)
                return
            membership.on_commit_refused(error.code, now_s)
            log.warning("group %s: an asynchronous commit failed: %s", self.group_id, error)

    def _take_assignment(self, partitions: frozenset, response) -> None:
        """Seek the newly assigned partitions to their committed offsets, then on_assign."""
        committed = {(e["topic"], e["partition"]): e["offset"] for e in response.partitions}
        offsets = {tp: committed.get(tp, -1) for tp in partitions}
        offsets = {tp: (offset if offset >= 0 else None) for tp, offset in offsets.items()}
        self._committed.update({tp: offset for tp, offset in offsets.items() if offset is not None})
        self.consumer._add_partitions(offsets)
        self.membership.assigned(partitions)
        if self.on_assign is not None:
            self.on_assign(sorted(partitions))

    # -------------------------------------------------------------------------------- commits

    def _member(self) -> tuple:
        """(member_id, member_epoch) to commit under: the membership's, or outside any ("", -1)."""
        membership = self.membership
        if membership.active and membership.member_id:
            return membership.member_id, membership.member_epoch
        return "", LEAVE_EPOCH

    def _changed_positions(self) -> dict:
        positions = self.consumer._positions(self.consumer._states)
        return {tp: offset for tp, offset in positions.items() if self._committed.get(tp) != offset}

    def _commit_async(self, offsets: dict) -> None:
        if not offsets or any(f.kind == "commit" for f in self._flights):
            return
        if self.membership.coordinator is None:
            self.membership.coordinator_wanted = True  # found on the next turns; the next auto-commit goes there
            return
        request = commit_request(self.group_id, *self._member(), offsets)
        self._start(_Flight("commit", self.membership.coordinator, request, None, time.monotonic(), dict(offsets)))

    def commit(self, offsets: dict, deadline: Deadline, asynchronous: bool = False) -> None:
        """Store `offsets` ({tp: position}); synchronous unless `asynchronous`. A commit with a
        stale member epoch heartbeats first and is tried once more."""
        if asynchronous:
            self._commit_async(offsets)
            return
        if not offsets:
            return
        for attempt in range(2):
            response = self._call_coordinator(commit_request(self.group_id, *self._member(), offsets), deadline)
            error = commit_error(response, self.group_id)
            if error is None:
                self._committed.update(offsets)
                return
            if error.code == ErrorCode.STALE_MEMBER_EPOCH and attempt == 0:
                self._heartbeat_now(deadline)
                continue
            self.membership.on_commit_refused(error.code, time.monotonic())
            raise error

    def _heartbeat_now(self, deadline: Deadline) -> None:
        """A blocking heartbeat, to learn the current member epoch (a pipelined one may be out too:
        the older of the two answers is passed over)."""
        membership = self.membership
        response = self._call_coordinator(membership.heartbeat_request(), deadline)
        self._error = membership.on_heartbeat_response(response, time.monotonic(), pipelined=False) or self._error

    def committed(self, partitions, deadline: Deadline) -> dict:
        """{tp: committed offset or None}, asked of the coordinator now."""
        response = self._call_coordinator(fetch_request(self.group_id, partitions), deadline)
        if response.error_code:
            raise GroupError(response.error_code, response.error_message)
        found = {(e["topic"], e["partition"]): e["offset"] for e in response.partitions}
        return {tp: (found[tp] if found.get(tp, -1) >= 0 else None) for tp in partitions}

    def _call_coordinator(self, request, deadline: Deadline):
        membership = self.membership
        response, membership.coordinator = coordinator_call(
            self.cluster, self.group_id, request, lambda r: getattr(r, "error_code", 0), deadline,
            membership.coordinator, self.request_timeout_s)
        return response

    # -------------------------------------------------------------------------------- leaving

    def leave(self, deadline: Deadline, commit: bool) -> None:
        """Revoke everything (committing first when `commit`), then leave the group at once so its
        partitions go to the other members now instead of after a session timeout."""
        membership = self.membership
        partitions = frozenset(membership.owned)
        if partitions and self.on_revoke is not None:
            self.on_revoke(sorted(partitions))
        if commit:
            try:
                self.commit(self.consumer._positions(self.consumer._states), deadline)
            except DistlogError as error:
                log.warning("group %s: the commit before leaving failed: %s", self.group_id, error)
        self.consumer._drop_partitions(partitions)
        request = membership.leave_request()
        if request is not None and deadline.remaining_s() > 0:
            try:
                self._call_coordinator(request, deadline)
            except DistlogError as error:
                log.warning("group %s: leaving failed (its partitions move after the session timeout): %s",
                            self.group_id, error)
        self._flights = [f for f in self._flights if f.kind not in ("heartbeat", "fetch")]
        membership.unsubscribed()
