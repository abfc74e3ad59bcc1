"""Request and response types: one frozen dataclass per message, each with its API key, version and schema.

Nested items (a partition inside a Produce request, say) stay plain dicts whose shape the SCHEMA
declares; distlog.protocol.schema checks every field both ways. Raw record batches travel as
separate frames (schema.FRAME), never inside msgpack, so the broker can append them and serve
them without copying or decoding a record.

Conventions shared with Kafka: `acks` is 0, 1 or -1 ("all"); ListOffsets takes the timestamps
EARLIEST_TIMESTAMP (-2) and LATEST_TIMESTAMP (-1); `leader` is None while a partition has none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from distlog.protocol.schema import FRAME, Optional, StrMap

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
ACKS_ALL = -1


class ApiKey(enum.IntEnum):
    API_VERSIONS = 0
    METADATA = 1
    CREATE_TOPICS = 2
    DELETE_TOPICS = 3
    PRODUCE = 4
    FETCH = 5
    LIST_OFFSETS = 6
    METADATA_SYNC = 7  # broker -> controller: "my metadata is at version V; anything newer?"
    SET_FAULT_RULES = 8  # supervisor -> broker: drop frames to/from peers (injected partitions)
    RAFT = 9  # broker -> broker: one loop turn's Raft messages of every group (no reply)
    ALTER_CONFIGS = 10  # clients (to the controller): set or delete topic configs
    CREATE_PARTITIONS = 11  # clients (to the controller): grow a topic to more partitions
    ELECT_LEADERS = 12  # clients (to every broker): hand leadership back to preferred replicas
    REASSIGN_PARTITIONS = 13  # clients (to the controller): move partitions to other brokers
    DECOMMISSION_BROKER = 14  # clients (to the controller): move every replica off a broker
    FIND_COORDINATOR = 15  # clients (to any broker): which broker coordinates consumer group G?
    CONSUMER_GROUP_HEARTBEAT = 16  # members (to the coordinator): join, heartbeat, leave (KIP-848)
    OFFSET_COMMIT = 17  # members (to the coordinator): store consumed positions
    OFFSET_FETCH = 18  # clients (to the coordinator): read committed positions
    LIST_GROUPS = 19  # clients (to every broker): the groups each coordinates
    DESCRIBE_GROUPS = 20  # clients (to the coordinator): state, members and their assignments
    DELETE_GROUPS = 21  # clients (to the coordinator): forget an empty group and its offsets
    ERROR = 255  # a reply to a request that could not be decoded well enough to answer in kind


class Message:
    """Base of every request and response type."""

    API_KEY: ClassVar[ApiKey]
    VERSION: ClassVar[int] = 0
    MIN_VERSION: ClassVar[int] = 0
    SCHEMA: ClassVar[dict]

    def body(self) -> dict:
        return {name: getattr(self, name) for name in self.SCHEMA}


_ERROR_FIELDS = {"error_code": int, "error_message": str}


# ---------------------------------------------------------------------------------- ApiVersions


@dataclass(frozen=True)
class ApiVersionsRequest(Message):
    API_KEY = ApiKey.API_VERSIONS
    SCHEMA = {}


@dataclass(frozen=True)
class ApiVersionsResponse(Message):
    API_KEY = ApiKey.API_VERSIONS
    SCHEMA = {
        **_ERROR_FIELDS,
        "api_versions": [{"api_key": int, "min_version": int, "max_version": int}],
        "broker_id": int,
        "controller_id": Optional(int),
        "cluster_id": str,
    }
    error_code: int
    error_message: str
    api_versions: list
    broker_id: int
    controller_id: int | None
    cluster_id: str


# ------------------------------------------------------------------------------------- Metadata

PARTITION_METADATA = {
    "partition": int,
    "leader": Optional(int),
    "leader_epoch": int,
    "replicas": [int],
    "target_replicas": Optional([int]),  # where a reassignment under way moves the partition
    "in_sync": [int],
    "high_watermark": int,  # -1 where the answering broker does not know it
    "log_end_offset": int,  # the leader's, -1 where the answering broker does not know it
}


@dataclass(frozen=True)
class MetadataRequest(Message):
    API_KEY = ApiKey.METADATA
    SCHEMA = {"topics": Optional([str])}
    topics: list | None = None  # None = every topic


@dataclass(frozen=True)
class MetadataResponse(Message):
    API_KEY = ApiKey.METADATA
    SCHEMA = {
        "brokers": [{"broker_id": int, "address": str}],
        "controller_id": Optional(int),
        "topics": [{**_ERROR_FIELDS, "name": str, "configs": StrMap, "partitions": [PARTITION_METADATA]}],
    }
    brokers: list
    controller_id: int | None
    topics: list


# ------------------------------------------------------------------------- CreateTopics, Delete

_TOPIC_RESULT = {"name": str, **_ERROR_FIELDS}


@dataclass(frozen=True)
class CreateTopicsRequest(Message):
    API_KEY = ApiKey.CREATE_TOPICS
    SCHEMA = {
        "topics": [{"name": str, "partitions": int, "replication_factor": int, "configs": StrMap}],
        "timeout_ms": int,
        "validate_only": bool,
    }
    topics: list
    timeout_ms: int = 10_000
    validate_only: bool = False


@dataclass(frozen=True)
class CreateTopicsResponse(Message):
    API_KEY = ApiKey.CREATE_TOPICS
    SCHEMA = {"topics": [_TOPIC_RESULT]}
    topics: list


@dataclass(frozen=True)
class DeleteTopicsRequest(Message):
    API_KEY = ApiKey.DELETE_TOPICS
    SCHEMA = {"topics": [str], "timeout_ms": int}
    topics: list
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class DeleteTopicsResponse(Message):
    API_KEY = ApiKey.DELETE_TOPICS
    SCHEMA = {"topics": [_TOPIC_RESULT]}
    topics: list


@dataclass(frozen=True)
class AlterConfigsRequest(Message):
    """Incremental, as Kafka's IncrementalAlterConfigs: `set` keys get values, `delete` keys go
    back to the broker default; other keys stay."""

    API_KEY = ApiKey.ALTER_CONFIGS
    SCHEMA = {"topics": [{"name": str, "set": StrMap, "delete": [str]}], "timeout_ms": int}
    topics: list
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class AlterConfigsResponse(Message):
    API_KEY = ApiKey.ALTER_CONFIGS
    SCHEMA = {"topics": [_TOPIC_RESULT]}
    topics: list


@dataclass(frozen=True)
class CreatePartitionsRequest(Message):
    """Grow each topic to `count` partitions in all (Kafka's CreatePartitions: never fewer)."""

    API_KEY = ApiKey.CREATE_PARTITIONS
    SCHEMA = {"topics": [{"name": str, "count": int}], "timeout_ms": int}
    topics: list
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class CreatePartitionsResponse(Message):
    API_KEY = ApiKey.CREATE_PARTITIONS
    SCHEMA = {"topics": [_TOPIC_RESULT]}
    topics: list


# -------------------------------------------------------------------------------------- Produce


@dataclass(frozen=True)
class ProduceRequest(Message):
    API_KEY = ApiKey.PRODUCE
    SCHEMA = {
        "acks": int,
        "timeout_ms": int,
        "partitions": [{"topic": str, "partition": int, "records": FRAME}],
    }
    acks: int
    timeout_ms: int
    partitions: list


@dataclass(frozen=True)
class ProduceResponse(Message):
    API_KEY = ApiKey.PRODUCE
    SCHEMA = {
        "partitions": [
            {"topic": str, "partition": int, **_ERROR_FIELDS, "base_offset": int, "log_start_offset": int}
        ]
    }
    partitions: list


# ---------------------------------------------------------------------------------------- Fetch


@dataclass(frozen=True)
class FetchRequest(Message):
    API_KEY = ApiKey.FETCH
    SCHEMA = {
        "max_wait_ms": int,
        "min_bytes": int,
        "max_bytes": int,
        "partitions": [{"topic": str, "partition": int, "fetch_offset": int, "max_bytes": int}],
    }
    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    partitions: list


@dataclass(frozen=True)
class FetchResponse(Message):
    API_KEY = ApiKey.FETCH
    SCHEMA = {
        "partitions": [
            {
                "topic": str,
                "partition": int,
                **_ERROR_FIELDS,
                "high_watermark": int,
                "log_start_offset": int,
                "records": FRAME,
            }
        ]
    }
    partitions: list


# ---------------------------------------------------------------------------------- ListOffsets


@dataclass(frozen=True)
class ListOffsetsRequest(Message):
    API_KEY = ApiKey.LIST_OFFSETS
    SCHEMA = {"partitions": [{"topic": str, "partition": int, "timestamp_ms": int}]}
    partitions: list


@dataclass(frozen=True)
class ListOffsetsResponse(Message):
    API_KEY = ApiKey.LIST_OFFSETS
    SCHEMA = {
        "partitions": [
            {"topic": str, "partition": int, **_ERROR_FIELDS, "offset": int, "timestamp_ms": int}
        ]
    }
    partitions: list


# ------------------------------------------------------------------------- internal: metadata sync

CLUSTER_METADATA = {
    "version": int,
    "brokers": [{"broker_id": int, "address": str}],
    "topics": [
        {
            "name": str,
            "configs": StrMap,
            "partitions": [{"partition": int, "replicas": [int], "target_replicas": Optional([int])}],
        }
    ],
    "controllers": [int],
    "controller_target": [int],
    "decommissioned": [int],
}


@dataclass(frozen=True)
class MetadataSyncRequest(Message):
    API_KEY = ApiKey.METADATA_SYNC
    SCHEMA = {"broker_id": int, "known_version": int, "address": str,
              "reassigned": [{"topic": str, "partition": int, "replicas": [int]}]}
    broker_id: int
    known_version: int
    address: str = ""  # where the asker listens: registers a broker the metadata does not list yet
    # Groups the asker leads whose committed membership is now their reassignment's target.
    reassigned: list = field(default_factory=list)


@dataclass(frozen=True)
class MetadataSyncResponse(Message):
    API_KEY = ApiKey.METADATA_SYNC
    SCHEMA = {**_ERROR_FIELDS, "metadata": Optional(CLUSTER_METADATA)}
    error_code: int
    error_message: str
    metadata: dict | None  # None when the asker is already up to date


# --------------------------------------------------------------- ReassignPartitions, Decommission


@dataclass(frozen=True)
class ReassignPartitionsRequest(Message):
    """Move each partition to `replicas` (Kafka's AlterPartitionReassignments); the first
    replica becomes the preferred leader. Answered once the target is recorded; the move itself
    follows (Metadata's target_replicas shows it under way, gone once done)."""

    API_KEY = ApiKey.REASSIGN_PARTITIONS
    SCHEMA = {"topics": [{"name": str, "partition": int, "replicas": [int]}], "timeout_ms": int}
    topics: list
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class ReassignPartitionsResponse(Message):
    API_KEY = ApiKey.REASSIGN_PARTITIONS
    SCHEMA = {"topics": [_TOPIC_RESULT]}
    topics: list


@dataclass(frozen=True)
class DecommissionBrokerRequest(Message):
    """Take new replicas off each broker and reassign every replica it holds (the controller
    quorum's included) to the others. Answered once recorded; the moves follow."""

    API_KEY = ApiKey.DECOMMISSION_BROKER
    SCHEMA = {"brokers": [int], "timeout_ms": int}
    brokers: list
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class DecommissionBrokerResponse(Message):
    API_KEY = ApiKey.DECOMMISSION_BROKER
    SCHEMA = {"brokers": [_TOPIC_RESULT]}  # name: "broker N"
    brokers: list


# ------------------------------------------------------------------------------- ElectLeaders


@dataclass(frozen=True)
class ElectLeadersRequest(Message):
    """Kafka's preferred leader election, asked of each broker for the partitions it leads:
    every one whose first replica is alive and caught up hands leadership to it."""

    API_KEY = ApiKey.ELECT_LEADERS
    SCHEMA = {"topics": Optional([str])}
    topics: list | None = None  # None: every topic


@dataclass(frozen=True)
class ElectLeadersResponse(Message):
    API_KEY = ApiKey.ELECT_LEADERS
    SCHEMA = {**_ERROR_FIELDS, "moving": [{"topic": str, "partition": int, "to": int}],
              "not_ready": [{"topic": str, "partition": int, "preferred": int}]}
    error_code: int
    error_message: str
    moving: list  # leadership being handed to the preferred replica
    not_ready: list  # led elsewhere than the preferred replica, which is down or behind


# ------------------------------------------------------------------------------ consumer groups
#
# The shape of Kafka's KIP-848 ("the next generation of the consumer rebalance protocol"): the
# coordinator computes every assignment; a member only heartbeats its epoch and what it owns, and
# is told what to own. `member_epoch` 0 in a heartbeat joins, -1 leaves.

JOIN_EPOCH = 0
LEAVE_EPOCH = -1

_TOPIC_PARTITIONS = {"topic": str, "partitions": [int]}


@dataclass(frozen=True)
class FindCoordinatorRequest(Message):
    API_KEY = ApiKey.FIND_COORDINATOR
    SCHEMA = {"group_id": str}
    group_id: str


@dataclass(frozen=True)
class FindCoordinatorResponse(Message):
    API_KEY = ApiKey.FIND_COORDINATOR
    SCHEMA = {**_ERROR_FIELDS, "coordinator_id": Optional(int), "address": Optional(str)}
    error_code: int
    error_message: str
    coordinator_id: int | None = None
    address: str | None = None


@dataclass(frozen=True)
class ConsumerGroupHeartbeatRequest(Message):
    API_KEY = ApiKey.CONSUMER_GROUP_HEARTBEAT
    SCHEMA = {"group_id": str, "member_id": str, "member_epoch": int, "client_id": str,
              "subscribed_topics": [str], "owned_partitions": [_TOPIC_PARTITIONS],
              "assignor": Optional(str), "session_timeout_ms": int}
    group_id: str
    member_id: str = ""  # "" to join: the coordinator names the member
    member_epoch: int = JOIN_EPOCH
    client_id: str = ""
    subscribed_topics: list = field(default_factory=list)
    owned_partitions: list = field(default_factory=list)  # what the member holds right now
    assignor: str | None = None  # None: the group's (or the coordinator's default)
    session_timeout_ms: int = 10_000


@dataclass(frozen=True)
class ConsumerGroupHeartbeatResponse(Message):
    API_KEY = ApiKey.CONSUMER_GROUP_HEARTBEAT
    SCHEMA = {**_ERROR_FIELDS, "member_id": str, "member_epoch": int, "heartbeat_interval_ms": int,
              "assignment": [_TOPIC_PARTITIONS]}
    error_code: int
    error_message: str
    member_id: str = ""
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: list = field(default_factory=list)  # always the member's whole current assignment


@dataclass(frozen=True)
class OffsetCommitRequest(Message):
    """Store positions (the offset of the next record to read). member_id "" with epoch -1
    commits outside any membership: only accepted while the group has no members."""

    API_KEY = ApiKey.OFFSET_COMMIT
    SCHEMA = {"group_id": str, "member_id": str, "member_epoch": int,
              "partitions": [{"topic": str, "partition": int, "offset": int, "metadata": str}]}
    group_id: str
    member_id: str
    member_epoch: int
    partitions: list


@dataclass(frozen=True)
class OffsetCommitResponse(Message):
    API_KEY = ApiKey.OFFSET_COMMIT
    SCHEMA = {**_ERROR_FIELDS, "partitions": [{"topic": str, "partition": int, **_ERROR_FIELDS}]}
    error_code: int
    error_message: str
    partitions: list = field(default_factory=list)


@dataclass(frozen=True)
class OffsetFetchRequest(Message):
    API_KEY = ApiKey.OFFSET_FETCH
    SCHEMA = {"group_id": str, "partitions": Optional([{"topic": str, "partition": int}])}
    group_id: str
    partitions: list | None = None  # None: every partition the group has committed


@dataclass(frozen=True)
class OffsetFetchResponse(Message):
    API_KEY = ApiKey.OFFSET_FETCH
    SCHEMA = {**_ERROR_FIELDS,
              "partitions": [{"topic": str, "partition": int, "offset": int, "metadata": str}]}
    error_code: int
    error_message: str
    partitions: list = field(default_factory=list)  # offset -1: nothing committed


@dataclass(frozen=True)
class ListGroupsRequest(Message):
    API_KEY = ApiKey.LIST_GROUPS
    SCHEMA = {}


@dataclass(frozen=True)
class ListGroupsResponse(Message):
    API_KEY = ApiKey.LIST_GROUPS
    SCHEMA = {**_ERROR_FIELDS, "groups": [{"group_id": str, "state": str, "members": int}]}
    error_code: int
    error_message: str
    groups: list = field(default_factory=list)


_GROUP_MEMBER = {"member_id": str, "client_id": str, "member_epoch": int,
                 "subscribed_topics": [str], "assignment": [_TOPIC_PARTITIONS]}


@dataclass(frozen=True)
class DescribeGroupsRequest(Message):
    API_KEY = ApiKey.DESCRIBE_GROUPS
    SCHEMA = {"group_ids": [str]}
    group_ids: list


@dataclass(frozen=True)
class DescribeGroupsResponse(Message):
    API_KEY = ApiKey.DESCRIBE_GROUPS
    SCHEMA = {"groups": [{"group_id": str, **_ERROR_FIELDS, "state": str, "group_epoch": int,
                          "assignor": str, "members": [_GROUP_MEMBER]}]}
    groups: list


@dataclass(frozen=True)
class DeleteGroupsRequest(Message):
    API_KEY = ApiKey.DELETE_GROUPS
    SCHEMA = {"group_ids": [str]}
    group_ids: list


@dataclass(frozen=True)
class DeleteGroupsResponse(Message):
    API_KEY = ApiKey.DELETE_GROUPS
    SCHEMA = {"groups": [{"group_id": str, **_ERROR_FIELDS}]}
    groups: list


# -------------------------------------------------------------------- internal: fault injection


@dataclass(frozen=True)
class SetFaultRulesRequest(Message):
    API_KEY = ApiKey.SET_FAULT_RULES
    SCHEMA = {"drop_to": [str], "drop_from": [str]}
    drop_to: list = field(default_factory=list)  # peer names ("broker-2") whose frames we stop sending
    drop_from: list = field(default_factory=list)  # peer names whose frames we stop accepting


@dataclass(frozen=True)
class SetFaultRulesResponse(Message):
    API_KEY = ApiKey.SET_FAULT_RULES
    SCHEMA = {**_ERROR_FIELDS}
    error_code: int
    error_message: str


# ------------------------------------------------------------------------ internal: replication


@dataclass(frozen=True)
class RaftRequest(Message):
    """One broker's Raft messages for another, all groups at once (distlog/replication/wire.py
    defines the body; `entries` are the record batches, as raw frames). Never answered: the
    peer's Raft messages travel back in its own RaftRequests."""

    API_KEY = ApiKey.RAFT
    SCHEMA = {"sender": int, "payload": FRAME, "entries": [FRAME]}
    sender: int
    payload: bytes  # the msgpack body wire.py defines
    entries: list


# ------------------------------------------------------------------------------------- Error


@dataclass(frozen=True)
class ErrorResponse(Message):
    API_KEY = ApiKey.ERROR
    SCHEMA = {**_ERROR_FIELDS, "request_api_key": int}
    error_code: int
    error_message: str
    request_api_key: int = -1


REQUEST_TYPES = {
    cls.API_KEY: cls
    for cls in (
        ApiVersionsRequest,
        MetadataRequest,
        CreateTopicsRequest,
        DeleteTopicsRequest,
        ProduceRequest,
        FetchRequest,
        ListOffsetsRequest,
        MetadataSyncRequest,
        SetFaultRulesRequest,
        RaftRequest,
        AlterConfigsRequest,
        CreatePartitionsRequest,
        ElectLeadersRequest,
        ReassignPartitionsRequest,
        DecommissionBrokerRequest,
        FindCoordinatorRequest,
        ConsumerGroupHeartbeatRequest,
        OffsetCommitRequest,
        OffsetFetchRequest,
        ListGroupsRequest,
        DescribeGroupsRequest,
        DeleteGroupsRequest,
    )
}

RESPONSE_TYPES = {
    cls.API_KEY: cls
    for cls in (
        ApiVersionsResponse,
        MetadataResponse,
        CreateTopicsResponse,
        DeleteTopicsResponse,
        ProduceResponse,
        FetchResponse,
        ListOffsetsResponse,
        MetadataSyncResponse,
        SetFaultRulesResponse,
        AlterConfigsResponse,
        CreatePartitionsResponse,
        ElectLeadersResponse,
        ReassignPartitionsResponse,
        DecommissionBrokerResponse,
        FindCoordinatorResponse,
        ConsumerGroupHeartbeatResponse,
        OffsetCommitResponse,
        OffsetFetchResponse,
        ListGroupsResponse,
        DescribeGroupsResponse,
        DeleteGroupsResponse,
        ErrorResponse,
    )
}
