"""Cluster metadata: the brokers, which topics exist, their configs, and which brokers hold each partition.

Pure data and pure functions. The active controller (controller.py) owns the authoritative copy,
in the metadata log, and bumps `version` on every change; every other broker pulls newer
versions with MetadataSync and applies them. Each broker persists its copy (write temp, fsync,
rename) so it can serve after a restart even while the controller is away.

Membership. `brokers` holds every registered broker (the ones the cluster was made with, and
any `cluster add-broker` started, registered by its first MetadataSync). A decommissioned
broker is listed in `decommissioned`: no new replica is placed on it, every replica it holds is
moved off, and it never registers again.

Reassignment. A partition's `replicas` are the brokers its Raft group is made of (the first is
the preferred leader); a reassignment records `targets[p]`, the replicas it is to have. Every
broker in either list hosts a replica; the partition's leader walks the group from one to the
other by single-server membership changes (replication/reassignment.py), and once the group's
committed membership is the target, the controller makes it the partition's replicas and drops
the target. The metadata log's own group (the controller quorum) is reassigned the same way:
`controllers`, and `controller_target` while it moves.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field, replace

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
    targets: dict = field(default_factory=dict)  # p -> the replicas a reassignment moves p to

    @property
    def partition_count(self) -> int:
        return len(self.replicas)

    def hosts(self, partition: int) -> list:
        """Every broker that holds (or is to hold) a replica of the partition: its replicas,
        then any a reassignment adds."""
        current = self.replicas[partition]
        return current + [b for b in self.targets.get(partition, ()) if b not in current]

    def copy(self, **changes) -> "TopicMetadata":
        fields = {"name": self.name, "configs": dict(self.configs), "replicas": [list(r) for r in self.replicas],
                  "targets": {p: list(r) for p, r in self.targets.items()}}
        return TopicMetadata(**{**fields, **changes})


@dataclass
class ClusterMetadata:
    version: int = 0
    brokers: dict = field(default_factory=dict)  # broker id -> address
    topics: dict = field(default_factory=dict)  # name -> TopicMetadata
    # The voters of the metadata log (empty: not recorded yet, the bootstrap quorum of
    # controller.controller_quorum), and the ones a reassignment moves them to.
    controllers: list = field(default_factory=list)
    controller_target: list = field(default_factory=list)
    decommissioned: list = field(default_factory=list)  # broker ids, never to hold a replica again

    @property
    def active_brokers(self) -> list:
        """Registered brokers that may hold replicas (not decommissioned), by id."""
        return sorted(b for b in self.brokers if b not in self.decommissioned)

    def _next(self, **changes) -> "ClusterMetadata":
        """The next version, with `changes`; everything else copied (images are never shared)."""
        copied = replace(self, version=self.version + 1, brokers=dict(self.brokers),
                         topics={n: t.copy() for n, t in self.topics.items()}, controllers=list(self.controllers),
                         controller_target=list(self.controller_target), decommissioned=list(self.decommissioned))
        return replace(copied, **changes)

    # ------------------------------------------------------------------ wire and disk forms

    def to_wire(self) -> dict:
        return {
            "version": self.version,
            "brokers": [{"broker_id": b, "address": a} for b, a in sorted(self.brokers.items())],
            "topics": [
                {
                    "name": t.name,
                    "configs": dict(t.configs),
                    "partitions": [{"partition": p, "replicas": list(r), "target_replicas": t.targets.get(p)}
                                   for p, r in enumerate(t.replicas)],
                }
                for t in self.topics.values()
            ],
            "controllers": list(self.controllers),
            "controller_target": list(self.controller_target),
            "decommissioned": list(self.decommissioned),
        }

    @classmethod
    def from_wire(cls, wire: dict) -> "ClusterMetadata":
        topics = {}
        for t in wire["topics"]:
            partitions = sorted(t["partitions"], key=lambda p: p["partition"])
            replicas = [list(p["replicas"]) for p in partitions]
            # (.get: images written before reassignment existed have none of these fields.)
            targets = {p["partition"]: list(p["target_replicas"]) for p in partitions if p.get("target_replicas")}
            topics[t["name"]] = TopicMetadata(t["name"], dict(t["configs"]), replicas, targets)
        brokers = {b["broker_id"]: b["address"] for b in wire["brokers"]}
        return cls(wire["version"], brokers, topics, list(wire.get("controllers") or []),
                   list(wire.get("controller_target") or []), list(wire.get("decommissioned") or []))

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
        validate_topic_request(name, partitions, replication_factor, configs, live_broker_count=len(self.active_brokers))
        if name in self.topics:
            raise DistlogError(ErrorCode.TOPIC_ALREADY_EXISTS, f"topic '{name}' already exists")
        image = self._next()
        image.topics[name] = TopicMetadata(name, dict(configs), place_replicas(name, partitions, replication_factor, self.active_brokers))
        return image

    def with_configs_altered(self, name: str, set_configs: dict, delete: list) -> "ClusterMetadata":
        """A new version with the topic's configs changed (`delete`d keys fall back to defaults)."""
        topic = self._existing(name)
        configs = {k: v for k, v in topic.configs.items() if k not in delete}
        configs.update(set_configs)
        try:
            LogConfig.from_dict(configs)
        except ValueError as exc:
            raise DistlogError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        image = self._next()
        image.topics[name] = topic.copy(configs=configs)
        return image

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
        brokers = self.active_brokers
        if factor > len(brokers):
            raise DistlogError(ErrorCode.INVALID_REPLICATION_FACTOR,
                               f"topic '{name}' has replication factor {factor} but only {len(brokers)} brokers can take replicas")
        placed = place_replicas(name, count, factor, brokers)
        image = self._next()
        image.topics[name].replicas.extend(placed[topic.partition_count:])
        return image

    def _existing(self, name: str) -> TopicMetadata:
        topic = self.topics.get(name)
        if topic is None:
            raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                               f"topic '{name}' does not exist (create it with `distlog topic create {name}`)")
        return topic

    def with_topic_deleted(self, name: str) -> "ClusterMetadata":
        if name not in self.topics:
            raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{name}' does not exist")
        image = self._next()
        del image.topics[name]
        return image

    # ------------------------------------------------------------------- brokers and replicas

    def with_broker_registered(self, broker_id: int, address: str) -> "ClusterMetadata":
        """A new version listing the broker at `address`; self when it is listed there already."""
        if broker_id in self.decommissioned:
            raise DistlogError(ErrorCode.INVALID_REQUEST,
                               f"broker {broker_id} was decommissioned; a new broker needs a new id")
        if self.brokers.get(broker_id) == address:
            return self
        image = self._next()
        image.brokers[broker_id] = address
        return image

    def with_reassignment(self, name: str, partition: int, replicas: list) -> "ClusterMetadata":
        """A new version in which the partition is to move to `replicas` (the first the
        preferred leader); self when it has those replicas already."""
        topic = self._existing(name)
        if not 0 <= partition < topic.partition_count:
            raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                               f"topic '{name}' has partitions 0..{topic.partition_count - 1}, not {partition}")
        self._check_replica_list(replicas)
        if partition in topic.targets:
            if list(replicas) == topic.targets[partition]:
                return self  # asked again (a retry after NOT_CONTROLLER, say): under way already
            # Changing a move half-way would take brokers out of the hosting set while the
            # group may still count them as voters; one move at a time per partition.
            raise DistlogError(ErrorCode.REASSIGNMENT_IN_PROGRESS,
                               f"{name}/{partition} is already moving to {topic.targets[partition]}")
        if list(replicas) == topic.replicas[partition]:
            return self
        image = self._next()
        image.topics[name].targets[partition] = list(replicas)
        return image

    def with_controllers_reassigned(self, controllers: list, bootstrap_controllers: list) -> "ClusterMetadata":
        """A new version in which the controller quorum (`controllers`, else the bootstrap
        quorum when none is recorded yet) is to move to `controllers`."""
        self._check_replica_list(controllers)
        if self.controller_target:
            raise DistlogError(ErrorCode.INVALID_REQUEST, f"the controller quorum is already moving to "
                               f"{self.controller_target}; wait until that is done")
        current = self.controllers or list(bootstrap_controllers)
        if list(controllers) == current:
            return self
        return self._next(controllers=current, controller_target=list(controllers))

    def _check_replica_list(self, replicas: list) -> None:
        if not replicas:
            raise DistlogError(ErrorCode.INVALID_REPLICATION_FACTOR, "a partition needs at least one replica")
        if len(set(replicas)) != len(replicas):
            raise DistlogError(ErrorCode.INVALID_REQUEST, f"replicas {list(replicas)} name a broker twice")
        unknown = [b for b in replicas if b not in self.active_brokers]
        if unknown:
            raise DistlogError(ErrorCode.INVALID_REQUEST,
                               f"brokers {unknown} cannot take replicas (they are not registered, or were "
                               f"decommissioned); brokers that can: {self.active_brokers}")

    def with_reassignment_completed(self, name: str, partition: int, replicas: list) -> "ClusterMetadata":
        """The partition's group now is `replicas` (its leader reported the membership
        committed): make them its replicas. self when that reassignment is not pending (a
        report repeated, or for a reassignment since changed)."""
        topic = self.topics.get(name)
        target = topic.targets.get(partition) if topic is not None else None
        if target is None or sorted(target) != sorted(replicas):
            return self
        image = self._next()
        moved = image.topics[name]
        moved.replicas[partition] = list(target)  # in the target's order: its first is the preferred leader
        del moved.targets[partition]
        return image

    def with_controllers_completed(self, controllers: list) -> "ClusterMetadata":
        if not self.controller_target or sorted(self.controller_target) != sorted(controllers):
            return self
        return self._next(controllers=list(self.controller_target), controller_target=[])

    def with_broker_decommissioned(self, broker_id: int, bootstrap_controllers: list) -> "ClusterMetadata":
        """A new version in which broker_id takes no new replicas and every replica it holds
        (the controller quorum's included) is moved to the active broker holding the fewest,
        each partition keeping its replication factor and its other replicas' order."""
        if broker_id in self.decommissioned:
            return self  # asked again (a retry after NOT_CONTROLLER, say): under way or done already
        if broker_id not in self.brokers:
            raise DistlogError(ErrorCode.INVALID_REQUEST,
                               f"broker {broker_id} is not a broker of this cluster; brokers: {self.active_brokers}")
        remaining = [b for b in self.active_brokers if b != broker_id]
        image = self._next(decommissioned=[*self.decommissioned, broker_id])
        load = {b: 0 for b in remaining}
        for topic in image.topics.values():
            for p in range(topic.partition_count):
                for b in topic.targets.get(p, topic.replicas[p]):
                    if b in load:
                        load[b] += 1

        def moved_off(replicas: list) -> list:
            if broker_id not in replicas:
                return replicas
            spare = sorted((b for b in remaining if b not in replicas), key=lambda b: (load[b], b))
            if not spare:
                if len(replicas) == 1:
                    raise DistlogError(ErrorCode.INVALID_REQUEST,
                                       f"broker {broker_id} holds the only replica of a partition and no other broker "
                                       "can take it: add a broker first (`distlog cluster add-broker`)")
                return [b for b in replicas if b != broker_id]  # every other broker has it already
            load[spare[0]] += 1
            return [spare[0] if b == broker_id else b for b in replicas]

        for topic in image.topics.values():
            for p in range(topic.partition_count):
                wanted = moved_off(topic.targets.get(p, topic.replicas[p]))
                if wanted != topic.replicas[p]:
                    topic.targets[p] = wanted
        controllers = moved_off(self.controllers or list(bootstrap_controllers))
        if controllers != (self.controllers or list(bootstrap_controllers)):
            image.controllers = image.controllers or list(bootstrap_controllers)
            image.controller_target = controllers
        return image


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
