"""The group coordinator's pure state machine (distlog/broker/groups/state.py): membership,
incremental reconciliation, fencing, offsets, and rebuilding from its own records.

The randomized test drives members that follow the protocol (and lose responses, crash, leave
and rejoin, and the coordinator fails over) and checks after every step that no partition has two
owners, that a state rebuilt from the records equals the live one, and that the group converges."""

import itertools
import random

import pytest

from distlog.broker.groups.records import CoordinatorRecord, decode, encode_key, encode_value
from distlog.broker.groups.state import EMPTY, RECONCILING, STABLE, CoordinatorState
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    ConsumerGroupHeartbeatRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
)

COUNTS = {"t": 6, "u": 3}


def ids():
    counter = itertools.count(1)
    return lambda: f"m{next(counter)}"


def owned_wire(owned) -> list:
    by_topic = {}
    for topic, partition in sorted(owned):
        by_topic.setdefault(topic, []).append(partition)
    return [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]


def assignment_of(response) -> set:
    return {(item["topic"], p) for item in response.assignment for p in item["partitions"]}


def heartbeat(state, member_id="", epoch=0, owned=(), topics=("t",), now_ms=0, new_id=None, group="g"):
    request = ConsumerGroupHeartbeatRequest(group, member_id, epoch, "client", list(topics), owned_wire(owned),
                                            None, 10_000)
    return state.heartbeat(request, now_ms, COUNTS, new_id or ids())


