"""Named error codes: what each means on the wire, whether a client may retry, and what to do next.

Every error a broker returns travels as a small integer plus a message. The integer is for
programs (retry or not, refresh metadata or not); the message is for the person reading a log
or a CLI error, so it says what happened and what to do about it.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Error codes on the wire. Numbers never change once released; add new ones at the end."""

    NONE = 0
    UNKNOWN_SERVER_ERROR = 1
    OFFSET_OUT_OF_RANGE = 2
    CORRUPT_MESSAGE = 3
    UNKNOWN_TOPIC_OR_PARTITION = 4
    NOT_LEADER = 5
    REQUEST_TIMED_OUT = 6
    MESSAGE_TOO_LARGE = 7
    UNSUPPORTED_VERSION = 8
    INVALID_REQUEST = 9
    TOPIC_ALREADY_EXISTS = 10
    INVALID_PARTITIONS = 11
    INVALID_REPLICATION_FACTOR = 12
    INVALID_CONFIG = 13
    NOT_ENOUGH_REPLICAS = 14
    BROKER_NOT_AVAILABLE = 15
    NOT_CONTROLLER = 16
    INVALID_TOPIC = 17
    STORAGE_ERROR = 18
    UNKNOWN_API = 19
    OUT_OF_ORDER_SEQUENCE = 20
    DUPLICATE_SEQUENCE = 21
    COORDINATOR_NOT_AVAILABLE = 22
    NOT_COORDINATOR = 23
    COORDINATOR_LOAD_IN_PROGRESS = 24
    UNKNOWN_MEMBER_ID = 25
    FENCED_MEMBER_EPOCH = 26
    STALE_MEMBER_EPOCH = 27
    GROUP_ID_NOT_FOUND = 28
    NON_EMPTY_GROUP = 29
    INVALID_GROUP_ID = 30
    REASSIGNMENT_IN_PROGRESS = 31
    THROTTLING = 32


# Retriable errors are the ones a later attempt can succeed at without the user changing anything:
# leadership moved, metadata was stale, a broker was briefly away, the disk hiccupped.
RETRIABLE = frozenset(
    {
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,  # metadata may not have reached this broker yet
        ErrorCode.NOT_LEADER,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.BROKER_NOT_AVAILABLE,
        ErrorCode.NOT_CONTROLLER,
        ErrorCode.CORRUPT_MESSAGE,  # the bytes were damaged in flight; the client still has good ones
        ErrorCode.COORDINATOR_NOT_AVAILABLE,  # __consumer_offsets is being created or has no leader
        ErrorCode.NOT_COORDINATOR,  # the group's partition moved; find the coordinator again
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,  # a new coordinator is rebuilding its groups
        ErrorCode.THROTTLING,  # the broker is at a limit of what it holds for clients; it did nothing
    }
)

HINTS = {
    ErrorCode.UNKNOWN_SERVER_ERROR: "the broker hit an unexpected error; its log (stderr) has the details",
    ErrorCode.OFFSET_OUT_OF_RANGE: "seek to an offset inside the partition's range (seek_to_beginning / seek_to_end)",
    ErrorCode.CORRUPT_MESSAGE: "the batch failed its CRC check; the producer will resend it",
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: "check the name with `distlog topic list`, or create it with `distlog topic create`",
    ErrorCode.NOT_LEADER: "refresh metadata and send to the partition's current leader",
    ErrorCode.REQUEST_TIMED_OUT: "the broker did not finish in time; retry, or raise the timeout",
    ErrorCode.MESSAGE_TOO_LARGE: "send smaller records or batches, or raise the topic's max.message.bytes",
    ErrorCode.UNSUPPORTED_VERSION: "upgrade the client or the broker so their API versions overlap",
    ErrorCode.INVALID_REQUEST: "the broker refused the request as invalid; the message says what to change",
    ErrorCode.TOPIC_ALREADY_EXISTS: "pick another name, or delete the topic first with `distlog topic delete`",
    ErrorCode.INVALID_PARTITIONS: "the partition count must be a positive integer",
    ErrorCode.INVALID_REPLICATION_FACTOR: "the replication factor must be between 1 and the number of brokers",
    ErrorCode.INVALID_CONFIG: "fix the named config key; `distlog topic create --help` lists them",
    ErrorCode.NOT_ENOUGH_REPLICAS: "too few replicas are in sync; wait for brokers to come back",
    ErrorCode.BROKER_NOT_AVAILABLE: "the broker is down or unreachable; check `distlog cluster status`",
    ErrorCode.NOT_CONTROLLER: "the cluster is electing a controller (or too few controllers are up); retry shortly",
    ErrorCode.INVALID_TOPIC: "topic names are 1-249 characters of [a-zA-Z0-9._-], not '.' or '..'",
    ErrorCode.STORAGE_ERROR: "the broker could not write to disk (full or failing?); check its log",
    ErrorCode.UNKNOWN_API: "the broker does not know this request type; upgrade the broker",
    ErrorCode.OUT_OF_ORDER_SEQUENCE: "an earlier batch of this idempotent producer has not arrived; the "
                                     "producer resends in order",
    ErrorCode.DUPLICATE_SEQUENCE: "this idempotent producer's batch was written before; its records are stored "
                                  "(the producer counts it as delivered, offset unknown)",
    ErrorCode.COORDINATOR_NOT_AVAILABLE: "the group coordinator is starting or moving; retry shortly",
    ErrorCode.NOT_COORDINATOR: "this broker no longer coordinates the group; find the coordinator again",
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS: "the coordinator is loading the group's state; retry shortly",
    ErrorCode.UNKNOWN_MEMBER_ID: "the group no longer knows this member (its session expired?); "
                                 "it rejoins (a Consumer does so by itself)",
    ErrorCode.FENCED_MEMBER_EPOCH: "this member's epoch is out of date (a zombie?); drop its partitions and rejoin",
    ErrorCode.STALE_MEMBER_EPOCH: "the commit carried an old member epoch; heartbeat, then commit again",
    ErrorCode.GROUP_ID_NOT_FOUND: "no such group; check the name with `distlog group list`",
    ErrorCode.NON_EMPTY_GROUP: "the group still has members; stop its consumers first",
    ErrorCode.INVALID_GROUP_ID: "group ids are 1-249 printable characters",
    ErrorCode.REASSIGNMENT_IN_PROGRESS: "wait until the move under way is done (`distlog topic describe` shows "
                                        "target replicas until then), then move it again",
    ErrorCode.THROTTLING: "the broker holds as much as it may for its clients (answers waiting, replies unread) "
                          "and did nothing with this request; the client backs off and retries",
}


def is_retriable(code: int) -> bool:
    """Whether a client may retry a request that failed with `code` without changing it."""
    return code in RETRIABLE


class DistlogError(Exception):
    """An error reported by a broker (or by the client on its behalf), carrying its code."""

    def __init__(self, code: int, message: str = ""):
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message
        super().__init__(self.describe())

    @property
    def retriable(self) -> bool:
        return is_retriable(self.code)

    def describe(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else f"ERROR_{self.code}"
        text = f"{name}: {self.message}" if self.message else name
        hint = HINTS.get(self.code)
        # A message that already ends in its own parenthesised advice gets no generic hint: the
        # two read as contradicting (or repeating) each other.
        if not hint or hint in text or self.message.rstrip().endswith(")"):
            return text
        return f"{text} ({hint})"


class ProtocolError(DistlogError):
    """A frame that does not decode: malformed, hostile, or from an incompatible version."""

    def __init__(self, message: str, code: int = ErrorCode.INVALID_REQUEST):
        super().__init__(code, message)
