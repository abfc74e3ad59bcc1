"""The group coordinator on one broker: the `__consumer_offsets` partitions it leads, loaded.

The coordinator of group G is the leader of `__consumer_offsets` partition crc32(G) mod N
(crc32, not Python's hash(): every broker and every run must agree). For each partition this
broker leads, the coordinator

  1. loads: waits until the high watermark reaches the log end it found on winning the election
     (every entry an earlier leader wrote is then committed), reads the log once and apply()s
     every record to a fresh CoordinatorState (state.py). Until then it answers
     COORDINATOR_LOAD_IN_PROGRESS;
  2. serves: each request changes the state at once, its records are proposed to the partition
     as one batch, and the answer waits until that batch is committed. An answer that changed
     nothing waits for whatever was proposed before it, so nobody hears of state that a
     failover could still lose;
  3. unloads on losing leadership (or a new term): the state is dropped and every waiting answer
     gets NOT_COORDINATOR; the client finds the new coordinator, which rebuilds from the log.

Sessions are timed against this broker's monotonic clock; a new coordinator gives every member
a full session afresh.

An answer that wrote nothing (a heartbeat with no change, an offset fetch) is served from this
broker's state as its leader. That relies on Raft's check-quorum lease (consensus/raft.py): a
leader cut off from its majority steps down within an election timeout, long before a member
it still answers could time out at the new coordinator and lose its partitions there.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from distlog.broker.groups.records import UnknownRecordError, decode, encode_key, encode_value
from distlog.broker.groups.state import CoordinatorState, Outcome, invalid_group_id
from distlog.log.batch import iter_batches
from distlog.log.batch_builder import build_batch
from distlog.log.errors import CorruptDataError, RecordTooLargeError
from distlog.log.records import batch_records
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    ApiKey,
    ConsumerGroupHeartbeatResponse,
    CreateTopicsRequest,
    DeleteGroupsResponse,
    DescribeGroupsResponse,
    FindCoordinatorResponse,
    ListGroupsResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
)
from distlog.replication.replica import NotLeaderForPartitionError

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 8
OFFSETS_REPLICATION_FACTOR = 3  # or the number of brokers, where there are fewer
# Compacted: the latest commit per (group, partition) and the latest state per group survive.
OFFSETS_TOPIC_CONFIGS = {"cleanup.policy": "compact"}
# An answer whose records have not committed by then gets REQUEST_TIMED_OUT (retriable; the
# write may still land, as with any timed-out produce).
COMMIT_WAIT_S = 10.0
LOAD_READ_BYTES = 1024 * 1024
# Sessions are checked this often, not every loop turn: the check walks every member.
EXPIRY_CHECK_S = 0.1


def offsets_partition_for(group_id: str, partitions: int) -> int:
    return zlib.crc32(group_id.encode()) % partitions


class PartitionCounts(Mapping):
    """{topic: partition count}, read through to the metadata's topics (built for no call)."""

    def __init__(self, topics: dict):
        self._topics = topics

    def __getitem__(self, name: str) -> int:
        return self._topics[name].partition_count

    def __iter__(self):
        return iter(self._topics)

    def __len__(self) -> int:
        return len(self._topics)


def offsets_topic_request(broker_count: int) -> CreateTopicsRequest:
    return CreateTopicsRequest([{"name": OFFSETS_TOPIC, "partitions": OFFSETS_PARTITIONS,
                                 "replication_factor": max(1, min(OFFSETS_REPLICATION_FACTOR, broker_count)),
                                 "configs": dict(OFFSETS_TOPIC_CONFIGS)}])


def find_coordinator(group_id: str, topics: dict, addresses: dict, leader_of) -> FindCoordinatorResponse:
    """FindCoordinator answered from this broker's view: the leader of the group's partition."""
    why = invalid_group_id(group_id)
    if why:
        return FindCoordinatorResponse(int(ErrorCode.INVALID_GROUP_ID), why)
    meta = topics.get(OFFSETS_TOPIC)
    if meta is None:
        return FindCoordinatorResponse(int(ErrorCode.COORDINATOR_NOT_AVAILABLE),
                                       f"{OFFSETS_TOPIC} does not exist yet; it is being created, retry shortly")
    index = offsets_partition_for(group_id, meta.partition_count)
    leader = leader_of((OFFSETS_TOPIC, index))
    if leader is None or leader not in addresses:
        return FindCoordinatorResponse(int(ErrorCode.COORDINATOR_NOT_AVAILABLE),
                                       f"{OFFSETS_TOPIC}-{index}, which holds group {group_id!r}, has no leader right now; retry shortly")
    return FindCoordinatorResponse(0, "", leader, addresses[leader])