class TestMembership:
    def test_a_lone_member_gets_every_partition_of_its_topics(self):
        state = CoordinatorState()
        outcome = heartbeat(state, topics=("t", "u"), new_id=lambda: "a")
        assert outcome.response.error_code == 0
        assert outcome.response.member_id == "a" and outcome.response.member_epoch == 1
        assert assignment_of(outcome.response) == {("t", p) for p in range(6)} | {("u", p) for p in range(3)}
        assert outcome.records and state.groups["g"].state == STABLE

    def test_a_partition_moves_only_after_its_owner_released_it(self):
        state = CoordinatorState()
        new_id = ids()
        a = heartbeat(state, new_id=new_id).response
        a_owned = assignment_of(a)
        b = heartbeat(state, new_id=new_id).response
        assert b.member_epoch == 2 and assignment_of(b) == set()  # all still held by a
        # a is told to give up half, keeping its epoch until it has
        a2 = heartbeat(state, a.member_id, a.member_epoch, a_owned).response
        assert a2.member_epoch == a.member_epoch and len(assignment_of(a2)) == 3
        assert state.groups["g"].state == RECONCILING
        # b asks again before a confirmed: still nothing
        assert assignment_of(heartbeat(state, b.member_id, b.member_epoch, set()).response) == set()
        # a reports the release and advances; then b gets the rest
        a3 = heartbeat(state, a.member_id, a2.member_epoch, assignment_of(a2)).response
        assert a3.member_epoch == 2
        b2 = heartbeat(state, b.member_id, b.member_epoch, set()).response
        assert assignment_of(b2) == a_owned - assignment_of(a2)
        heartbeat(state, b.member_id, b2.member_epoch, assignment_of(b2))
        assert state.groups["g"].state == STABLE

    def test_leaving_frees_the_partitions_at_once(self):
        state = CoordinatorState()
        new_id = ids()
        a = heartbeat(state, new_id=new_id).response
        b = heartbeat(state, new_id=new_id).response
        left = heartbeat(state, a.member_id, -1).response
        assert left.error_code == 0 and left.member_epoch == -1
        b2 = heartbeat(state, b.member_id, b.member_epoch, set()).response
        assert assignment_of(b2) == {("t", p) for p in range(6)}

    def test_an_expired_session_frees_the_partitions(self):
        state = CoordinatorState()
        new_id = ids()
        a = heartbeat(state, new_id=new_id, now_ms=0).response
        b = heartbeat(state, new_id=new_id, now_ms=5_000).response
        assert state.expire(9_999, COUNTS) == []
        records = state.expire(10_000, COUNTS)
        assert len(records) == 1 and a.member_id not in state.groups["g"].members
        b2 = heartbeat(state, b.member_id, b.member_epoch, set(), now_ms=10_001).response
        assert len(assignment_of(b2)) == 6
        assert heartbeat(state, a.member_id, a.member_epoch, assignment_of(a)).response.error_code == ErrorCode.UNKNOWN_MEMBER_ID

    def test_a_wrong_epoch_is_fenced_but_the_previous_one_with_what_it_holds_is_not(self):
        state = CoordinatorState()
        new_id = ids()
        a = heartbeat(state, new_id=new_id).response
        assert heartbeat(state, a.member_id, a.member_epoch + 5, set()).response.error_code == ErrorCode.FENCED_MEMBER_EPOCH
        b = heartbeat(state, new_id=new_id).response
        # a's revocation step, then its advance: the response of the advance is "lost"
        a2 = heartbeat(state, a.member_id, a.member_epoch, assignment_of(a)).response
        heartbeat(state, a.member_id, a2.member_epoch, assignment_of(a2))
        assert state.groups["g"].members[a.member_id].epoch == b.member_epoch
        again = heartbeat(state, a.member_id, a2.member_epoch, assignment_of(a2)).response
        assert again.error_code == 0 and again.member_epoch == b.member_epoch

    def test_a_rejoin_under_the_same_id_replaces_the_old_incarnation(self):
        state = CoordinatorState()
        new_id = ids()
        a = heartbeat(state, new_id=new_id).response
        b = heartbeat(state, new_id=new_id).response
        rejoined = heartbeat(state, a.member_id, 0).response
        assert rejoined.member_id == a.member_id and rejoined.member_epoch > b.member_epoch
        assert len(state.groups["g"].members) == 2

    def test_a_new_topic_and_more_partitions_bump_the_epoch(self):
        state = CoordinatorState()
        request = ConsumerGroupHeartbeatRequest("g", "", 0, "c", ["new"], [], None, 10_000)
        joined = state.heartbeat(request, 0, {}, lambda: "a").response
        assert assignment_of(joined) == set()
        again = ConsumerGroupHeartbeatRequest("g", "a", joined.member_epoch, "c", ["new"], [], None, 10_000)
        grown = state.heartbeat(again, 0, {"new": 2}, lambda: "x").response
        assert grown.member_epoch == joined.member_epoch + 1 and assignment_of(grown) == {("new", 0), ("new", 1)}

    @pytest.mark.parametrize("request_fields, code", [
        ({"group_id": ""}, ErrorCode.INVALID_GROUP_ID),
        ({"session_timeout_ms": 10}, ErrorCode.INVALID_REQUEST),
        ({"assignor": "nope"}, ErrorCode.INVALID_REQUEST),
        ({"member_id": "ghost", "member_epoch": 3}, ErrorCode.UNKNOWN_MEMBER_ID),
        ({"member_id": "ghost", "member_epoch": -1}, ErrorCode.UNKNOWN_MEMBER_ID),
    ])
    def test_bad_heartbeats_are_refused_and_change_nothing(self, request_fields, code):
        state = CoordinatorState()
        fields = {"group_id": "g", "member_id": "", "member_epoch": 0, "client_id": "c", "subscribed_topics": ["t"],
                  "owned_partitions": [], "assignor": None, "session_timeout_ms": 10_000, **request_fields}
        outcome = state.heartbeat(ConsumerGroupHeartbeatRequest(**fields), 0, COUNTS, ids())
        assert outcome.response.error_code == code and outcome.response.error_message
        assert outcome.records == [] and state.groups == {}


