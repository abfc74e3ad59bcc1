"""The coordinator's broker glue (distlog/broker/groups/coordinator.py) over fake replicas of
`__consumer_offsets`: loading waits for the log to commit, answers wait for their records,
losing leadership fails what waits, and a new leader rebuilds the groups from the log."""

from types import SimpleNamespace

from distlog.broker.groups.coordinator import (
    OFFSETS_TOPIC,
    GroupCoordinator,
    find_coordinator,
    offsets_partition_for,
    offsets_topic_request,
)
from distlog.log.batch import iter_batches
from distlog.log.batch_builder import build_batch
from distlog.log.records import batch_records
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    ConsumerGroupHeartbeatRequest,
    DescribeGroupsRequest,
    ListGroupsRequest,
    OffsetCommitRequest,
    OffsetFetchRequest,
)
from distlog.replication.replica import Appended, NotLeaderForPartitionError

PARTITIONS = 2
COUNTS = {OFFSETS_TOPIC: PARTITIONS, "t": 4}
NOW = 0.0  # requests arrive at t=0; the loop's turns come after


class FakeReplica:
    """A partition log in memory whose high watermark the test moves by hand."""

    def __init__(self, term=1):
        self.is_leader = True
        self.node = SimpleNamespace(term=term)
        self.batches = []  # (base offset, last offset, bytes)
        self.high_watermark = 0
        self.log_start_offset = 0

    @property
    def log_end_offset(self):
        return self.batches[-1][1] + 1 if self.batches else 0

    def append(self, batch: bytes) -> Appended:
        records = batch_records(next(iter_batches(batch)))
        base = self.log_end_offset
        stamped = build_batch([r.value for r in records], [r.key for r in records], base_offset=base)
        self.batches.append((base, base + len(records) - 1, bytes(stamped)))
        return Appended(self.node.term, base, base + len(records) - 1)

    def commit_all(self):
        self.high_watermark = self.log_end_offset

    def read(self, offset, max_bytes):
        return b"".join(data for base, last, data in self.batches if base >= offset and last < self.high_watermark)


def propose(replica, batch):
    if not replica.is_leader:
        raise NotLeaderForPartitionError("not the leader", None)
    return [replica.append(batch)]


def group_in(index: int, prefix="g") -> str:
    return next(f"{prefix}{i}" for i in range(1000) if offsets_partition_for(f"{prefix}{i}", PARTITIONS) == index)


def logger():
    return SimpleNamespace(info=lambda *a, **k: None, warning=lambda *a, **k: None, error=lambda *a, **k: None)


def join(group, member_id="", epoch=0, owned=()):
    return ConsumerGroupHeartbeatRequest(group, member_id, epoch, "c", ["t"], list(owned), None, 10_000)


def started(replicas):
    coordinator = GroupCoordinator(1, propose, logger())
    assert coordinator.step(replicas, COUNTS, 0.0) == []
    return coordinator


def test_an_answer_waits_for_its_records_to_commit():
    replicas = {(OFFSETS_TOPIC, 0): FakeReplica(), (OFFSETS_TOPIC, 1): FakeReplica()}
    coordinator = started(replicas)
    group = group_in(0)
    assert coordinator.handle(b"peer", 7, join(group), replicas, COUNTS, NOW) is None
    assert coordinator.step(replicas, COUNTS, 0.1) == []  # not committed yet
    replicas[(OFFSETS_TOPIC, 0)].commit_all()
    [(peer, cid, response)] = coordinator.step(replicas, COUNTS, 0.2)
    assert (peer, cid, response.error_code, response.member_epoch) == (b"peer", 7, 0, 1)
    # A read that changed nothing is answered at once once everything before it committed
    fetched = coordinator.handle(b"peer", 8, OffsetFetchRequest(group), replicas, COUNTS, NOW)
    assert fetched.error_code == 0 and fetched.partitions == []


def test_a_read_waits_for_the_writes_before_it():
    replicas = {(OFFSETS_TOPIC, 0): FakeReplica(), (OFFSETS_TOPIC, 1): FakeReplica()}
    coordinator = started(replicas)
    group = group_in(0)
    coordinator.handle(b"p", 1, join(group), replicas, COUNTS, NOW)
    assert coordinator.handle(b"p", 2, DescribeGroupsRequest([group]), replicas, COUNTS, NOW) is None
    replicas[(OFFSETS_TOPIC, 0)].commit_all()
    answers = coordinator.step(replicas, COUNTS, 0.1)
    assert [cid for _, cid, _ in answers] == [1, 2]
    assert answers[1][2].groups[0]["members"][0]["client_id"] == "c"


def test_losing_leadership_fails_the_waiting_answers_and_drops_the_state():
    replicas = {(OFFSETS_TOPIC, 0): FakeReplica(), (OFFSETS_TOPIC, 1): FakeReplica()}
    coordinator = started(replicas)
    group = group_in(0)
    coordinator.handle(b"p", 1, join(group), replicas, COUNTS, NOW)
    replicas[(OFFSETS_TOPIC, 0)].is_leader = False
    [(_, _, response)] = coordinator.step(replicas, COUNTS, 0.1)
    assert response.error_code == ErrorCode.NOT_COORDINATOR and "find the coordinator" in response.error_message
    again = coordinator.handle(b"p", 2, join(group), replicas, COUNTS, NOW)
    assert again.error_code == ErrorCode.NOT_COORDINATOR