def error_response(request, code: ErrorCode, message: str):
    """`request`'s response type, failed with `code` throughout."""
    code = int(code)
    if request.API_KEY == ApiKey.CONSUMER_GROUP_HEARTBEAT:
        return ConsumerGroupHeartbeatResponse(code, message, request.member_id, request.member_epoch)
    if request.API_KEY == ApiKey.OFFSET_COMMIT:
        return OffsetCommitResponse(code, message, [{"topic": p["topic"], "partition": p["partition"], "error_code": code,
                                                     "error_message": message} for p in request.partitions])
    if request.API_KEY == ApiKey.OFFSET_FETCH:
        return OffsetFetchResponse(code, message, [])
    if request.API_KEY == ApiKey.DESCRIBE_GROUPS:
        return DescribeGroupsResponse([_group_error(g, code, message) for g in request.group_ids])
    if request.API_KEY == ApiKey.DELETE_GROUPS:
        return DeleteGroupsResponse([{"group_id": g, "error_code": code, "error_message": message} for g in request.group_ids])
    return ListGroupsResponse(code, message, [])


def _group_error(group_id: str, code: int, message: str) -> dict:
    return {"group_id": group_id, "error_code": code, "error_message": message, "state": "Dead", "group_epoch": -1,
            "assignor": "", "members": []}


@dataclass
class LoadedPartition:
    """A `__consumer_offsets` partition this broker leads, in one term."""

    index: int
    term: int
    load_until: int  # the log end when leadership was won: loading waits for it to commit
    state: CoordinatorState | None = None  # None while loading
    last_proposed: int = -1  # the offset the next answer must see committed


@dataclass
class PendingAnswer:
    peer: bytes
    cid: int
    request: object
    response: object
    waits: list  # [(partition index, term, offset)] that must be committed first
    deadline_s: float


