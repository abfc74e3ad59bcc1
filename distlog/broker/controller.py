"""The controller: the cluster metadata as a replicated log, and the broker that leads it.

Theory of operation
===================

The metadata log. Brokers, topics, partition assignments and configs live in a log of their
own: partition 0 of the internal topic __cluster_metadata, a Raft group over the controller
quorum, the first CONTROLLER_QUORUM_SIZE brokers by id (Kafka's controller.quorum.voters: fixed
when the cluster is made). The broker's ReplicaManager drives it like any partition: the same
ticks, group commit and fsync before any ack or vote, the same heartbeat coalescing. Its
leader is the *active controller*; the others are standbys that hold every committed change.

One record per change, holding the whole metadata image at its version (key b"image", in a
compacted log, so what is kept is the newest image and what came after it). Kafka writes
deltas and takes snapshots; an image of a few thousand partitions is tens of kilobytes, and a
whole image per record means applying is "take the newest", with no replay to get wrong.

Changing metadata (MetadataQuorum, on the active controller). A topic change is computed on
the *head*: the newest image this controller has proposed, or, when nothing is in flight, the
one applied. The new image is proposed as one entry, and the request waits (PendingChanges)
until that entry is committed in the term it was proposed in, this broker has applied it, and
every live broker has it too (or a short deadline passes), so a client can use a topic as
soon as `create` returns. A controller that loses leadership first answers what it holds with
NOT_CONTROLLER (retriable: the change may or may not have been kept). A newly elected
controller takes changes only once its whole log is committed (its leader marker commits the
earlier terms' entries) and applied, so it never builds on a stale image and two images never
share a version.

Applying. Every controller applies committed images from its own log (committed_image());
brokers outside the quorum, and controllers behind, pull the active controller's applied image
with MetadataSync every METADATA_SYNC_INTERVAL_S (those requests also tell the controller which
version each live broker has). Only committed images are ever applied anywhere.

Forwarding (ForwardedRequests). A broker that is not the active controller forwards a topic
change to the one it knows and relays the answer byte for byte, as Kafka brokers forward to
KRaft's controller, so a client may send admin requests to any broker. A forwarded request
whose controller stops being the controller, or goes quiet, is answered NOT_CONTROLLER at once
rather than left to the client's timeout; the client retries.

Everything here is pure: no sockets, no clock of its own (callers pass now_s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Optional

from distlog.broker.metadata import ClusterMetadata
from distlog.log.batch import iter_batches
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.log.records import batch_records
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    AlterConfigsResponse,
    ApiKey,
    CreatePartitionsResponse,
    CreateTopicsResponse,
    DecommissionBrokerResponse,
    DeleteTopicsResponse,
    ReassignPartitionsResponse,
)

METADATA_TOPIC = "__cluster_metadata"
METADATA_KEY = (METADATA_TOPIC, 0)
# Kafka recommends 3 controllers: a majority survives one failure; more only slows commits.
CONTROLLER_QUORUM_SIZE = 3
IMAGE_KEY = b"image"
# The metadata log's own settings: compacted (the newest image is what matters), with room for
# the image of a large cluster in one record.
METADATA_LOG_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(8 * 1024 * 1024),
                       "max.message.bytes": str(64 * 1024 * 1024), "flush.policy": "always"}
_READ_BYTES = 64 * 1024 * 1024
# A live broker gets this long to pick up a committed change before the change is answered anyway.
CHANGE_PROPAGATION_MAX_S = 5.0
# A forwarded request not answered this long after its own timeout is answered here.
FORWARD_GRACE_S = CHANGE_PROPAGATION_MAX_S + 1.0

# The admin requests that change metadata, and the response each answers with.
CHANGE_RESPONSES = {
    ApiKey.CREATE_TOPICS: CreateTopicsResponse,
    ApiKey.DELETE_TOPICS: DeleteTopicsResponse,
    ApiKey.ALTER_CONFIGS: AlterConfigsResponse,
    ApiKey.CREATE_PARTITIONS: CreatePartitionsResponse,
    ApiKey.REASSIGN_PARTITIONS: ReassignPartitionsResponse,
    ApiKey.DECOMMISSION_BROKER: DecommissionBrokerResponse,
}


def controller_quorum(broker_ids) -> tuple:
    """The controller voters of a cluster of these brokers: the lowest ids, at most CONTROLLER_QUORUM_SIZE."""
    return tuple(sorted(broker_ids)[:CONTROLLER_QUORUM_SIZE])


def metadata_log_config(defaults: dict) -> LogConfig:
    return LogConfig.from_dict({**defaults, **METADATA_LOG_CONFIG})


def image_batch(metadata: ClusterMetadata) -> bytes:
    """The record batch that proposes `metadata` as the next image."""
    value = json.dumps(metadata.to_wire(), separators=(",", ":")).encode()
    return build_batch([value], keys=[IMAGE_KEY])


def change_items(request) -> list:
    """The items of a change request, each changed in turn: topics, or brokers (Decommission)."""
    return request.brokers if request.API_KEY == ApiKey.DECOMMISSION_BROKER else request.topics


def item_names(request) -> list:
    """The name each item's result carries: the topic (DeleteTopics lists bare names), or "broker N"."""
    return [f"broker {item}" if isinstance(item, int) else item if isinstance(item, str) else item["name"]
            for item in change_items(request)]


