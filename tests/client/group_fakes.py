"""A fake group coordinator on top of tests/client/fakes.FakeCluster: KIP-848 membership, offset
commits and fetches, list/describe/delete, answered by the brokers' own threads.

Minimal but honest about the rules a client depends on: the coordinator (broker
`coordinator_id`) shares the topic's partitions round-robin among the members in join order,
and gives a member a partition only once no other member holds it (owns it by its last
heartbeat, or was last told to own it), so a revocation has to be reported before the
partition moves. Each change of a member's assignment bumps its epoch; commits with an older
epoch are STALE_MEMBER_EPOCH, heartbeats with an older one FENCED_MEMBER_EPOCH. Tests steer
it through `heartbeat_errors` / `commit_errors` (codes answered to the next requests),
`find_errors`, `expire()`, `fence()` and `coordinator_id`.
"""

import time
from collections import deque
from dataclasses import dataclass, field

from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    JOIN_EPOCH,
    LEAVE_EPOCH,
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    ListGroupsRequest,
    ListGroupsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
)
from tests.client.fakes import FakeCluster

HEARTBEAT_INTERVAL_MS = 50


@dataclass
class Member:
    member_id: str
    client_id: str
    subscribed: list
    epoch: int = 1
    owned: set = field(default_factory=set)
    assignment: set = field(default_factory=set)  # what it was last told to own


@dataclass
class Group:
    members: dict = field(default_factory=dict)  # member_id -> Member, in join order
    offsets: dict = field(default_factory=dict)  # (topic, partition) -> offset
    epoch: int = 0