@dataclass
class GroupCoordinator:
    broker_id: int
    propose: object  # (replica, batch bytes) -> [Appended]: the ReplicaManager's propose
    logger: object
    partitions: dict = field(default_factory=dict)  # index -> LoadedPartition
    pending: list = field(default_factory=list)  # [PendingAnswer]
    next_expiry_check_s: float = 0.0

    # ---- the loop's turn --------------------------------------------------------------------

    def step(self, replicas: dict, partition_counts: dict, now_s: float) -> list:
        """Load, unload, expire sessions and settle answers; the [(peer, cid, response)] to send."""
        count = partition_counts.get(OFFSETS_TOPIC, 0)
        for index in list(self.partitions):
            replica = replicas.get((OFFSETS_TOPIC, index))
            loaded = self.partitions[index]
            if index >= count or replica is None or not replica.is_leader or replica.node.term != loaded.term:
                self._unload(index, "lost leadership")
        check_expiry = now_s >= self.next_expiry_check_s
        if check_expiry:
            self.next_expiry_check_s = now_s + EXPIRY_CHECK_S
        for index in range(count):
            replica = replicas.get((OFFSETS_TOPIC, index))
            if replica is None or not replica.is_leader:
                continue
            loaded = self.partitions.get(index)
            if loaded is None:
                loaded = self.partitions[index] = LoadedPartition(index, replica.node.term, replica.log_end_offset)
            if loaded.state is None and replica.high_watermark >= loaded.load_until:
                self._load(replica, loaded, now_s)
            if loaded.state is not None and check_expiry:
                records = loaded.state.expire(_monotonic_ms(now_s), partition_counts)
                if records:
                    self.logger.info("group_members_expired", partition=index, groups=len(records))
                    self._write(replica, loaded, records)
        return self._settle(replicas, now_s)

    def next_deadline_s(self) -> float | None:
        deadlines = [p.deadline_s for p in self.pending]
        for loaded in self.partitions.values():
            expiry = loaded.state.next_expiry_ms() if loaded.state is not None else None
            if expiry is not None:
                deadlines.append(expiry / 1000)
        return min(deadlines) if deadlines else None

    @property
    def loading(self) -> bool:
        return any(loaded.state is None for loaded in self.partitions.values())

    def _load(self, replica, loaded: LoadedPartition, now_s: float) -> None:
        state = CoordinatorState()
        now_ms = _monotonic_ms(now_s)
        offset, end, skipped = replica.log_start_offset, replica.high_watermark, 0
        try:
            while offset < end:
                view = replica.read(offset, LOAD_READ_BYTES)
                batches = list(iter_batches(view)) if len(view) else []
                if not batches:
                    break
                for batch in batches:
                    offset = batch.last_offset + 1
                    if batch.is_control:
                        continue
                    for record in batch_records(batch):
                        try:
                            state.apply(decode(record.key, record.value), now_ms)
                        except UnknownRecordError as error:
                            skipped += 1
                            self.logger.warning("group_record_skipped", partition=loaded.index, offset=record.offset, error=str(error))
        except CorruptDataError as error:  # the replica goes to repair; another replica will coordinate
            self.logger.error("group_load_failed", partition=loaded.index, error=str(error))
            return
        state.refresh_sessions(now_ms)
        loaded.state = state
        loaded.last_proposed = end - 1
        self.logger.info("groups_loaded", partition=loaded.index, term=loaded.term, groups=len(state.known_groups()),
                         records_skipped=skipped)

    def _unload(self, index: int, why: str) -> None:
        loaded = self.partitions.pop(index, None)
        if loaded is not None and loaded.state is not None:
            self.logger.info("groups_unloaded", partition=index, term=loaded.term, why=why)

    def _write(self, replica, loaded: LoadedPartition, records: list) -> bool:
        """Propose the records as one batch; False (and the partition unloaded) when that fails."""
        keys = [encode_key(record.key) for record in records]
        values = [encode_value(record.value) for record in records]
        try:
            appended = self.propose(replica, build_batch(values, keys))
        except (NotLeaderForPartitionError, RecordTooLargeError) as error:
            # The state already holds the change: drop it; whoever leads next rebuilds from the log.
            self.logger.warning("group_write_failed", partition=loaded.index, error=str(error))
            self._unload(loaded.index, f"a write failed: {error}")
            return False
        loaded.last_proposed = appended[-1].last_offset
        return True

    def _settle(self, replicas: dict, now_s: float) -> list:
        answers, still = [], []
        for pending in self.pending:
            failed = None
            if any(self.partitions.get(index) is None or self.partitions[index].term != term for index, term, _ in pending.waits):
                failed = ErrorCode.NOT_COORDINATOR, (f"broker {self.broker_id} stopped coordinating the group before "
                                                     "its change committed: find the coordinator again")
            elif _committed(replicas, pending.waits):
                answers.append((pending.peer, pending.cid, pending.response))
                continue
            elif now_s >= pending.deadline_s:
                failed = ErrorCode.REQUEST_TIMED_OUT, (f"the group's change did not commit in time (too few replicas of "
                                                       f"{OFFSETS_TOPIC} up?); retry")
            if failed is None:
                still.append(pending)
            else:
                answers.append((pending.peer, pending.cid, error_response(pending.request, *failed)))
        self.pending = still
        return answers

    # ---- requests ---------------------------------------------------------------------------

    def _route(self, group_id: str, partition_counts: dict):
        """(LoadedPartition, None) where this broker can serve `group_id` now, else (None, (code, message))."""
        why = invalid_group_id(group_id)
        if why:
            return None, (ErrorCode.INVALID_GROUP_ID, why)
        count = partition_counts.get(OFFSETS_TOPIC, 0)
        if not count:
            return None, (ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{OFFSETS_TOPIC} is being created; retry shortly")
        index = offsets_partition_for(group_id, count)
        loaded = self.partitions.get(index)
        if loaded is None:
            return None, (ErrorCode.NOT_COORDINATOR, f"broker {self.broker_id} does not coordinate group {group_id!r} "
                          f"(it does not lead {OFFSETS_TOPIC}-{index}): find the coordinator again")
        if loaded.state is None:
            return None, (ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, f"broker {self.broker_id} is loading the groups of "
                          f"{OFFSETS_TOPIC}-{index}; retry shortly")
        return loaded, None

    def handle(self, peer, cid, request, replicas: dict, partition_counts: dict, now_s: float):
        """The answer now, or None when it waits for its records (or earlier ones) to commit."""
        if request.API_KEY == ApiKey.LIST_GROUPS:
            return self._list_groups()
        group_ids = request.group_ids if request.API_KEY in (ApiKey.DESCRIBE_GROUPS, ApiKey.DELETE_GROUPS) else [request.group_id]
        if not group_ids:
            return _combined(request, [], [])
        outcomes, waits = [], []
        for group_id in group_ids:
            loaded, error = self._route(group_id, partition_counts)
            if error is not None:
                if len(group_ids) == 1:
                    return error_response(request, *error)
                outcomes.append(error)
                continue
            outcome = self._apply(loaded, group_id, request, now_s, partition_counts)
            if outcome.records and not self._write(replicas[(OFFSETS_TOPIC, loaded.index)], loaded, outcome.records):
                return error_response(request, ErrorCode.NOT_COORDINATOR, f"broker {self.broker_id} lost the leadership "
                                      "of the group's partition; find the coordinator again")
            outcomes.append(outcome.response)
            waits.append((loaded.index, loaded.term, loaded.last_proposed))
        response = _combined(request, group_ids, outcomes)
        if _committed(replicas, waits):
            return response
        self.pending.append(PendingAnswer(peer, cid, request, response, waits, now_s + COMMIT_WAIT_S))
        return None

    def _apply(self, loaded: LoadedPartition, group_id: str, request, now_s: float, partition_counts: dict):
        state = loaded.state
        key = request.API_KEY
        if key == ApiKey.CONSUMER_GROUP_HEARTBEAT:
            client = request.client_id or "consumer"
            return state.heartbeat(request, _monotonic_ms(now_s), partition_counts, lambda: f"{client}-{uuid.uuid4().hex[:12]}")
        if key == ApiKey.OFFSET_COMMIT:
            return state.commit(request, int(time.time() * 1000), partition_counts)
        if key == ApiKey.OFFSET_FETCH:
            return Outcome(state.fetch(request))
        if key == ApiKey.DESCRIBE_GROUPS:
            return Outcome(state.describe([group_id]))
        return state.delete([group_id])

    def _list_groups(self):
        groups = []
        for loaded in self.partitions.values():
            if loaded.state is not None:
                groups.extend(loaded.state.list_groups().groups)
        groups.sort(key=lambda g: g["group_id"])
        if self.loading:
            return ListGroupsResponse(int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS),
                                      f"broker {self.broker_id} is still loading some groups; these are the loaded ones", groups)
        return ListGroupsResponse(0, "", groups)


def _combined(request, group_ids: list, outcomes: list):
    """One response of request's type from one outcome per group (describe/delete take several)."""
    if len(outcomes) == 1 and not isinstance(outcomes[0], tuple) and len(group_ids) == 1:
        return outcomes[0]
    entries = []
    for group_id, outcome in zip(group_ids, outcomes):
        if isinstance(outcome, tuple):  # (code, message): this broker cannot serve that group now
            outcome = error_response(type(request)(group_ids=[group_id]), *outcome)
        entries.extend(outcome.groups)
    return (DescribeGroupsResponse if request.API_KEY == ApiKey.DESCRIBE_GROUPS else DeleteGroupsResponse)(entries)


def _committed(replicas: dict, waits: list) -> bool:
    for index, _, offset in waits:
        replica = replicas.get((OFFSETS_TOPIC, index))
        if replica is None or replica.high_watermark <= offset:
            return False
    return True


def _monotonic_ms(now_s: float) -> int:
    return int(now_s * 1000)