def error_response(request, code: ErrorCode, message: str):
    """The response to a change request that failed for every item in it."""
    results = [{"name": name, "error_code": int(code), "error_message": message} for name in item_names(request)]
    return CHANGE_RESPONSES[request.API_KEY](results)


def fail_response(response, code: ErrorCode, message: str) -> None:
    """Turn every result that had succeeded into this error (the change did not commit)."""
    results = response.brokers if response.API_KEY == ApiKey.DECOMMISSION_BROKER else response.topics
    for result in results:
        if not result["error_code"]:
            result["error_code"], result["error_message"] = int(code), message


@dataclass
class PendingChange:
    """A change request answered once its image is committed, applied and spread (or failed)."""

    peer: bytes
    cid: int
    response: object
    version: int
    term: int
    last_offset: int
    commit_deadline_s: float
    spread_deadline_s: Optional[float] = None  # set once committed


class MetadataQuorum:
    """This broker's replica of the metadata log: what it has applied, and (when it leads) the head."""

    def __init__(self, replica, propose: Callable):
        self.replica = replica  # a PartitionReplica of METADATA_KEY
        self._propose = propose  # (replica, batch bytes) -> [Appended]: the manager's propose
        self._read_from = replica.log_start_offset  # the first offset not yet looked at
        self._head: Optional[ClusterMetadata] = None
        self._head_term: Optional[int] = None
        self.images_seen = 0
        self.pending: list = []

    # ---- applying ------------------------------------------------------------------------

    def committed_image(self) -> Optional[ClusterMetadata]:
        """The newest image committed since the last call, or None."""
        newest = None
        end = self.replica.high_watermark
        self._read_from = max(self._read_from, self.replica.log_start_offset)
        while self._read_from < end:
            view = self.replica.read(self._read_from, _READ_BYTES)
            if not len(view):
                break
            for batch in iter_batches(view):
                self._read_from = batch.last_offset + 1
                if batch.is_control:
                    continue
                records = batch_records(batch)
                if records and records[-1].key == IMAGE_KEY:
                    newest = records[-1].value
        if newest is None:
            return None
        self.images_seen += 1
        return ClusterMetadata.from_wire(json.loads(bytes(newest)))

    # ---- leading -------------------------------------------------------------------------

    @property
    def leads(self) -> bool:
        return self.replica.is_leader

    def head(self, applied: ClusterMetadata) -> Optional[ClusterMetadata]:
        """The image the next change builds on; None while this broker cannot take changes
        (not the leader, or a new leader whose log is not yet all committed and applied)."""
        node = self.replica.node
        if not self.leads:
            self._head = self._head_term = None
            return None
        if self._head_term != node.term:
            if node.commit != node.last_index or self._read_from <= node.commit:
                return None  # earlier terms' entries still committing, or not yet applied
            self._head, self._head_term = applied, node.term
            if self.images_seen == 0 and applied.version > 0:
                # A cluster from before the metadata log: its metadata.json becomes the first image.
                self.propose(applied)
        return self._head

    def propose(self, image: ClusterMetadata):
        """Propose `image` as the next head; (term, last offset) of its entry."""
        (appended,) = self._propose(self.replica, image_batch(image))
        self._head = image
        return appended.term, appended.last_offset

    # ---- waiting on proposals ------------------------------------------------------------

    def wait(self, change: PendingChange) -> None:
        self.pending.append(change)

    def settle(self, applied_version: int, spread: Callable[[int, float], bool], now_s: float) -> list:
        """Changes now answerable, as (peer, cid, response). `spread(version, now_s)` says
        whether every live broker has that version."""
        node = self.replica.node
        done, waiting = [], []
        for change in self.pending:
            if change.spread_deadline_s is None:
                same_entry = node.term_at(change.last_offset) == change.term
                if node.commit >= change.last_offset and same_entry:
                    # Spreading waits within the request's own timeout (and at most this long).
                    change.spread_deadline_s = min(now_s + CHANGE_PROPAGATION_MAX_S, max(change.commit_deadline_s, now_s))
                elif (not same_entry and node.last_index >= change.last_offset) or node.term != change.term \
                        or not self.leads:
                    fail_response(change.response, ErrorCode.NOT_CONTROLLER,
                                  "the controller changed before this change was committed; it may or may "
                                  "not have been kept: retry it (or look with `distlog topic describe`)")
                    done.append(change)
                    continue
                elif now_s >= change.commit_deadline_s:
                    fail_response(change.response, ErrorCode.REQUEST_TIMED_OUT,
                                  "the change was not committed by a majority of the controllers within the "
                                  "request's timeout (are enough controllers up?); retry it")
                    done.append(change)
                    continue
            if change.spread_deadline_s is not None and applied_version >= change.version and (
                    now_s >= change.spread_deadline_s or spread(change.version, now_s)):
                done.append(change)
            else:
                waiting.append(change)
        self.pending = waiting
        return [(c.peer, c.cid, c.response) for c in done]

    def next_deadline_s(self) -> Optional[float]:
        return min((c.spread_deadline_s or c.commit_deadline_s for c in self.pending), default=None)

    def fail_all(self, message: str, code: ErrorCode = ErrorCode.NOT_CONTROLLER) -> list:
        for change in self.pending:
            fail_response(change.response, code, message)
        done, self.pending = self.pending, []
        return [(c.peer, c.cid, c.response) for c in done]

    def fail_all_on_disk(self, broker_id: int, why: str) -> list:
        """Fail the pending changes because this controller's metadata log failed on disk. With
        no other controller to take over, a retry cannot succeed until the disk is fixed: that
        is STORAGE_ERROR. Otherwise NOT_CONTROLLER, which clients retry at the next controller."""
        if len(self.replica.voters) == 1:
            return self.fail_all(metadata_log_failed_message(broker_id, why), ErrorCode.STORAGE_ERROR)
        return self.fail_all(f"the controller's metadata log failed: {why}")