class TestOffsets:
    def commit(self, state, member_id, epoch, offsets, group="g"):
        partitions = [{"topic": t, "partition": p, "offset": o, "metadata": ""} for (t, p), o in offsets.items()]
        return state.commit(OffsetCommitRequest(group, member_id, epoch, partitions), 1234, COUNTS)

    def test_commits_are_fenced_by_member_and_epoch(self):
        state = CoordinatorState()
        new_id = ids()
        a = heartbeat(state, new_id=new_id).response
        assert self.commit(state, a.member_id, a.member_epoch, {("t", 0): 5}).response.error_code == 0
        assert self.commit(state, "ghost", 1, {("t", 0): 6}).response.error_code == ErrorCode.UNKNOWN_MEMBER_ID
        assert self.commit(state, a.member_id, a.member_epoch + 1, {("t", 0): 6}).response.error_code == ErrorCode.FENCED_MEMBER_EPOCH
        heartbeat(state, new_id=new_id)  # b joins; a's advance bumps its epoch
        a2 = heartbeat(state, a.member_id, a.member_epoch, assignment_of(a)).response
        heartbeat(state, a.member_id, a2.member_epoch, assignment_of(a2))
        assert self.commit(state, a.member_id, a.member_epoch, {("t", 0): 6}).response.error_code == ErrorCode.STALE_MEMBER_EPOCH
        fetched = state.fetch(OffsetFetchRequest("g", [{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}]))
        assert [p["offset"] for p in fetched.partitions] == [5, -1]

    def test_commits_from_outside_only_while_the_group_is_empty(self):
        state = CoordinatorState()
        assert self.commit(state, "", -1, {("t", 1): 3}).response.error_code == 0
        a = heartbeat(state, new_id=lambda: "a").response
        refused = self.commit(state, "", -1, {("t", 1): 4}).response
        assert refused.error_code == ErrorCode.NON_EMPTY_GROUP and "1 member" in refused.error_message
        heartbeat(state, a.member_id, -1)
        assert self.commit(state, "", -1, {("t", 1): 4}).response.error_code == 0
        assert state.fetch(OffsetFetchRequest("g")).partitions == [{"topic": "t", "partition": 1, "offset": 4, "metadata": ""}]

    def test_bad_partitions_are_refused_one_by_one(self):
        state = CoordinatorState()
        results = self.commit(state, "", -1, {("t", 0): 1, ("t", 9): 1, ("nope", 0): 1, ("u", 0): -5}).response.partitions
        assert [r["error_code"] for r in results] == [0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                                     ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.INVALID_REQUEST]

    def test_delete_refuses_a_group_with_members_and_tombstones_the_rest(self):
        state = CoordinatorState()
        a = heartbeat(state, new_id=lambda: "a").response
        self.commit(state, a.member_id, a.member_epoch, {("t", 0): 1, ("t", 1): 2})
        assert state.delete(["g"]).response.groups[0]["error_code"] == ErrorCode.NON_EMPTY_GROUP
        heartbeat(state, a.member_id, -1)
        outcome = state.delete(["g", "nope"])
        assert [g["error_code"] for g in outcome.response.groups] == [0, ErrorCode.GROUP_ID_NOT_FOUND]
        assert len(outcome.records) == 3 and all(r.value is None for r in outcome.records)
        assert state.known_groups() == []
        assert state.describe(["g"]).groups[0]["error_code"] == ErrorCode.GROUP_ID_NOT_FOUND


def rebuilt(records: list, now_ms: int) -> CoordinatorState:
    """A new coordinator's state from the log, through the byte codec, after compaction (the last
    record per key)."""
    latest = {}
    for record in records:
        latest[encode_key(record.key)] = encode_value(record.value)
    state = CoordinatorState()
    for key, value in latest.items():
        state.apply(decode(key, value), now_ms)
    return state


class SimulatedMember:
    """A consumer as the client library behaves: it owns what its last answer gave it, and drops
    everything once no heartbeat has succeeded for a session timeout (it must assume it is out)."""

    def __init__(self, topics, now_ms):
        self.member_id, self.epoch, self.owned, self.topics = "", 0, set(), topics
        self.last_ok_ms = now_ms

    def request(self, session_ms: int) -> ConsumerGroupHeartbeatRequest:
        return ConsumerGroupHeartbeatRequest("g", self.member_id, self.epoch, "sim", list(self.topics),
                                             owned_wire(self.owned), None, session_ms)

    def on_response(self, response, now_ms: int) -> None:
        if response.error_code == ErrorCode.UNKNOWN_MEMBER_ID:
            self.member_id, self.epoch, self.owned = "", 0, set()
        elif response.error_code == ErrorCode.FENCED_MEMBER_EPOCH:
            self.epoch, self.owned = 0, set()
        else:
            assert response.error_code == 0, response
            self.member_id, self.epoch, self.owned = response.member_id, response.member_epoch, assignment_of(response)
            self.last_ok_ms = now_ms

    def check_session(self, now_ms: int, session_ms: int) -> None:
        if now_ms - self.last_ok_ms >= session_ms:
            self.owned = set()


