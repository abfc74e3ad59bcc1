"""The records a group coordinator keeps in `__consumer_offsets`, and their codec.

Two kinds, each keyed so that log compaction keeps exactly the latest of each:

  offset commit   key [1, group, topic, partition]  value {"offset", "metadata", "commit_ms"}
  group state     key [2, group]                    value the whole group (GroupSnapshot.to_value)

A tombstone (null value) deletes its key: a deleted group, or an offset it no longer has. Both
key and value are msgpack; the key is a list of plain scalars, so the same key always encodes to
the same bytes (compaction compares bytes).

A group's state is written whole on every change instead of as per-member deltas (Kafka splits
it into member, target and assignment records): one record is always self-consistent, a group
is a handful of members, and rebuilding is "the last record wins".
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack

OFFSET_COMMIT = 1
GROUP_STATE = 2


class OffsetKey(NamedTuple):
    group_id: str
    topic: str
    partition: int


class GroupKey(NamedTuple):
    group_id: str


class CommittedOffset(NamedTuple):
    offset: int
    metadata: str
    commit_ms: int


class CoordinatorRecord(NamedTuple):
    """A decoded record; value None is a tombstone."""

    key: OffsetKey | GroupKey
    value: CommittedOffset | dict | None


class UnknownRecordError(ValueError):
    """A record this version does not understand (a newer broker's kind, or damage)."""


def encode_key(key: OffsetKey | GroupKey) -> bytes:
    if isinstance(key, OffsetKey):
        return msgpack.packb([OFFSET_COMMIT, key.group_id, key.topic, key.partition])
    return msgpack.packb([GROUP_STATE, key.group_id])


def encode_value(value: CommittedOffset | dict | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, CommittedOffset):
        return msgpack.packb({"offset": value.offset, "metadata": value.metadata, "commit_ms": value.commit_ms})
    return msgpack.packb(value)


def decode(key: bytes | None, value: bytes | None) -> CoordinatorRecord:
    """Raises UnknownRecordError for anything but the two kinds above."""
    try:
        fields = msgpack.unpackb(key) if key is not None else None
        body = msgpack.unpackb(value) if value is not None else None
    except (ValueError, msgpack.UnpackException) as error:
        raise UnknownRecordError(f"undecodable record: {error}") from None
    if not isinstance(fields, list) or not fields:
        raise UnknownRecordError(f"a record key must be a list, got {fields!r}")
    kind = fields[0]
    if kind == OFFSET_COMMIT and len(fields) == 4:
        parsed = OffsetKey(*fields[1:])
        if body is None:
            return CoordinatorRecord(parsed, None)
        try:
            return CoordinatorRecord(parsed, CommittedOffset(int(body["offset"]), str(body["metadata"]), int(body["commit_ms"])))
        except (KeyError, TypeError, ValueError) as error:
            raise UnknownRecordError(f"bad offset commit value {body!r}: {error}") from None
    if kind == GROUP_STATE and len(fields) == 2:
        if body is not None and not isinstance(body, dict):
            raise UnknownRecordError(f"bad group state value {body!r}")
        return CoordinatorRecord(GroupKey(fields[1]), body)
    raise UnknownRecordError(f"unknown record kind {kind!r} (key {fields!r})")