class FakeGroupCluster(FakeCluster):
    """FakeCluster whose broker `coordinator_id` coordinates every group."""

    def __init__(self, count, topic, partitions, coordinator_id=1):
        self.coordinator_id = coordinator_id
        self.groups: dict = {}
        self.heartbeat_errors = deque()  # codes the coordinator answers to the next heartbeats
        self.commit_errors = deque()  # codes it answers to the next commits
        self.find_errors = deque()  # codes any broker answers to the next FindCoordinators
        self.group_requests = []  # (broker_id, request) of every group request, in order
        self._next_member = 0
        self.rejoined_as = []  # member ids that joined again under their own id (epoch 0)
        super().__init__(count, topic, partitions)

    def answer(self, broker_id, request, final=True):
        handler = self._HANDLERS.get(type(request))
        if handler is None:
            return super().answer(broker_id, request, final)
        with self.lock:
            self.group_requests.append((broker_id, request))
            return handler(self, broker_id, request)

    # ------------------------------------------------------------------------ test controls

    def requests(self, request_type) -> list:
        with self.lock:
            return [r for _, r in self.group_requests if isinstance(r, request_type)]

    def members(self, group_id) -> dict:
        with self.lock:
            group = self.groups.get(group_id)
            return {} if group is None else {m.member_id: set(m.owned) for m in group.members.values()}

    def committed(self, group_id) -> dict:
        with self.lock:
            group = self.groups.get(group_id)
            return {} if group is None else dict(group.offsets)

    def expire(self, group_id, member_id) -> None:
        """The member's session ran out: the coordinator forgets it and frees its partitions."""
        with self.lock:
            self.groups[group_id].members.pop(member_id)

    def fence(self, group_id, member_id) -> None:
        """Bump the member's epoch behind its back, so its next heartbeat is FENCED_MEMBER_EPOCH."""
        with self.lock:
            self.groups[group_id].members[member_id].epoch += 10

    def _offset(self, broker_id, asked):
        """ListOffsets; a timestamp finds the first record if it is in the past, none if in the future."""
        answer = super()._offset(broker_id, asked)
        if asked["timestamp_ms"] >= 0 and not answer["error_code"]:
            answer["offset"] = 0 if asked["timestamp_ms"] <= time.time() * 1000 and self.logs[asked["partition"]] else -1
        return answer

    # -------------------------------------------------------------------------- the handlers

    def _not_coordinator(self, broker_id):
        return broker_id != self.coordinator_id

    def _find(self, broker_id, request):
        if self.find_errors:
            return FindCoordinatorResponse(int(self.find_errors.popleft()), "__consumer_offsets is being created")
        return FindCoordinatorResponse(0, "", self.coordinator_id, self.brokers[self.coordinator_id].address)

    def _heartbeat(self, broker_id, request):
        def refuse(code, message=""):
            return ConsumerGroupHeartbeatResponse(int(code), message, request.member_id, request.member_epoch)

        if self._not_coordinator(broker_id):
            return refuse(ErrorCode.NOT_COORDINATOR, f"broker {broker_id} does not coordinate it")
        if self.heartbeat_errors:
            return refuse(self.heartbeat_errors.popleft(), "injected")
        group = self.groups.setdefault(request.group_id, Group())
        if request.member_epoch == JOIN_EPOCH:  # under a new id, or its own to replace a fenced incarnation
            if request.member_id:
                self.rejoined_as.append(request.member_id)
            else:
                self._next_member += 1
            member_id = request.member_id or f"member-{self._next_member}"
            member = Member(member_id, request.client_id, list(request.subscribed_topics))
            group.members[member.member_id] = member
            group.epoch += 1
        else:
            member = group.members.get(request.member_id)
            if member is None:
                return refuse(ErrorCode.UNKNOWN_MEMBER_ID, f"no member {request.member_id}")
            if request.member_epoch == LEAVE_EPOCH:
                del group.members[member.member_id]
                group.epoch += 1
                return ConsumerGroupHeartbeatResponse(0, "", member.member_id, LEAVE_EPOCH)
            if request.member_epoch != member.epoch:  # a zombie: fenced out, its partitions freed
                del group.members[member.member_id]
                return refuse(ErrorCode.FENCED_MEMBER_EPOCH, f"epoch {request.member_epoch}, not {member.epoch}")
            member.subscribed = list(request.subscribed_topics)
        member.owned = {(e["topic"], p) for e in request.owned_partitions for p in e["partitions"]}
        assignment = self._assignment(group, member)
        if assignment != member.assignment:
            member.assignment = assignment
            member.epoch += 1
        return ConsumerGroupHeartbeatResponse(0, "", member.member_id, member.epoch, HEARTBEAT_INTERVAL_MS,
                                              _wire(member.assignment))

    def _assignment(self, group, member) -> set:
        """Round-robin target, minus what another member still holds."""
        members = [m for m in group.members.values() if self.topic in m.subscribed]
        if member not in members:
            return set()
        target = {(self.topic, p) for p in range(len(self.logs)) if p % len(members) == members.index(member)}
        held = set().union(*[m.owned | m.assignment for m in group.members.values() if m is not member])
        return target - held

    def _commit(self, broker_id, request):
        if self._not_coordinator(broker_id):
            return OffsetCommitResponse(int(ErrorCode.NOT_COORDINATOR), "not the coordinator")
        if self.commit_errors:
            return OffsetCommitResponse(int(self.commit_errors.popleft()), "injected")
        group = self.groups.setdefault(request.group_id, Group())
        if request.member_id == "":
            if group.members:
                return OffsetCommitResponse(int(ErrorCode.NON_EMPTY_GROUP), "the group has members")
        else:
            member = group.members.get(request.member_id)
            if member is None:
                return OffsetCommitResponse(int(ErrorCode.UNKNOWN_MEMBER_ID), "unknown member")
            if request.member_epoch < member.epoch:
                return OffsetCommitResponse(int(ErrorCode.STALE_MEMBER_EPOCH), "stale epoch")
            if request.member_epoch > member.epoch:
                return OffsetCommitResponse(int(ErrorCode.FENCED_MEMBER_EPOCH), "epoch from the future")
        results = []
        for entry in request.partitions:
            group.offsets[(entry["topic"], entry["partition"])] = entry["offset"]
            results.append({"topic": entry["topic"], "partition": entry["partition"], "error_code": 0,
                            "error_message": ""})
        return OffsetCommitResponse(0, "", results)

    def _fetch_offsets(self, broker_id, request):
        if self._not_coordinator(broker_id):
            return OffsetFetchResponse(int(ErrorCode.NOT_COORDINATOR), "not the coordinator")
        offsets = self.groups.get(request.group_id, Group()).offsets
        asked = sorted(offsets) if request.partitions is None else [(p["topic"], p["partition"])
                                                                    for p in request.partitions]
        return OffsetFetchResponse(0, "", [{"topic": t, "partition": p, "offset": offsets.get((t, p), -1),
                                            "metadata": ""} for t, p in asked])

    def _list(self, broker_id, request):
        if self._not_coordinator(broker_id):
            return ListGroupsResponse(0, "", [])
        return ListGroupsResponse(0, "", [{"group_id": g, "state": _state(group), "members": len(group.members)}
                                          for g, group in sorted(self.groups.items())])

    def _describe(self, broker_id, request):
        out = []
        for group_id in request.group_ids:
            group = self.groups.get(group_id)
            base = {"group_id": group_id, "state": "Dead", "group_epoch": 0, "assignor": "", "members": []}
            if self._not_coordinator(broker_id):
                out.append({**base, "error_code": int(ErrorCode.NOT_COORDINATOR), "error_message": "not it"})
            elif group is None:
                out.append({**base, "error_code": int(ErrorCode.GROUP_ID_NOT_FOUND), "error_message": "no such group"})
            else:
                members = [{"member_id": m.member_id, "client_id": m.client_id, "member_epoch": m.epoch,
                            "subscribed_topics": m.subscribed, "assignment": _wire(m.assignment)}
                           for m in group.members.values()]
                out.append({**base, "error_code": 0, "error_message": "", "state": _state(group),
                            "group_epoch": group.epoch, "assignor": "range", "members": members})
        return DescribeGroupsResponse(out)

    def _delete(self, broker_id, request):
        out = []
        for group_id in request.group_ids:
            group = self.groups.get(group_id)
            code = (ErrorCode.NOT_COORDINATOR if self._not_coordinator(broker_id) else
                    ErrorCode.GROUP_ID_NOT_FOUND if group is None else
                    ErrorCode.NON_EMPTY_GROUP if group.members else ErrorCode.NONE)
            if code == ErrorCode.NONE:
                del self.groups[group_id]
            out.append({"group_id": group_id, "error_code": int(code), "error_message": code.name.lower()})
        return DeleteGroupsResponse(out)

    _HANDLERS = {
        FindCoordinatorRequest: _find,
        ConsumerGroupHeartbeatRequest: _heartbeat,
        OffsetCommitRequest: _commit,
        OffsetFetchRequest: _fetch_offsets,
        ListGroupsRequest: _list,
        DescribeGroupsRequest: _describe,
        DeleteGroupsRequest: _delete,
    }


def _state(group) -> str:
    if not group.members:
        return "Empty"
    settled = all(m.owned == m.assignment for m in group.members.values())
    return "Stable" if settled else "Reconciling"


def _wire(partitions) -> list:
    by_topic: dict = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]