def check_no_two_owners(members: list, state: CoordinatorState) -> None:
    seen = {}
    group = state.groups.get("g")
    for member in members:
        for tp in member.owned:
            assert tp not in seen, f"{tp} owned by {seen[tp]} and {member.member_id}"
            seen[tp] = member.member_id
            held = group.members[member.member_id]
            assert tp in held.assigned | held.revoking, f"{member.member_id} owns {tp} the coordinator did not give it"


@pytest.mark.parametrize("seed", range(300))
def test_random_histories_never_give_a_partition_two_owners_and_converge(seed):
    rng = random.Random(seed)
    session_ms = 10_000
    state, records, now_ms, new_id = CoordinatorState(), [], 0, ids()
    members = []
    for _ in range(rng.randint(20, 150)):
        now_ms += rng.choice([0, 10, 500, 2_000, 4_000])
        action = rng.random()
        if action < 0.15 and len(members) < 6:
            members.append(SimulatedMember(rng.choice([("t",), ("t", "u"), ("u",)]), now_ms))
        elif action < 0.2 and members:  # a crash: it owns nothing any more, the coordinator times it out
            members.remove(rng.choice(members))
        elif action < 0.25 and members:  # a clean leave
            member = rng.choice(members)
            if member.member_id:
                records += heartbeat(state, member.member_id, -1, now_ms=now_ms).records
            members.remove(member)
        elif action < 0.3:  # coordinator failover: the new one knows only the records
            state = rebuilt(records, now_ms)
        elif members:
            member = rng.choice(members)
            outcome = state.heartbeat(member.request(session_ms), now_ms, COUNTS, new_id)
            fate = rng.random()
            if fate < 0.1:  # the coordinator failed before the change committed: it never happened
                state = rebuilt(records, now_ms)
            else:
                records += outcome.records
                if fate > 0.25:  # else the committed answer is lost on the way
                    member.on_response(outcome.response, now_ms)
        records += state.expire(now_ms, COUNTS)
        for member in members:
            member.check_session(now_ms, session_ms)
        check_no_two_owners([m for m in members if m.owned], state)
        if "g" in state.groups:
            assert rebuilt(records, now_ms).groups["g"].to_value() == state.groups["g"].to_value()
    # Quiet network, everyone heartbeats each second: the crashed time out, the group settles.
    for _ in range(session_ms // 1000 + 8):
        now_ms += 1000
        records += state.expire(now_ms, COUNTS)
        for member in members:
            outcome = state.heartbeat(member.request(session_ms), now_ms, COUNTS, new_id)
            records += outcome.records
            member.on_response(outcome.response, now_ms)
        check_no_two_owners([m for m in members if m.owned], state)
    group = state.groups.get("g")
    if members:
        assert group.state == STABLE, group
        wanted = {(t, p) for m in members for t in m.topics for p in range(COUNTS[t])}
        assert set().union(*(m.owned for m in members)) == wanted
        assert all(m.owned == group.target[m.member_id] for m in members)
    else:
        assert group is None or group.state == EMPTY


def test_records_survive_the_byte_codec():
    state = CoordinatorState()
    outcome = heartbeat(state, topics=("t", "u"), new_id=lambda: "a")
    commit = state.commit(OffsetCommitRequest("g", "a", 1, [{"topic": "t", "partition": 2, "offset": 7, "metadata": "m"}]),
                          99, COUNTS)
    copy = rebuilt(outcome.records + commit.records, 0)
    assert copy.groups["g"].to_value() == state.groups["g"].to_value()
    assert copy.offsets == state.offsets
    assert isinstance(outcome.records[0], CoordinatorRecord)