def metadata_log_failed_message(broker_id: int, why: str) -> str:
    return (f"the metadata log of broker {broker_id}, the only controller, failed on disk ({why}); free disk "
            f"space or fix the disk, then restart broker {broker_id} to recover it from what is on disk")


@dataclass
class Forwarded:
    peer: bytes  # the client's identity and request id, for the relayed answer
    cid: int
    request: object
    controller: int
    deadline_s: float


class ForwardedRequests:
    """Change requests this broker forwarded to the controller, by (controller, forwarded cid)."""

    def __init__(self):
        self._by_cid: dict = {}

    def __len__(self) -> int:
        return len(self._by_cid)

    def add(self, controller: int, forwarded_cid: int, forwarded: Forwarded) -> None:
        self._by_cid[(controller, forwarded_cid)] = forwarded

    def take(self, controller: int, forwarded_cid: int) -> Optional[Forwarded]:
        """The forwarded request this reply answers (None: not one of ours, or given up on)."""
        return self._by_cid.pop((controller, forwarded_cid), None)

    def abandon(self, active_controller: Optional[int], now_s: float) -> list:
        """(peer, cid, response) for requests whose controller is no longer the active one, or
        that are past their deadline: answered here, the client retries."""
        out = []
        for key, forwarded in list(self._by_cid.items()):
            if forwarded.controller != active_controller:
                message = (f"broker {forwarded.controller} stopped being the controller (or stopped answering) "
                           "before it answered; the change may or may not have been made: retry it")
            elif now_s >= forwarded.deadline_s:
                message = f"the controller (broker {forwarded.controller}) did not answer in time; retry"
            else:
                continue
            del self._by_cid[key]
            out.append((forwarded.peer, forwarded.cid, error_response(forwarded.request, ErrorCode.NOT_CONTROLLER, message)))
        return out

    def next_deadline_s(self) -> Optional[float]:
        return min((f.deadline_s for f in self._by_cid.values()), default=None)
