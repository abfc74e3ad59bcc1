"""Cluster metadata: which topics exist, their configs, and which brokers hold each partition.

Pure data and pure functions. The controller (for now statically the lowest broker id; the
controller Raft group replaces that) owns the authoritative copy and bumps `version` on every
change; every other broker pulls newer versions with MetadataSync and applies them. Each
broker persists its copy (write temp, fsync, rename) so it can serve after a restart even
while the controller is away.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field

from distlog.durable import write_file_atomically
from distlog.log.config import LogConfig
from distlog.protocol.errors import DistlogError, ErrorCode

TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
MAX_PARTITIONS = 10_000


@dataclass
class TopicMetadata:
    name: str
    configs: dict  # Kafka-style dotted keys, all values strings, as given at creation
    replicas: list  # replicas[p] = broker ids holding partition p; the first is the preferred leader

    @property
    def partition_count(self) -> int:
        return len(self.replicas)


@dataclass
class ClusterMetadata:
    version: int = 0
    brokers: dict = field(default_factory=dict)  # broker id -> address
    topics: dict = field(default_factory=dict)  # name -> TopicMetadata

    # ------------------------------------------------------------------ wire and disk forms

    def to_wire(self) -> dict:
        return {
            "version": self.version,
            "brokers": [{"broker_id": b, "address": a} for b, a in sorted(self.brokers.items())],
            "topics": [
                {
                    "name": t.name,
                    "configs": dict(t.configs),
                    "partitions": [{"partition": p, "replicas": list(r)} for p, r in enumerate(t.replicas)],
                }
                for t in self.topics.values()
            ],
        }

    @classmethod
    def from_wire(cls, wire: dict) -> "ClusterMetadata":
        topics = {}
        for t in wire["topics"]:
            replicas = [list(p["replicas"]) for p in sorted(t["partitions"], key=lambda p: p["partition"])]
            topics[t["name"]] = TopicMetadata(t["name"], dict(t["configs"]), replicas)
        brokers = {b["broker_id"]: b["address"] for b in wire["brokers"]}
        return cls(wire["version"], brokers, topics)

    def save(self, path: str) -> None:
        """Persist atomically: a crash leaves either the old file or the new one, never half of one."""
        write_file_atomically(path, json.dumps(self.to_wire(), indent=1).encode())

    @classmethod
    def load(cls, path: str) -> "ClusterMetadata | None":
        try:
            with open(path) as f:
                return cls.from_wire(json.load(f))
        except FileNotFoundError:
            return None

    # --------------------------------------------------------------------------- changes

    def with_topic_created(self, name: str, partitions: int, replication_factor: int, configs: dict) -> "ClusterMetadata":
        """A new version with the topic added; DistlogError (with the right code) when the request is invalid."""
        validate_topic_request(name, partitions, replication_factor, configs, live_broker_count=len(self.brokers))
        if name in self.topics:
            raise DistlogError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{name}' already exists")
        topics = dict(self.topics)
        topics[name] = TopicMetadata(name, dict(configs), place_replicas(name, partitions, replication_factor, sorted(self.brokers)))
        return ClusterMetadata(self.version + 1, dict(self.brokers), topics)

    def with_configs_altered(self, name: str, set_configs: dict, delete: list) -> "ClusterMetadata":
        """A new version with the topic's configs changed (`delete`d keys fall back to defaults)."""
        topic = self._existing(name)
        configs = {k: v for k, v in topic.configs.items() if k not in delete}
        configs.update(set_configs)
        try:
            LogConfig.from_dict(configs)
        except ValueError as exc:
            raise DistlogError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        topics = dict(self.topics)
        topics[name] = TopicMetadata(name, configs, [list(r) for r in topic.replicas])
        return ClusterMetadata(self.version + 1, dict(self.brokers), topics)

    def with_partitions_added(self, name: str, count: int) -> "ClusterMetadata":
        """A new version with the topic grown to `count` partitions; the new ones are placed as
        creation would have placed them, with the topic's replication factor."""
        topic = self._existing(name)
        if count <= topic.partition_count:
            raise DistlogError(ErrorCode.INVALID_PARTITIONS,
                               f"topic '{name}' has {topic.partition_count} partitions; a topic only grows "
                               f"(ask for more than {topic.partition_count})")
        if count > MAX_PARTITIONS:
            raise DistlogError(ErrorCode.INVALID_PARTITIONS, f"partitions must be 1..{MAX_PARTITIONS}, got {count}")
        factor = len(topic.replicas[0])
        placed = place_replicas(name, count, factor, sorted(self.brokers))
        topics = dict(self.topics)
        topics[name] = TopicMetadata(name, dict(topic.configs),
                                     [list(r) for r in topic.replicas] + placed[topic.partition_count:])
        return ClusterMetadata(self.version + 1, dict(self.brokers), topics)

    def _existing(self, name: str) -> TopicMetadata:
        topic = self.topics.get(name)
        if topic is None:
            raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                               f"topic '{name}' does not exist (create it with `distlog topic create {name}`)")
        return topic

    def with_topic_deleted(self, name: str) -> "ClusterMetadata":
        if name not in self.topics:
            raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{name}' does not exist")
        topics = {n: t for n, t in self.topics.items() if n != name}
        return ClusterMetadata(self.version + 1, dict(self.brokers), topics)


def validate_topic_request(name: str, partitions: int, replication_factor: int, configs: dict, live_broker_count: int) -> None:
    if not TOPIC_NAME.match(name) or name in (".", ".."):
        raise DistlogError(ErrorCode.INVALID_TOPIC, f"invalid topic name {name!r}")
    if not 1 <= partitions <= MAX_PARTITIONS:
        raise DistlogError(ErrorCode.INVALID_PARTITIONS, f"partitions must be 1..{MAX_PARTITIONS}, got {partitions}")
    if not 1 <= replication_factor <= live_broker_count:
        raise DistlogError(
            ErrorCode.INVALID_REPLICATION_FACTOR,
            f"replication factor {replication_factor} needs 1..{live_broker_count} (the number of brokers)",
        )
    try:
        LogConfig.from_dict(configs)
    except ValueError as exc:
        raise DistlogError(ErrorCode.INVALID_CONFIG, str(exc)) from None


def place_replicas(topic: str, partitions: int, replication_factor: int, broker_ids: list) -> list:
    """Round-robin placement from a per-topic starting broker, so leaders of many topics spread out."""
    n = len(broker_ids)
    start = zlib.crc32(topic.encode()) % n
    return [[broker_ids[(start + p + i) % n] for i in range(replication_factor)] for p in range(partitions)]
