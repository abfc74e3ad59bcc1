"""The group coordinator's pure core: the groups of one `__consumer_offsets` partition.

No sockets, no clock, no log: every operation takes the time and the topics' partition counts,
changes the in-memory state, and returns an Outcome: the response, and the records that make
the change durable. The coordinator (coordinator.py) proposes those records and answers only
once they are committed; a new coordinator rebuilds the same state by apply()ing the records.

Assignment follows Kafka's KIP-848. Each group has an epoch, bumped whenever its membership,
a member's subscription or a subscribed topic's partition count changes; each bump computes a
target assignment (assignors.py). A member moves to the target in steps, each on one of its
heartbeats, so a partition never has two owners:

  1. revoke: the member is told to own only `assigned - revoked`; the revoked partitions stay
     `revoking` (still counted as held by it) until a heartbeat reports them released. Its
     epoch stays behind the group's, so its commits of them still count.
  2. advance: with nothing left to release, the member takes the target epoch.
  3. grow: it is given each partition of its target that no other member holds (assigned or
     revoking). A partition still being released elsewhere comes on a later heartbeat.

Fencing: a heartbeat must carry the member's epoch (or the one before, with an owned set the
member still holds: its last response was lost); a commit must carry the current epoch. A member
whose session runs out is removed, its partitions freed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distlog.broker.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR, assign
from distlog.broker.groups.records import CommittedOffset, CoordinatorRecord, GroupKey, OffsetKey
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    JOIN_EPOCH,
    LEAVE_EPOCH,
    ConsumerGroupHeartbeatResponse,
    DeleteGroupsResponse,
    DescribeGroupsResponse,
    ListGroupsResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
)

HEARTBEAT_INTERVAL_MS = 1_000
MIN_SESSION_TIMEOUT_MS = 1_000
MAX_SESSION_TIMEOUT_MS = 300_000
MAX_GROUP_ID_LENGTH = 249

EMPTY, RECONCILING, STABLE, DEAD = "Empty", "Reconciling", "Stable", "Dead"


@dataclass
class Member:
    member_id: str
    client_id: str
    subscribed: tuple  # sorted topic names
    session_timeout_ms: int
    epoch: int = JOIN_EPOCH
    previous_epoch: int = JOIN_EPOCH
    assigned: frozenset = frozenset()  # (topic, partition) it may own now
    revoking: frozenset = frozenset()  # told to release, not yet confirmed: still held by it
    deadline_ms: int = 0  # its session ends then unless it heartbeats (not persisted)

    def to_value(self) -> dict:
        return {"id": self.member_id, "client": self.client_id, "subscribed": list(self.subscribed),
                "session_timeout_ms": self.session_timeout_ms, "epoch": self.epoch, "previous_epoch": self.previous_epoch,
                "assigned": _pairs(self.assigned), "revoking": _pairs(self.revoking)}

    @classmethod
    def from_value(cls, value: dict) -> "Member":
        return cls(value["id"], value["client"], tuple(value["subscribed"]), value["session_timeout_ms"], value["epoch"],
                   value["previous_epoch"], _partitions(value["assigned"]), _partitions(value["revoking"]))


@dataclass
class Group:
    group_id: str
    assignor: str = DEFAULT_ASSIGNOR
    epoch: int = 0
    members: dict = field(default_factory=dict)  # member id -> Member
    target: dict = field(default_factory=dict)  # member id -> frozenset, as of the group epoch
    partition_counts: dict = field(default_factory=dict)  # subscribed topic -> partitions, as the target saw them

    @property
    def state(self) -> str:
        if not self.members:
            return EMPTY
        settled = all(m.epoch == self.epoch and not m.revoking and m.assigned == self.target.get(m.member_id, frozenset())
                      for m in self.members.values())
        return STABLE if settled else RECONCILING

    def subscribed_topics(self) -> set:
        return {topic for member in self.members.values() for topic in member.subscribed}

    def held_by_others(self, member_id: str) -> set:
        held = set()
        for other in self.members.values():
            if other.member_id != member_id:
                held |= other.assigned | other.revoking
        return held

    def to_value(self) -> dict:
        return {"assignor": self.assignor, "epoch": self.epoch, "partition_counts": dict(self.partition_counts),
                "members": [m.to_value() for m in self.members.values()],
                "target": {member_id: _pairs(t) for member_id, t in self.target.items()}}

    @classmethod
    def from_value(cls, group_id: str, value: dict, now_ms: int) -> "Group":
        members = {}
        for item in value["members"]:
            member = Member.from_value(item)
            member.deadline_ms = now_ms + member.session_timeout_ms  # a new coordinator gives each a full session
            members[member.member_id] = member
        return cls(group_id, value["assignor"], value["epoch"], members,
                   {member_id: _partitions(t) for member_id, t in value["target"].items()}, dict(value["partition_counts"]))


def _pairs(partitions) -> list:
    return [[topic, partition] for topic, partition in sorted(partitions)]


def _partitions(pairs) -> frozenset:
    return frozenset((topic, partition) for topic, partition in pairs)


def _by_topic(partitions) -> list:
    topics: dict = {}
    for topic, partition in sorted(partitions):
        topics.setdefault(topic, []).append(partition)
    return [{"topic": topic, "partitions": ps} for topic, ps in topics.items()]


def _from_wire(owned: list) -> set:
    return {(item["topic"], p) for item in owned for p in item["partitions"]}


@dataclass
class Outcome:
    """What an operation answers and the records that make its change durable ([] when nothing
    changed: the answer may go out as soon as what it read is committed)."""

    response: object
    records: list = field(default_factory=list)  # [CoordinatorRecord]


def invalid_group_id(group_id: str) -> str | None:
    if not group_id or len(group_id) > MAX_GROUP_ID_LENGTH or not group_id.isprintable():
        return f"group id {group_id!r} is invalid: use 1-{MAX_GROUP_ID_LENGTH} printable characters"
    return None


def _heartbeat_error(code: ErrorCode, message: str, request) -> Outcome:
    return Outcome(ConsumerGroupHeartbeatResponse(int(code), message, request.member_id, request.member_epoch))


class CoordinatorState:
    """Every group whose id hashes to one `__consumer_offsets` partition, and their offsets."""

    def __init__(self):
        self.groups: dict = {}  # group id -> Group
        self.offsets: dict = {}  # group id -> {(topic, partition): CommittedOffset}

    # ---- rebuilding from the log --------------------------------------------------------

    def apply(self, record: CoordinatorRecord, now_ms: int) -> None:
        key, value = record
        if isinstance(key, OffsetKey):
            committed = self.offsets.setdefault(key.group_id, {})
            if value is None:
                committed.pop((key.topic, key.partition), None)
            else:
                committed[(key.topic, key.partition)] = value
            if not committed:
                del self.offsets[key.group_id]
        elif value is None:
            self.groups.pop(key.group_id, None)
        else:
            self.groups[key.group_id] = Group.from_value(key.group_id, value, now_ms)

    # ---- membership -----------------------------------------------------------------------

    def heartbeat(self, request, now_ms: int, partition_counts: dict, new_member_id) -> Outcome:
        """Join (epoch 0), heartbeat, or leave (epoch -1); `new_member_id()` names a joiner."""
        why = invalid_group_id(request.group_id)
        if why:
            return _heartbeat_error(ErrorCode.INVALID_GROUP_ID, why, request)
        group = self.groups.get(request.group_id)
        if request.member_epoch == LEAVE_EPOCH:
            if group is None or request.member_id not in group.members:
                return _heartbeat_error(ErrorCode.UNKNOWN_MEMBER_ID, f"member {request.member_id!r} is not in group "
                                        f"{request.group_id!r} (it left already, or its session expired)", request)
            self._remove(group, request.member_id, partition_counts)
            return Outcome(ConsumerGroupHeartbeatResponse(0, "", request.member_id, LEAVE_EPOCH, HEARTBEAT_INTERVAL_MS),
                           [self._group_record(group)])
        if not MIN_SESSION_TIMEOUT_MS <= request.session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            return _heartbeat_error(ErrorCode.INVALID_REQUEST, f"session_timeout_ms must be {MIN_SESSION_TIMEOUT_MS}-"
                                    f"{MAX_SESSION_TIMEOUT_MS}, got {request.session_timeout_ms}", request)
        subscribed = tuple(sorted(set(request.subscribed_topics)))
        before = group.to_value() if group is not None else None
        if request.member_epoch == JOIN_EPOCH:
            if request.assignor is not None and request.assignor not in ASSIGNORS:
                return _heartbeat_error(ErrorCode.INVALID_REQUEST, f"unknown assignor {request.assignor!r}: "
                                        f"use one of {', '.join(ASSIGNORS)}", request)
            if group is None:
                group = self.groups[request.group_id] = Group(request.group_id, request.assignor or DEFAULT_ASSIGNOR)
            elif request.assignor is not None and not group.members:
                group.assignor = request.assignor  # an empty group takes the assignor of whoever comes first
            member_id = request.member_id or new_member_id()
            group.members.pop(member_id, None)  # a rejoining member's earlier incarnation: its partitions are free
            member = group.members[member_id] = Member(member_id, request.client_id, subscribed, request.session_timeout_ms)
            self._bump(group, partition_counts)
        else:
            member = group.members.get(request.member_id) if group is not None else None
            if member is None:
                return _heartbeat_error(ErrorCode.UNKNOWN_MEMBER_ID, f"group {request.group_id!r} has no member "
                                        f"{request.member_id!r} (its session expired?): rejoin", request)
            if request.member_epoch != member.epoch and not (
                    request.member_epoch == member.previous_epoch and _from_wire(request.owned_partitions) <= member.assigned):
                return _heartbeat_error(ErrorCode.FENCED_MEMBER_EPOCH, f"member {member.member_id!r} is at epoch "
                                        f"{member.epoch}, not {request.member_epoch}: it must rejoin", request)
            member.session_timeout_ms = request.session_timeout_ms
            if subscribed != member.subscribed:
                member.subscribed = subscribed
                self._bump(group, partition_counts)
            elif self._counts_for(group, partition_counts) != group.partition_counts:
                self._bump(group, partition_counts)  # a subscribed topic appeared, went, or grew
        member.deadline_ms = now_ms + member.session_timeout_ms
        self._reconcile(group, member, _from_wire(request.owned_partitions))
        response = ConsumerGroupHeartbeatResponse(0, "", member.member_id, member.epoch, HEARTBEAT_INTERVAL_MS,
                                                  _by_topic(member.assigned))
        changed = before != group.to_value()
        return Outcome(response, [self._group_record(group)] if changed else [])

    def _reconcile(self, group: Group, member: Member, owned: set) -> None:
        """One step of the member towards its target (see the module docstring)."""
        target = group.target.get(member.member_id, frozenset())
        if member.revoking and not member.revoking & owned:
            member.revoking = frozenset()  # released
        if member.epoch != group.epoch:
            revoked = member.assigned - target
            if revoked:
                member.assigned -= revoked
                member.revoking |= revoked
                return
            if member.revoking:
                return
            member.previous_epoch, member.epoch = member.epoch, group.epoch
        free = target - member.assigned - group.held_by_others(member.member_id)
        if free:
            member.assigned |= free

    def _counts_for(self, group: Group, partition_counts: dict) -> dict:
        return {t: partition_counts[t] for t in sorted(group.subscribed_topics()) if t in partition_counts}

    def _bump(self, group: Group, partition_counts: dict) -> None:
        """A new group epoch, and the target assignment for it."""
        group.epoch += 1
        group.partition_counts = self._counts_for(group, partition_counts)
        members = {m.member_id: (frozenset(m.subscribed), m.assigned) for m in group.members.values()}
        group.target = assign(group.assignor, members, group.partition_counts) if members else {}

    def _remove(self, group: Group, member_id: str, partition_counts: dict) -> None:
        del group.members[member_id]
        group.target.pop(member_id, None)
        self._bump(group, partition_counts)

    def expire(self, now_ms: int, partition_counts: dict) -> list:
        """Remove every member whose session ran out; the records of the groups that changed."""
        records = []
        for group in self.groups.values():
            expired = [m.member_id for m in group.members.values() if m.deadline_ms <= now_ms]
            for member_id in expired:
                self._remove(group, member_id, partition_counts)
            if expired:
                records.append(self._group_record(group))
        return records

    def next_expiry_ms(self) -> int | None:
        deadlines = [m.deadline_ms for g in self.groups.values() for m in g.members.values()]
        return min(deadlines) if deadlines else None

    def refresh_sessions(self, now_ms: int) -> None:
        """A new coordinator starts every member's session afresh (their heartbeats went elsewhere)."""
        for group in self.groups.values():
            for member in group.members.values():
                member.deadline_ms = now_ms + member.session_timeout_ms

    @staticmethod
    def _group_record(group: Group) -> CoordinatorRecord:
        return CoordinatorRecord(GroupKey(group.group_id), group.to_value())

    # ---- offsets --------------------------------------------------------------------------

    def commit(self, request, now_ms: int, partition_counts: dict) -> Outcome:
        def refused(code: ErrorCode, message: str) -> Outcome:
            return Outcome(OffsetCommitResponse(int(code), message, [
                {"topic": p["topic"], "partition": p["partition"], "error_code": int(code), "error_message": message}
                for p in request.partitions]))

        why = invalid_group_id(request.group_id)
        if why:
            return refused(ErrorCode.INVALID_GROUP_ID, why)
        group = self.groups.get(request.group_id)
        if request.member_id == "" and request.member_epoch == LEAVE_EPOCH:
            if group is not None and group.members:
                return refused(ErrorCode.NON_EMPTY_GROUP, f"group {request.group_id!r} has {len(group.members)} member(s); "
                               "offsets are committed from outside the group only while it has none")
        else:
            member = group.members.get(request.member_id) if group is not None else None
            if member is None:
                return refused(ErrorCode.UNKNOWN_MEMBER_ID, f"group {request.group_id!r} has no member {request.member_id!r}")
            if request.member_epoch < member.epoch:
                return refused(ErrorCode.STALE_MEMBER_EPOCH, f"member {member.member_id!r} is at epoch {member.epoch}, "
                               f"the commit carried {request.member_epoch}")
            if request.member_epoch > member.epoch:
                return refused(ErrorCode.FENCED_MEMBER_EPOCH, f"member {member.member_id!r} is at epoch {member.epoch}, "
                               f"the commit carried {request.member_epoch}")
        results, records = [], []
        for p in request.partitions:
            topic, partition, offset = p["topic"], p["partition"], p["offset"]
            code, message = 0, ""
            if not 0 <= partition < partition_counts.get(topic, 0):
                code, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {topic}-{partition}"
            elif offset < 0:
                code, message = ErrorCode.INVALID_REQUEST, f"a committed offset must be >= 0, got {offset}"
            else:
                committed = CommittedOffset(offset, p["metadata"], now_ms)
                self.offsets.setdefault(request.group_id, {})[(topic, partition)] = committed
                records.append(CoordinatorRecord(OffsetKey(request.group_id, topic, partition), committed))
            results.append({"topic": topic, "partition": partition, "error_code": int(code), "error_message": message})
        return Outcome(OffsetCommitResponse(0, "", results), records)

    def fetch(self, request) -> OffsetFetchResponse:
        committed = self.offsets.get(request.group_id, {})
        wanted = sorted(committed) if request.partitions is None else [(p["topic"], p["partition"]) for p in request.partitions]
        out = []
        for topic, partition in wanted:
            found = committed.get((topic, partition))
            out.append({"topic": topic, "partition": partition, "offset": found.offset if found else -1,
                        "metadata": found.metadata if found else ""})
        return OffsetFetchResponse(0, "", out)

    # ---- administration -------------------------------------------------------------------

    def known_groups(self) -> list:
        return sorted(set(self.groups) | set(self.offsets))

    def list_groups(self) -> ListGroupsResponse:
        groups = []
        for group_id in self.known_groups():
            group = self.groups.get(group_id)
            groups.append({"group_id": group_id, "state": group.state if group else EMPTY,
                           "members": len(group.members) if group else 0})
        return ListGroupsResponse(0, "", groups)

    def describe(self, group_ids: list) -> DescribeGroupsResponse:
        out = []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if group is None and group_id not in self.offsets:
                out.append({"group_id": group_id, "error_code": int(ErrorCode.GROUP_ID_NOT_FOUND),
                            "error_message": f"no group {group_id!r}", "state": DEAD, "group_epoch": -1,
                            "assignor": "", "members": []})
                continue
            group = group or Group(group_id)
            members = [{"member_id": m.member_id, "client_id": m.client_id, "member_epoch": m.epoch,
                        "subscribed_topics": list(m.subscribed), "assignment": _by_topic(m.assigned)}
                       for m in sorted(group.members.values(), key=lambda m: m.member_id)]
            out.append({"group_id": group_id, "error_code": 0, "error_message": "", "state": group.state,
                        "group_epoch": group.epoch, "assignor": group.assignor, "members": members})
        return DescribeGroupsResponse(out)

    def delete(self, group_ids: list) -> Outcome:
        results, records = [], []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            code, message = 0, ""
            if group is None and group_id not in self.offsets:
                code, message = ErrorCode.GROUP_ID_NOT_FOUND, f"no group {group_id!r}"
            elif group is not None and group.members:
                code, message = ErrorCode.NON_EMPTY_GROUP, (f"group {group_id!r} has {len(group.members)} member(s); "
                                                            "stop its consumers first")
            else:
                for topic, partition in sorted(self.offsets.pop(group_id, {})):
                    records.append(CoordinatorRecord(OffsetKey(group_id, topic, partition), None))
                if self.groups.pop(group_id, None) is not None:
                    records.append(CoordinatorRecord(GroupKey(group_id), None))
            results.append({"group_id": group_id, "error_code": int(code), "error_message": message})
        return Outcome(DeleteGroupsResponse(results), records)
