"""Cluster membership as one broker sees it: its peers, the replicas it hosts, the reassignments
it drives, and the membership facts the active controller writes into the metadata log.

Brokers join and leave through the metadata (metadata.py's module docstring): a broker started
by `cluster add-broker` registers with its first MetadataSync (it sends its address); a
decommissioned broker is *retired* once no replica is left on it, and from then on is nobody's
peer and is listed to no client. The brokers a cluster was made with register through the
controller, which registers the --peers it was started with. A broker's address book is the
metadata's brokers and the --peers it was started with (which let it find the others before any
metadata arrived, and win: the supervisor passes the newest addresses).

Facts only leaders know (a group's committed membership reached its target) travel to the
controller in MetadataSync too; the controller folds them, with registrations, into the next
image it proposes (PendingMembershipFacts). Reports repeat every sync until the image records
them, so a report lost with a controller failover is only late.

Pure: no sockets, no clock.
"""

from __future__ import annotations

from distlog.broker.controller import METADATA_KEY, controller_quorum
from distlog.broker.metadata import ClusterMetadata


def retired(metadata: ClusterMetadata, broker_id: int) -> bool:
    """Decommissioned, and holding nothing any more (no replica, no place in the controller quorum)."""
    if broker_id not in metadata.decommissioned:
        return False
    quorum = [*metadata.controllers, *metadata.controller_target]
    return broker_id not in quorum and not hosted_partitions(metadata, broker_id)


def peer_addresses(metadata: ClusterMetadata, configured_peers: dict) -> dict:
    """broker id -> address of every broker of the cluster that is not retired, this one included."""
    book = {**metadata.brokers, **configured_peers}  # (the supervisor's --peers are the newest addresses)
    return {b: a for b, a in sorted(book.items()) if not retired(metadata, b)}


def controller_voters(metadata: ClusterMetadata, configured_peers: dict) -> tuple:
    """The metadata log's voters as the metadata records them, else the bootstrap quorum."""
    return tuple(metadata.controllers) or controller_quorum(configured_peers)


def hosts_metadata_log(metadata: ClusterMetadata, configured_peers: dict, broker_id: int) -> bool:
    return broker_id in controller_voters(metadata, configured_peers) or broker_id in metadata.controller_target


def hosted_partitions(metadata: ClusterMetadata, broker_id: int) -> dict:
    """(topic, partition) -> TopicMetadata of every replica this broker holds or is to hold."""
    return {(t.name, p): t for t in metadata.topics.values() for p in range(t.partition_count)
            if broker_id in t.hosts(p)}


def reassignment_targets(metadata: ClusterMetadata) -> dict:
    """group key -> target voters of every reassignment under way, the controller quorum's included."""
    targets = {(t.name, p): list(r) for t in metadata.topics.values() for p, r in t.targets.items()}
    if metadata.controller_target:
        targets[METADATA_KEY] = list(metadata.controller_target)
    return targets


class PendingMembershipFacts:
    """On the active controller: registrations and finished reassignments heard of, not yet in
    the metadata; fold() writes them into an image (dropping the ones it already records)."""

    def __init__(self):
        self._registrations: dict = {}  # broker id -> address
        self._completed: dict = {}  # group key -> voters

    def register(self, broker_id: int, address: str) -> None:
        self._registrations[broker_id] = address

    def reassignment_completed(self, key, voters) -> None:
        self._completed[tuple(key)] = list(voters)

    def __bool__(self) -> bool:
        return bool(self._registrations or self._completed)

    def fold(self, image: ClusterMetadata, log) -> ClusterMetadata:
        """`image` with every pending fact applied (the same image when none changes it); a
        registration the metadata refuses (a decommissioned id) is logged and dropped."""
        registrations, self._registrations = self._registrations, {}
        completed, self._completed = self._completed, {}
        for broker_id, address in sorted(registrations.items()):
            if broker_id in image.decommissioned:
                log.warning("registration_refused", peer=broker_id,
                            why="the broker was decommissioned; a new broker needs a new id")
                continue
            image = image.with_broker_registered(broker_id, address)
        for key, voters in completed.items():
            if key == METADATA_KEY:
                image = image.with_controllers_completed(voters)
            else:
                image = image.with_reassignment_completed(key[0], key[1], voters)
        return image