def test_an_answer_that_never_commits_times_out():
    replicas = {(OFFSETS_TOPIC, 0): FakeReplica(), (OFFSETS_TOPIC, 1): FakeReplica()}
    coordinator = started(replicas)
    request = OffsetCommitRequest(group_in(0), "", -1, [{"topic": "t", "partition": 1, "offset": 3, "metadata": ""}])
    assert coordinator.handle(b"p", 1, request, replicas, COUNTS, NOW) is None
    assert coordinator.next_deadline_s() is not None
    assert coordinator.step(replicas, COUNTS, 5.0) == []
    [(_, _, response)] = coordinator.step(replicas, COUNTS, 60.0)
    assert response.error_code == ErrorCode.REQUEST_TIMED_OUT
    assert response.partitions[0]["error_code"] == ErrorCode.REQUEST_TIMED_OUT


def test_a_new_leader_loads_only_once_the_log_is_committed_and_rebuilds_the_groups():
    old = {(OFFSETS_TOPIC, 0): FakeReplica(), (OFFSETS_TOPIC, 1): FakeReplica()}
    coordinator = started(old)
    group = group_in(1)
    coordinator.handle(b"p", 1, join(group), old, COUNTS, NOW)
    old[(OFFSETS_TOPIC, 1)].commit_all()
    member = coordinator.step(old, COUNTS, 0.1)[0][2]
    commit = OffsetCommitRequest(group, member.member_id, member.member_epoch,
                                 [{"topic": "t", "partition": 2, "offset": 42, "metadata": "m"}])
    coordinator.handle(b"p", 2, commit, old, COUNTS, NOW)  # written, not yet committed when the leader fails
    # The new leader holds the same log; only the first write had been committed.
    log = old[(OFFSETS_TOPIC, 1)]
    new = {(OFFSETS_TOPIC, 0): FakeReplica(term=2), (OFFSETS_TOPIC, 1): FakeReplica(term=2)}
    new[(OFFSETS_TOPIC, 1)].batches = list(log.batches)
    new[(OFFSETS_TOPIC, 1)].high_watermark = log.high_watermark
    successor = started(new)
    loading = successor.handle(b"p", 3, OffsetFetchRequest(group), new, COUNTS, NOW)
    assert loading.error_code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    new[(OFFSETS_TOPIC, 1)].commit_all()
    successor.step(new, COUNTS, 0.2)
    fetched = successor.handle(b"p", 4, OffsetFetchRequest(group), new, COUNTS, NOW)
    assert fetched.partitions == [{"topic": "t", "partition": 2, "offset": 42, "metadata": "m"}]
    again = successor.handle(b"p", 5, join(group, member.member_id, member.member_epoch,
                                           member.assignment), new, COUNTS, NOW)
    assert again.error_code == 0 and again.member_epoch == member.member_epoch


def test_sessions_expire_through_the_loop_and_are_written():
    replicas = {(OFFSETS_TOPIC, 0): FakeReplica(), (OFFSETS_TOPIC, 1): FakeReplica()}
    coordinator = started(replicas)
    group = group_in(0)
    coordinator.handle(b"p", 1, join(group), replicas, COUNTS, NOW)
    log = replicas[(OFFSETS_TOPIC, 0)]
    log.commit_all()
    coordinator.step(replicas, COUNTS, 1.0)
    written = log.log_end_offset
    coordinator.step(replicas, COUNTS, 30.0)  # past the 10 s session
    assert log.log_end_offset == written + 1
    log.commit_all()
    described = coordinator.handle(b"p", 2, DescribeGroupsRequest([group]), replicas, COUNTS, NOW)
    assert described.groups[0]["state"] == "Empty"


def test_requests_for_groups_elsewhere_or_before_the_topic_exists():
    replicas = {(OFFSETS_TOPIC, 0): FakeReplica()}  # partition 1 is led elsewhere
    coordinator = started(replicas)
    elsewhere = coordinator.handle(b"p", 1, join(group_in(1)), replicas, COUNTS, NOW)
    assert elsewhere.error_code == ErrorCode.NOT_COORDINATOR
    missing = coordinator.handle(b"p", 1, join("g"), {}, {"t": 4}, NOW)
    assert missing.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    invalid = coordinator.handle(b"p", 1, join(""), replicas, COUNTS, NOW)
    assert invalid.error_code == ErrorCode.INVALID_GROUP_ID
    several = coordinator.handle(b"p", 2, DescribeGroupsRequest([group_in(0), group_in(1)]), replicas, COUNTS, NOW)
    assert [g["error_code"] for g in several.groups] == [ErrorCode.GROUP_ID_NOT_FOUND, ErrorCode.NOT_COORDINATOR]
    listed = coordinator.handle(b"p", 3, ListGroupsRequest(), replicas, COUNTS, NOW)
    assert listed.error_code == 0 and listed.groups == []


def test_find_coordinator_names_the_leader_of_the_groups_partition():
    topics = {OFFSETS_TOPIC: SimpleNamespace(partition_count=PARTITIONS)}
    addresses = {1: "tcp://127.0.0.1:1", 2: "tcp://127.0.0.1:2"}
    leaders = {(OFFSETS_TOPIC, 0): 1, (OFFSETS_TOPIC, 1): 2}
    found = find_coordinator(group_in(1), topics, addresses, leaders.get)
    assert (found.error_code, found.coordinator_id, found.address) == (0, 2, "tcp://127.0.0.1:2")
    assert find_coordinator("g", {}, addresses, leaders.get).error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert find_coordinator(group_in(0), topics, addresses, {}.get).error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert find_coordinator("", topics, addresses, leaders.get).error_code == ErrorCode.INVALID_GROUP_ID
    assert offsets_topic_request(2).topics[0]["replication_factor"] == 2
    assert offsets_topic_request(5).topics[0]["replication_factor"] == 3
