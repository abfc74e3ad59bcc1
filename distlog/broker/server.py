"""The broker process: one event loop serving produce, fetch, metadata and admin requests over ZeroMQ.

Theory of operation
-------------------
One thread, one loop. Each iteration:

  1. sleep in zmq poll until a request arrives or the earliest deadline (a Raft tick, a parked
     fetch or produce, a pending topic creation, the next metadata sync or housekeeping run);
  2. drain every request that is waiting and handle it: a produce becomes Raft proposals of the
     partitions this broker leads, a peer's RaftRequest is stepped into its groups, replies go
     to the outbox (not yet to the socket);
  3. the ReplicaManager (distlog/replication/manager.py) ticks the Raft groups and handles their
     Ready: entries are written, fsynced once per group per turn (group commit across every
     partition), and only then are votes and acks sent to peers;
  4. produces whose acks condition now holds (written and synced for acks=1, committed by a
     majority for acks=all; distlog/replication/acks.py) are answered; then the outbox is sent.
     No acknowledgement leaves before the fsync that makes it true;
  5. wake parked fetches whose partitions' high watermark moved.

Every partition is a Raft group over its replica brokers (a single-voter group at RF=1); the
Raft leader is the partition leader, and this broker answers NOT_LEADER, naming the leader it
knows, for a partition it does not lead. On SIGTERM the broker first hands the leadership of
its replicated partitions to caught-up followers (up to SHUTDOWN_HANDOFF_MAX_S), so a planned
restart fails no write.

Cluster metadata is a Raft log of its own on the controller quorum (the first three brokers),
and its leader is the controller (distlog/broker/controller.py): topic changes are proposed to
it, from any broker (the others forward them), and answered once committed and spread to the
live brokers, so a client can produce right after `topic create` returns. Every broker applies
committed metadata (controllers from their own log; every broker also pulls the controller's
image every METADATA_SYNC_INTERVAL_S) and opens or deletes its partition logs to match.

A request that does not decode gets an ErrorResponse and is counted; a handler that raises
gets UNKNOWN_SERVER_ERROR and is logged with its traceback; neither stops the loop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field

import zmq

from distlog import __version__
from distlog.broker.backpressure import Backpressure, Limits
from distlog.broker.controller import (
    CHANGE_RESPONSES,
    FORWARD_GRACE_S,
    METADATA_KEY,
    Forwarded,
    ForwardedRequests,
    MetadataQuorum,
    PendingChange,
    change_items,
    controller_quorum,
    error_response,
    item_names,
    metadata_log_config,
    metadata_log_failed_message,
)
from distlog.broker.data_dir_lock import lock_data_dir
from distlog.broker.delayed import FetchPurgatory, ParkedFetch
from distlog.broker.groups.coordinator import (
    OFFSETS_TOPIC,
    GroupCoordinator,
    PartitionCounts,
    find_coordinator,
    offsets_topic_request,
)
from distlog.broker.logs import BrokerLogger
from distlog.broker.membership import (
    PendingMembershipFacts,
    controller_voters,
    hosted_partitions,
    hosts_metadata_log,
    peer_addresses,
    reassignment_targets,
)
from distlog.broker.metadata import ClusterMetadata
from distlog.broker.metrics import BrokerMetrics, take_state
from distlog.consensus.hard_state_store import HardStateStore
from distlog.durable import make_directory_durably
from distlog.log.batch import CorruptBatchError
from distlog.log.config import LogConfig
from distlog.log.errors import CorruptDataError, LogError, OffsetOutOfRangeError, RecordTooLargeError
from distlog.log.partition_log import PartitionLog
from distlog.protocol.codec import decode_request, decode_response, encode, peek_api_key
from distlog.protocol.errors import DistlogError, ErrorCode, ProtocolError
from distlog.protocol.messages import (
    ACKS_ALL,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    REQUEST_TYPES,
    ApiKey,
    ApiVersionsResponse,
    ElectLeadersResponse,
    ErrorResponse,
    FetchResponse,
    ListOffsetsResponse,
    MetadataResponse,
    MetadataSyncRequest,
    MetadataSyncResponse,
    ProduceResponse,
    RaftRequest,
    SetFaultRulesResponse,
)
from distlog.replication.acks import PendingProduce, ProduceWaiters, WaitingPartition
from distlog.replication.manager import ReplicaManager
from distlog.replication.producer_state import DuplicateSequenceError, ProducerBatchInfo, SequenceError
from distlog.replication.replica import ControlBatchRefusedError, NotLeaderForPartitionError, PartitionReplica
from distlog.replication.wire import RaftWireError, decode_frame
from distlog.transports.faults import FaultRules
from distlog.transports.shm_transport import ShmRouterServer
from distlog.transports.zmq_transport import DealerConnection, TransportError

METADATA_SYNC_INTERVAL_S = 0.1
METADATA_SYNC_TIMEOUT_S = 1.0
# A peer that has synced within this window counts as live when a topic creation waits for it.
PEER_LIVE_WINDOW_S = 1.0
HOUSEKEEPING_INTERVAL_S = 5.0
# The closed segments' bytes crc-checked per housekeeping turn (PartitionLog.scrub), shared by
# every partition: about 10 ms of a core, so a log of 10 GiB is scrubbed in under 15 minutes.
SCRUB_BYTES_PER_TURN = 64 * 1024 * 1024
# How long a stopping broker keeps serving while it hands its partitions' leadership over.
SHUTDOWN_HANDOFF_MAX_S = 3.0
# How often, at most, the loop wakes when nothing happens; also bounds how long SIGTERM waits.
IDLE_POLL_MS = 200
# Requests handled per iteration before flushing and replying, so a flood cannot starve acks.
MAX_REQUESTS_PER_ITERATION = 2000
# How often a leader takes the next step of the reassignments it drives (replication/reassignment.py).
REASSIGNMENT_STEP_EVERY_S = 0.1


@dataclass
class BrokerConfig:
    broker_id: int
    data_dir: str
    listen: str
    peers: dict  # broker id -> address, this broker included
    log_defaults: dict = field(default_factory=dict)  # topic config keys every topic starts from
    cluster_id: str = "distlog"
    metrics_port: int | None = None  # serve Prometheus metrics on 127.0.0.1 (0: any free port)
    limits: Limits = field(default_factory=Limits)  # what it holds for clients at most (backpressure.py)

    @property
    def controller_ids(self) -> tuple:
        """The voters of the metadata log (controller.py)."""
        return controller_quorum(self.peers)


# Where an older version kept a partition's Raft hard state, beside its directory (now one
# raft-state.json per broker: distlog/consensus/hard_state_store.py); still read, and removed
# with the partition.
RAFT_STATE_SUFFIX = ".raft-state"


def _records_bytes(response: FetchResponse) -> int:
    return sum(len(entry["records"]) for entry in response.partitions)


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


class Broker:
    """One broker: owns its sockets, its partition replicas and its copy of the cluster metadata."""

    def __init__(self, config: BrokerConfig, logger: BrokerLogger | None = None):
        self.config = config
        self.broker_id = config.broker_id
        self.logger = logger or BrokerLogger(config.broker_id)
        make_directory_durably(self._path("topics"))
        self.data_dir_lock = lock_data_dir(config.data_dir)
        self.context = zmq.Context()
        self.server = None
        self.replicas: dict = {}
        self.peer_connections: dict = {}  # broker id -> DealerConnection (Raft, metadata sync, forwarding)
        self.metadata_quorum = None  # MetadataQuorum on a controller; None elsewhere
        self.metrics = BrokerMetrics()
        self.backpressure = Backpressure(config.limits)  # parked produces and fetches, unsent replies
        self._next_gauges_s = 0.0
        try:
            self._open(config)
        except BaseException:
            self._close_logs()  # this broker never started: another may use the dir and port
            self._close_sockets()
            raise
        self.handlers = {
            ApiKey.API_VERSIONS: self._handle_api_versions,
            ApiKey.METADATA: self._handle_metadata,
            ApiKey.CREATE_TOPICS: self._handle_create_topics,
            ApiKey.DELETE_TOPICS: self._handle_delete_topics,
            ApiKey.PRODUCE: self._handle_produce,
            ApiKey.FETCH: self._handle_fetch,
            ApiKey.LIST_OFFSETS: self._handle_list_offsets,
            ApiKey.METADATA_SYNC: self._handle_metadata_sync,
            ApiKey.SET_FAULT_RULES: self._handle_set_fault_rules,
            ApiKey.RAFT: self._handle_raft,
            ApiKey.ALTER_CONFIGS: self._handle_alter_configs,
            ApiKey.CREATE_PARTITIONS: self._handle_create_partitions,
            ApiKey.ELECT_LEADERS: self._handle_elect_leaders,
            ApiKey.REASSIGN_PARTITIONS: self._handle_reassign_partitions,
            ApiKey.DECOMMISSION_BROKER: self._handle_decommission_broker,
            ApiKey.FIND_COORDINATOR: self._handle_find_coordinator,
            **{api: self._handle_group for api in (ApiKey.CONSUMER_GROUP_HEARTBEAT, ApiKey.OFFSET_COMMIT, ApiKey.OFFSET_FETCH,
                                                   ApiKey.LIST_GROUPS, ApiKey.DESCRIBE_GROUPS, ApiKey.DELETE_GROUPS)},
        }

    def _open(self, config: BrokerConfig) -> None:
        """Everything __init__ sets up after taking the data dir's lock."""
        self.fault_rules = FaultRules()
        # Plain frames pass through unchanged; same-host clients may send big frames through a ring.
        self.server = ShmRouterServer(config.listen, context=self.context, fault_rules=self.fault_rules)
        self.stale_ring_requests = 0
        self.running = False
        self.purgatory = FetchPurgatory()
        self.produce_waiters = ProduceWaiters()
        self.outbox: list = []
        self.touched: set = set()  # partitions whose high watermark moved in this iteration
        # Partitions whose log failed to flush -> why. Their last writes may be lost yet are
        # readable from the page cache, and the log refuses every later flush: they serve no
        # reads and take no writes until a restart recovers them from what is on disk.
        self.offline: dict = {}
        self._scrub_next = 0  # where the next housekeeping turn's scrub starts (_scrub)
        self.forwarded = ForwardedRequests()
        self.peer_sync_state: dict = {}  # broker id -> (known metadata version, monotonic time seen)
        # Peers not heard from yet count as seen at startup: right after a cluster starts, every
        # broker is up but not all have synced once, and a topic created then must wait for them.
        self._started_s = time.monotonic()
        self.malformed_requests = 0
        self.metadata = ClusterMetadata.load(self._path("metadata.json")) or ClusterMetadata()
        self.raft_frames_dropped = 0
        self.hard_states = HardStateStore(self._path("raft-state.json"))
        self.replication = ReplicaManager(self.broker_id, self._send_raft_frame, self.logger,
                                          hard_state_store=self.hard_states)
        self.replication.on_fsync = self.metrics.fsync_latency.observe
        self.peer_addresses: dict = {}  # broker id -> address, this broker included (membership.py)
        self._poller = zmq.Poller()
        self._poller.register(self.server.socket, zmq.POLLIN)
        self._update_peers()
        self.membership_facts = PendingMembershipFacts()  # on the active controller
        self._reassigned: list = []  # [(key, voters)] of reassignments led here that are done
        self._next_reassignment_step_s = 0.0
        self.groups = GroupCoordinator(self.broker_id, self.replication.propose, self.logger)
        self._offsets_topic_asked_s = None  # when this broker last asked for __consumer_offsets to be created
        self._open_metadata_log()
        self._open_local_replicas()
        if config.metrics_port is not None:
            self.metrics.serve(config.metrics_port, config.data_dir)
        self._sync = None  # (controller, cid, sent at) of the MetadataSync awaiting its reply
        self._sync_attempts = 0
        self._next_sync_s = 0.0

    def _open_metadata_log(self) -> None:
        """A controller's replica of the metadata log (or one a reassignment of the controller
        quorum adds); its committed images beat metadata.json."""
        if self.metadata_quorum is not None or not hosts_metadata_log(self.metadata, self.config.peers, self.broker_id):
            return
        voters = controller_voters(self.metadata, self.config.peers)
        log = PartitionLog.open(self._path("metadata-log"), metadata_log_config(self.config.log_defaults))
        replica = PartitionReplica(*METADATA_KEY, log, self.broker_id, voters, store=self.hard_states)
        self.metadata_quorum = MetadataQuorum(replica, self.replication.propose)
        self.replication.add(replica, campaign=voters[0] == self.broker_id)
        image = self.metadata_quorum.committed_image()
        if image is not None and image.version > self.metadata.version:
            image.save(self._path("metadata.json"))
            self.metadata = image

    def _update_peers(self) -> None:
        """Connect to brokers the metadata added, drop the ones it retired. One DEALER per
        peer, named so the peer's fault rules can cut it: Raft frames go out on it (never
        answered) and, to the controller, MetadataSync and forwarded requests."""
        self.peer_addresses = peer_addresses(self.metadata, self.config.peers)
        for broker_id, address in self.peer_addresses.items():
            if broker_id != self.broker_id and broker_id not in self.peer_connections:
                connection = DealerConnection(address, identity=f"broker-{self.broker_id}".encode(), context=self.context,
                                              fault_rules=self.fault_rules, peer=f"broker-{broker_id}")
                self.peer_connections[broker_id] = connection
                self._poller.register(connection.socket, zmq.POLLIN)
        for broker_id in [b for b in self.peer_connections if b not in self.peer_addresses]:
            connection = self.peer_connections.pop(broker_id)
            self._poller.unregister(connection.socket)
            connection.close()
            self.logger.info("peer_retired", peer=broker_id)
        self.replication.set_peers(self.peer_addresses)

    def active_controller(self, now_s: float | None = None):
        """The broker leading the metadata log, as far as this one knows (None: none, or it went quiet)."""
        now_s = time.monotonic() if now_s is None else now_s
        leader = self.replication.leader_info(METADATA_KEY, now_s)[0]
        if leader == self.broker_id:
            return leader if self.metadata_quorum is not None and self.metadata_quorum.leads else None
        return leader if leader is not None and self.replication.peer_alive(leader, now_s) else None

    def _path(self, *parts) -> str:
        return os.path.join(self.config.data_dir, *parts)

    # ------------------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Serve until stop() (or SIGTERM/SIGINT through install_signal_handlers)."""
        self.running = True
        self.logger.info("started", listen=self.server.endpoint, version=__version__,
                         controllers=list(controller_voters(self.metadata, self.config.peers)),
                         topics=len(self.metadata.topics))
        next_housekeeping_s = time.monotonic() + HOUSEKEEPING_INTERVAL_S
        handoff_deadline_s = None
        try:
            while self.running or handoff_deadline_s is None or self._handing_off(handoff_deadline_s):
                if not self.running and handoff_deadline_s is None:
                    handoff_deadline_s = time.monotonic() + SHUTDOWN_HANDOFF_MAX_S
                    self.replication.begin_shutdown()
                self._poller.poll(self._poll_timeout_ms())
                self._drain_requests()
                now_s = time.monotonic()
                self._drain_peer_replies(now_s)
                self._sync_metadata(now_s)
                self._expire(now_s)
                if now_s >= next_housekeeping_s:
                    self._housekeeping()
                    next_housekeeping_s = now_s + HOUSEKEEPING_INTERVAL_S
                self._replicate(now_s)
                for peer, cid, response in self.groups.step(self.replicas, PartitionCounts(self.metadata.topics), now_s):
                    self._reply(peer, cid, response)
                self._drive_reassignments(now_s)
                self._apply_committed_metadata(now_s)
                self._send_outbox()
                self._wake_parked_fetches()
                if now_s >= self._next_gauges_s:
                    self._next_gauges_s = now_s + 1.0
                    self._update_gauges()
        finally:
            self._shutdown()

    def _handing_off(self, deadline_s: float) -> bool:
        """While stopping: keep serving until no replicated partition is led here (or the deadline)."""
        return time.monotonic() < deadline_s and self.replication.leads_anything_replicated()

    def stop(self) -> None:
        self.running = False

    def install_signal_handlers(self) -> None:
        def on_signal(signum, _frame):
            self.logger.info("stopping", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _poll_timeout_ms(self) -> int:
        now_s = time.monotonic()
        deadlines = [now_s + IDLE_POLL_MS / 1000]
        parked = self.purgatory.next_deadline_s()
        if parked is not None:
            deadlines.append(parked)
        for waiting in (self.metadata_quorum.next_deadline_s() if self.metadata_quorum else None,
                        self.forwarded.next_deadline_s(), self.groups.next_deadline_s()):
            if waiting is not None:
                deadlines.append(waiting)
        if self.metadata_quorum is None or not self.metadata_quorum.leads or self.forwarded:
            deadlines.append(now_s + METADATA_SYNC_INTERVAL_S)  # sync, and notice a controller change
        deadlines.append(self.replication.next_tick_s())
        produce = self.produce_waiters.next_deadline_s()
        if produce is not None:
            deadlines.append(produce)
        if self.replication.has_work:
            deadlines.append(now_s)
        if self.replication.unflushed:
            deadlines.append(now_s + 0.01)  # interval flush policies need a nudge even when idle
        return max(0, int((min(deadlines) - now_s) * 1000))

    def _drain_requests(self) -> None:
        for _ in range(MAX_REQUESTS_PER_ITERATION):
            received = self.server.recv_nowait()
            if received is None:
                return
            peer, cid, frames = received
            received = None  # no reference to ring views past the copy below
            if self.server.from_ring(peer, cid):
                frames = self._copy_out_of_ring(peer, cid, frames)
                if frames is None:
                    continue
            self._on_request(peer, cid, frames)

    def _copy_out_of_ring(self, peer: bytes, cid: int, frames: list):
        """Own copies of a request's ring frames, or None if the writer reused a slot meanwhile.

        Copy first, check after (seqlock style): a copy taken while the generation held is the
        writer's frame; if it moved, the copy may be torn and the request is dropped (its writer
        gave up on it already and retries). No view into the ring outlives this call."""
        copied = [bytes(frame) for frame in frames]
        valid = self.server.still_valid(peer, cid)
        self.server.forget(peer, cid)
        del frames
        if not valid:
            self.stale_ring_requests += 1
            self.logger.warning("stale_ring_request", count=self.stale_ring_requests)
            return None
        return copied

    def _on_request(self, peer: bytes, cid: int, frames: list) -> None:
        received_s = time.monotonic()
        try:
            request = decode_request(frames)
        except ProtocolError as error:
            self.malformed_requests += 1
            self.logger.warning("malformed_request", error=error.message, count=self.malformed_requests)
            self._reply(peer, cid, ErrorResponse(int(error.code), error.message, peek_api_key(frames)))
            return
        api = request.API_KEY.name
        self.metrics.requests.labels(api).inc()
        may_park = request.API_KEY is ApiKey.FETCH or (request.API_KEY is ApiKey.PRODUCE and request.acks != 0)
        produce_bytes = sum(len(p["records"]) for p in request.partitions) if may_park and api == "PRODUCE" else 0
        refused = self.backpressure.refusal(peer, api, produce_bytes) if may_park else None
        if refused is not None:  # answered before anything is done with it: its retry is a first try
            self.metrics.throttled.labels(api).inc()
            self._reply(peer, cid, ErrorResponse(int(ErrorCode.THROTTLING), refused, int(request.API_KEY)))
            return
        try:
            response = self.handlers[request.API_KEY](peer, cid, request)
        except Exception as error:  # a bug in one handler must not take the broker down
            self.logger.error("handler_failed", api=api, error=repr(error), trace=traceback.format_exc())
            response = ErrorResponse(int(ErrorCode.UNKNOWN_SERVER_ERROR), f"{type(error).__name__}: {error}", int(request.API_KEY))
        if response is not None:
            self.metrics.request_latency.labels(api).observe(time.monotonic() - received_s)
            if isinstance(response, FetchResponse):
                self.backpressure.reply_pending(peer, _records_bytes(response))
            self._reply(peer, cid, response)
        elif may_park:
            self.backpressure.park(peer, cid, api, received_s, produce_bytes)  # answered by a later turn

    def _reply(self, peer: bytes | None, cid: int, response) -> None:
        if peer is not None:  # None: a request the broker made of itself (creating __consumer_offsets)
            self.outbox.append((peer, cid, response))

    def _replicate(self, now_s: float) -> None:
        """Drive the Raft groups (tick, Ready, group commit), then answer the produces they settled."""
        manager = self.replication
        manager.tick(now_s)
        manager.process()
        failed = manager.take_failed()
        for key, (replica, error) in manager.take_damaged().items():
            if key == METADATA_KEY:  # the quarantine of the metadata log reopens only with the broker
                failed[key] = f"its log is damaged ({error}); restart the broker to repair it from the other controllers"
            else:
                self._repair(replica, error)
        for key, why in failed.items():
            self.replicas.pop(key, None)
            self.offline[key] = why
            if key == METADATA_KEY and self.metadata_quorum is not None:
                # This controller's copy is unusable (disk): the others carry on without it.
                for peer, cid, response in self.metadata_quorum.fail_all_on_disk(self.broker_id, why):
                    self._reply(peer, cid, response)
                self.metadata_quorum = None
        # Every partition a produce waits on is looked at: acks=1 settles on the write alone.
        moved = manager.hw_advanced | self.produce_waiters.keys()
        for peer, cid, results in self.produce_waiters.settle(self.replicas, moved, failed, now_s):
            self._reply(peer, cid, ProduceResponse(results))
        self.touched.update(manager.hw_advanced)
        manager.flush_outgoing()

    def _send_raft_frame(self, peer_id: int, body: bytes, entries: list) -> bool:
        """Whether the frame set left (False: no connection; Raft treats it as lost)."""
        connection = self.peer_connections.get(peer_id)
        if connection is None:
            return False
        try:
            if connection.send_request(encode(RaftRequest(self.broker_id, body, entries))) is None:
                self.raft_frames_dropped += 1
                return False
        except TransportError as error:
            self.logger.error("raft_send_failed", peer=peer_id, error=str(error))
            return False
        return True

    def _send_outbox(self) -> None:
        outbox, self.outbox = self.outbox, []
        for peer, cid, response in outbox:
            self._send_now(peer, cid, response)

    def _send_now(self, peer: bytes, cid: int, response) -> None:
        """Send one response, once it may leave (after _flush). A socket-level failure loses
        this reply, not the broker: the client's request times out and it retries, as it would
        after a lost packet."""
        later = self.backpressure.release(peer, cid)
        if later is not None:
            self.metrics.request_latency.labels(later[0]).observe(time.monotonic() - later[1])
        records_bytes = 0
        if isinstance(response, FetchResponse):
            records_bytes = _records_bytes(response)
            for entry in response.partitions:
                if entry["records"]:
                    self.metrics.fetched(entry["topic"], entry["records"])
        try:
            if records_bytes:  # counted until ZeroMQ lets go of them: a slow reader is throttled
                tracker = None
                try:
                    tracker = self.server.send_tracked(peer, cid, encode(response))
                finally:  # a fetch answered where it arrived was counted then (_on_request), a parked one now
                    self.backpressure.reply_queued(peer, records_bytes, tracker, pending=later is None)
            else:
                self.server.send(peer, cid, encode(response))
        except TransportError as error:
            self.logger.error("reply_failed", api=response.API_KEY.name, error=str(error))

    def _shutdown(self) -> None:
        for peer, cid, results in self.produce_waiters.fail_all(
                ErrorCode.NOT_LEADER, f"broker {self.broker_id} is shutting down before the write was acknowledged"):
            self._reply(peer, cid, ProduceResponse(results))
        if self.metadata_quorum is not None:
            for peer, cid, response in self.metadata_quorum.fail_all(f"broker {self.broker_id}, the controller, is shutting down"):
                self._reply(peer, cid, response)
        self._close_logs()  # close() flushes: before the last replies leave, as every turn
        self._send_outbox()
        self._close_sockets()
        self.logger.info("stopped", stale_descriptors=self.server.stale_descriptors_dropped + self.stale_ring_requests)

    def _close_logs(self) -> None:
        quorum = getattr(self, "metadata_quorum", None)
        for replica in [*self.replicas.values(), *([quorum.replica] if quorum is not None else [])]:
            try:
                replica.close()
            except OSError as error:
                self.logger.error("close_failed", partition=f"{replica.topic}-{replica.partition}", error=str(error))
        hard_states = getattr(self, "hard_states", None)  # absent if the broker failed to start early
        if hard_states is not None:
            try:
                hard_states.flush()  # every partition's last commit index, in one write
            except OSError as error:
                self.logger.error("hard_state_flush_failed", error=str(error))

    def _update_gauges(self) -> None:
        """Once a second: what the gauges show until the next time."""
        coordinated = [loaded.state.offsets for loaded in self.groups.partitions.values() if loaded.state is not None]
        self.metrics.set_state(take_state(self.replicas, self.replication.in_sync_replicas, self.offline,
                                          self.replication.stats, coordinated))
        self.metrics.parked_requests.set(self.backpressure.parked)
        self.metrics.parked_produce_bytes.set(self.backpressure.parked_produce_bytes)

    def _close_sockets(self) -> None:
        """Close the sockets and the context, then let another broker have the data dir."""
        self.metrics.close()
        if self.server is not None:
            self.server.close(linger_ms=100)
        for connection in self.peer_connections.values():
            connection.close()
        self.context.term()
        self.data_dir_lock.release()

    # ------------------------------------------------------------------- partitions on this broker

    def _open_local_replicas(self) -> None:
        """Open every partition this broker holds and delete logs of topics that no longer exist."""
        wanted = hosted_partitions(self.metadata, self.broker_id)
        for key in [k for k in self.offline if k not in wanted and k not in self.replicas]:
            del self.offline[key]  # a partition that never opened, of a topic since deleted
        for key in [k for k in self.replicas if k not in wanted]:
            replica = self.replicas.pop(key)
            self.replication.remove(key)
            try:
                replica.delete()
            except OSError as error:
                # An offline log cannot flush, so it refuses to close cleanly; its directory is
                # removed with the orphans below all the same.
                self.logger.warning("partition_delete_failed", partition=f"{key[0]}-{key[1]}", error=str(error))
            self.offline.pop(key, None)
            self.logger.info("partition_deleted", partition=f"{key[0]}-{key[1]}")
        for key, topic in wanted.items():
            replica = self.replicas.get(key)
            if replica is not None:
                replica.assigned = tuple(topic.targets.get(key[1], topic.replicas[key[1]]))
                # An altered config takes effect on the open log at once.
                config = LogConfig.from_dict({**self.config.log_defaults, **topic.configs})
                if replica.log.config != config:
                    replica.log.config = config
                    self.logger.info("partition_config_changed", partition=f"{key[0]}-{key[1]}")
            if key not in self.replicas and key not in self.offline:
                config = LogConfig.from_dict({**self.config.log_defaults, **topic.configs})
                try:
                    log = PartitionLog.open(self._path("topics", partition_dir_name(*key)), config)
                except (OSError, LogError) as error:
                    # Disk full, out of fds, a foreign file in the way: this partition is
                    # unusable, the rest of the broker is not (and must not crash-loop on it).
                    self.offline[key] = f"opening its log failed ({error})"
                    self.logger.error("partition_open_failed", partition=f"{key[0]}-{key[1]}", error=str(error))
                    continue
                voters = topic.replicas[key[1]]  # the bootstrap membership (a replica being added is not in it)
                try:
                    replica = self._open_replica(key, log, voters)
                    replica.assigned = tuple(topic.targets.get(key[1], voters))
                except (OSError, LogError, ValueError, RuntimeError) as error:  # its Raft state is unreadable
                    log.close()
                    self.offline[key] = f"opening its Raft state failed ({error})"
                    self.logger.error("partition_open_failed", partition=f"{key[0]}-{key[1]}", error=str(error))
                    continue
                self.replicas[key] = replica
                self.replication.add(replica, campaign=voters[0] == self.broker_id)
        if self.metadata.version > 0:  # never on metadata we know nothing about (a lost metadata.json)
            self._delete_orphan_partition_dirs(wanted)
            for name in set(self.hard_states.names()) - {partition_dir_name(*key) for key in [*wanted, METADATA_KEY]}:
                self.hard_states.remove(name)
        try:
            self.hard_states.flush()  # deleted partitions' entries, gone durably
        except OSError as error:
            self.logger.error("hard_state_flush_failed", error=str(error))

    def _open_replica(self, key, log: PartitionLog, voters) -> PartitionReplica:
        """The replica over an opened log. Opening reads the log's tail (the producer table): if
        that finds damage, it is quarantined like any other (a few times at most) and the
        replica opens repairing."""
        for attempt in range(3):
            try:
                return PartitionReplica(key[0], key[1], log, self.broker_id, voters, store=self.hard_states)
            except CorruptDataError as error:
                if attempt == 2:
                    raise
                damage = log.quarantine_damaged(error)
                self.logger.error("partition_damaged", partition=f"{key[0]}-{key[1]}", damage=damage.describe())
        raise AssertionError("unreachable")

    def _repair(self, replica: PartitionReplica, error: CorruptDataError) -> None:
        """A read found damage in this replica's log (the manager stopped driving it): quarantine
        the damage and reopen the replica, which comes back repairing: a follower that neither
        votes nor campaigns until it has refetched what it lost (recovery.py; raft.py, "Repair").
        A leader so steps down; its produces still waiting are answered NOT_LEADER."""
        key = replica.key
        self.replicas.pop(key, None)
        partition = f"{key[0]}-{key[1]}"
        try:
            damage = replica.log.quarantine_damaged(error)
            replica.close()
        except Exception as failure:  # any failure here costs this partition, never the broker
            self.offline[key] = f"quarantining damage its log has failed ({failure}); the damage: {error}"
            self.logger.error("partition_failed", partition=partition, error=self.offline[key])
            return
        self.logger.error("partition_damaged", partition=partition, damage=damage.describe(),
                          note="reopened as a repairing replica")
        self._open_local_replicas()

    def _delete_orphan_partition_dirs(self, wanted: dict) -> None:
        """Remove partition directories of deleted topics (a broker may have been down when it happened)."""
        keep = {partition_dir_name(*key) for key in wanted}
        keep |= {name + RAFT_STATE_SUFFIX for name in keep}
        for name in os.listdir(self._path("topics")):
            if name not in keep:
                path = self._path("topics", name)
                if name.endswith(RAFT_STATE_SUFFIX):
                    with contextlib.suppress(OSError):
                        os.remove(path)
                else:
                    shutil.rmtree(path, ignore_errors=True)

    def _apply_metadata(self, metadata: ClusterMetadata, from_own_log: bool = False) -> None:
        """Persist, then serve: a broker that served a version keeps serving it (or a newer one)
        after a restart, even while no controller answers. OSError if the save fails, with
        nothing applied, unless the image came from this controller's own metadata log, which
        holds it durably already (metadata.json is then only the cache it starts from)."""
        try:
            metadata.save(self._path("metadata.json"))
        except OSError as error:
            if not from_own_log:
                raise
            self.logger.error("metadata_save_failed", version=metadata.version, error=str(error),
                              note="applied from the metadata log; metadata.json is written with the next change")
        self.metadata = metadata
        self._update_peers()
        self._open_metadata_log()
        self._open_local_replicas()
        self.logger.info("metadata_applied", version=metadata.version, topics=len(metadata.topics))

    def _replica(self, topic: str, partition: int):
        """(replica, None) or (None, (code, message)) for a partition a client names."""
        meta = self.metadata.topics.get(topic)
        if meta is None:
            return None, (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                          f"topic '{topic}' does not exist (create it with `distlog topic create {topic}`)")
        if not 0 <= partition < meta.partition_count:
            return None, (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                          f"topic '{topic}' has partitions 0..{meta.partition_count - 1}, not {partition}"
                          " (a partition number within that range; `distlog topic describe` lists them)")
        why = self.offline.get((topic, partition))
        if why is not None:
            return None, (ErrorCode.STORAGE_ERROR, f"partition {topic}-{partition} is offline on broker {self.broker_id}: "
                                                   f"{why}; restart the broker to recover it from disk")
        replica = self.replicas.get((topic, partition))
        if replica is None:
            leader = self.replication.leader_info((topic, partition))[0]
            where = f"broker {leader} leads it" if leader is not None else "its leader is not known here yet"
            return None, (ErrorCode.NOT_LEADER, f"broker {self.broker_id} holds no replica of {topic}-{partition}: {where}")
        if not replica.is_leader:
            damage = replica.log.damage
            if damage is not None and replica.is_sole_copy:
                return None, (ErrorCode.STORAGE_ERROR, f"{topic}-{partition} is offline: in its only replica, on broker "
                              f"{self.broker_id}, {damage.describe()}, and no other replica can give them back. "
                              "Restore those files into the partition directory, or accept the loss by deleting "
                              "the DAMAGE.json there, then restart the broker")
            if damage is not None and replica.leader_id is None:
                # Retriable (another replica may be elected any moment), but says why if none is.
                return None, (ErrorCode.NOT_LEADER, f"{topic}-{partition} has no leader that broker {self.broker_id} knows "
                              f"of, and its own replica cannot lead: {damage.describe()}; it waits for a healthy replica "
                              "to lead and refetches them from it. If every replica is damaged the partition stays "
                              "offline: `distlog topic verify` shows where")
            return None, (ErrorCode.NOT_LEADER, str(replica.not_leader_error()))
        return replica, None

    # ------------------------------------------------------------------------------ handlers

    def _handle_api_versions(self, peer, cid, request):
        versions = [{"api_key": int(k), "min_version": c.MIN_VERSION, "max_version": c.VERSION} for k, c in REQUEST_TYPES.items()]
        return ApiVersionsResponse(0, "", versions, self.broker_id, self.active_controller(), self.config.cluster_id)

    def _handle_metadata(self, peer, cid, request):
        names = request.topics if request.topics is not None else sorted(self.metadata.topics)
        topics = []
        for name in names:
            meta = self.metadata.topics.get(name)
            if meta is None:
                topics.append({"name": name, "error_code": int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                               "error_message": f"topic '{name}' does not exist", "configs": {}, "partitions": []})
                continue
            now_s = time.monotonic()
            partitions = []
            for p, replicas in enumerate(meta.replicas):
                leader, epoch, in_sync, high_watermark, log_end_offset = self.replication.leader_info((name, p), now_s)
                if leader is None and len(replicas) == 1:
                    # Its only replica is the only possible leader; if that broker cannot serve it
                    # (its log is offline or damaged), clients hear why from it (STORAGE_ERROR).
                    # With this broker's term as the epoch, a client that knew it as leader in
                    # that term takes the answer (an older epoch it would ignore).
                    leader = replicas[0]
                    local = self.replicas.get((name, p))
                    epoch = local.node.term if local is not None else epoch
                partitions.append({"partition": p, "leader": leader, "leader_epoch": epoch, "replicas": list(replicas),
                                   "target_replicas": meta.targets.get(p), "in_sync": in_sync, "high_watermark": high_watermark, "log_end_offset": log_end_offset})
            topics.append({"name": name, "error_code": 0, "error_message": "", "configs": dict(meta.configs), "partitions": partitions})
        brokers = [{"broker_id": b, "address": a} for b, a in self.peer_addresses.items()]
        return MetadataResponse(brokers, self.active_controller(), topics)

    # ---- metadata changes: on the active controller, else forwarded to it (controller.py)

    def _handle_create_topics(self, peer, cid, request):
        def create(metadata, spec):
            created = metadata.with_topic_created(spec["name"], spec["partitions"], spec["replication_factor"], spec["configs"])
            return metadata if request.validate_only else created

        return self._change_metadata(peer, cid, request, create)

    def _handle_delete_topics(self, peer, cid, request):
        def delete(metadata, name):
            if name == OFFSETS_TOPIC:
                raise DistlogError(ErrorCode.INVALID_TOPIC, f"{OFFSETS_TOPIC} is internal: it holds every consumer group's "
                                   "offsets; delete groups with `distlog group delete` instead")
            return metadata.with_topic_deleted(name)

        return self._change_metadata(peer, cid, request, delete)

    def _handle_alter_configs(self, peer, cid, request):
        def alter(metadata, spec):
            return metadata.with_configs_altered(spec["name"], spec["set"], spec["delete"])

        return self._change_metadata(peer, cid, request, alter)

    def _handle_create_partitions(self, peer, cid, request):
        return self._change_metadata(peer, cid, request, lambda metadata, spec: metadata.with_partitions_added(spec["name"], spec["count"]))

    def _handle_reassign_partitions(self, peer, cid, request):
        bootstrap = list(controller_voters(self.metadata, self.config.peers))

        def reassign(metadata, spec):
            if spec["name"] == METADATA_KEY[0] and spec["partition"] == METADATA_KEY[1]:
                return metadata.with_controllers_reassigned(spec["replicas"], bootstrap)
            return metadata.with_reassignment(spec["name"], spec["partition"], spec["replicas"])

        return self._change_metadata(peer, cid, request, reassign)

    def _handle_decommission_broker(self, peer, cid, request):
        bootstrap = list(controller_voters(self.metadata, self.config.peers))
        return self._change_metadata(peer, cid, request,
                                     lambda metadata, broker_id: metadata.with_broker_decommissioned(broker_id, bootstrap))

    def _change_metadata(self, peer, cid, request, change):
        """Apply `change(image, item)` for each item of the request in turn (one that fails is
        reported and skipped), propose the resulting image and answer once it is committed and
        spread; forwarded to the active controller when that is not this broker."""
        quorum = self.metadata_quorum
        head = self._record_membership_facts()
        if head is None:
            return self._forward(peer, cid, request)
        results, image = [], head
        for item, name in zip(change_items(request), item_names(request)):
            code, message = 0, ""
            try:
                image = change(image, item)
            except DistlogError as error:
                code, message = int(error.code), error.message
            results.append({"name": name, "error_code": code, "error_message": message})
        response = CHANGE_RESPONSES[request.API_KEY](results)
        if image is head:
            return response
        try:
            term, last_offset = quorum.propose(image)
        except NotLeaderForPartitionError as error:
            return error_response(request, ErrorCode.NOT_CONTROLLER, f"{error}; retry shortly")
        except RecordTooLargeError as error:
            return error_response(request, ErrorCode.INVALID_REQUEST, f"the cluster metadata would outgrow its log: {error}")
        deadline_s = time.monotonic() + max(request.timeout_ms, 0) / 1000
        quorum.wait(PendingChange(peer, cid, response, image.version, term, last_offset, deadline_s))
        return None

    def _forward(self, peer, cid, request):
        """Send a change request on to the active controller; its answer is relayed as it comes."""
        now_s = time.monotonic()
        controller = self.active_controller(now_s)
        if controller is None and METADATA_KEY in self.offline and len(controller_voters(self.metadata, self.config.peers)) == 1:
            return error_response(request, ErrorCode.STORAGE_ERROR, metadata_log_failed_message(self.broker_id, self.offline[METADATA_KEY]))
        if controller is None or controller == self.broker_id:
            why = ("this broker was just elected controller and is still catching up" if controller == self.broker_id
                   else "no controller is elected right now (an election is under way, or too few controllers are up)")
            return error_response(request, ErrorCode.NOT_CONTROLLER, f"{why}; retry shortly")
        forwarded_cid = self.peer_connections[controller].send_request(encode(request))
        if forwarded_cid is None:
            return error_response(request, ErrorCode.NOT_CONTROLLER,
                                  f"broker {self.broker_id} cannot reach the controller (broker {controller}) right now; retry shortly")
        deadline_s = now_s + max(request.timeout_ms, 0) / 1000 + FORWARD_GRACE_S
        self.forwarded.add(controller, forwarded_cid, Forwarded(peer, cid, request, controller, deadline_s))
        return None

    # ---- consumer groups: the coordinator is distlog/broker/groups/

    def _handle_find_coordinator(self, peer, cid, request):
        response = find_coordinator(request.group_id, self.metadata.topics, self.peer_addresses,
                                    lambda key: self.replication.leader_info(key)[0])
        if response.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE and OFFSETS_TOPIC not in self.metadata.topics:
            self._create_offsets_topic()
        return response

    def _create_offsets_topic(self) -> None:
        """Ask the controller (through this broker's own change path) for __consumer_offsets, at
        most every few seconds: the first FindCoordinator of a cluster creates it, as in Kafka."""
        now_s = time.monotonic()
        if self._offsets_topic_asked_s is not None and now_s - self._offsets_topic_asked_s < 2.0:
            return
        self._offsets_topic_asked_s = now_s
        request = offsets_topic_request(len(self.metadata.active_brokers) or len(self.config.peers))
        self.logger.info("creating_offsets_topic", partitions=request.topics[0]["partitions"],
                         replication_factor=request.topics[0]["replication_factor"])
        self._handle_create_topics(None, 0, request)

    def _handle_group(self, peer, cid, request):
        return self.groups.handle(peer, cid, request, self.replicas, PartitionCounts(self.metadata.topics), time.monotonic())

    def _handle_metadata_sync(self, peer, cid, request):
        if self.active_controller() != self.broker_id:
            return MetadataSyncResponse(int(ErrorCode.NOT_CONTROLLER), f"broker {self.broker_id} is not the controller", None)
        self.peer_sync_state[request.broker_id] = (request.known_version, time.monotonic())
        if request.address and self.metadata.brokers.get(request.broker_id) != request.address \
                and request.broker_id not in self.metadata.decommissioned:
            self.membership_facts.register(request.broker_id, request.address)
        for done in request.reassigned:
            self.membership_facts.reassignment_completed((done["topic"], done["partition"]), done["replicas"])
        newer = self.metadata.to_wire() if request.known_version < self.metadata.version else None
        return MetadataSyncResponse(0, "", newer)

    def _handle_raft(self, peer, cid, request):
        if request.sender not in self.peer_addresses or request.sender == self.broker_id:
            self.raft_frames_dropped += 1
            return None
        try:
            frame = decode_frame(request.sender, self.broker_id, request.payload, request.entries)
        except RaftWireError as error:
            self.raft_frames_dropped += 1
            self.logger.warning("malformed_raft_frame", peer=request.sender, error=str(error), count=self.raft_frames_dropped)
            return None
        self.replication.receive(frame)
        return None  # never answered: the peer's Raft replies travel in its own frames

    def _handle_elect_leaders(self, peer, cid, request):
        topics = set(request.topics) if request.topics is not None else None
        moving, not_ready = self.replication.elect_preferred_leaders(topics)
        if moving:
            self.logger.info("preferred_leader_election", partitions=len(moving))
        return ElectLeadersResponse(0, "", [{"topic": k[0], "partition": k[1], "to": to} for k, to in moving],
                                    [{"topic": k[0], "partition": k[1], "preferred": p} for k, p in not_ready])

    def _handle_set_fault_rules(self, peer, cid, request):
        self.fault_rules.replace(FaultRules(drop_to=request.drop_to, drop_from=request.drop_from))
        self.logger.info("fault_rules_set", drop_to=request.drop_to, drop_from=request.drop_from)
        return SetFaultRulesResponse(0, "")

    def _handle_produce(self, peer, cid, request):
        if request.acks not in (0, 1, ACKS_ALL):
            return ErrorResponse(int(ErrorCode.INVALID_REQUEST), f"acks must be 0, 1 or -1 (all), got {request.acks}", int(ApiKey.PRODUCE))
        produce = PendingProduce(peer, cid, request.acks, [],
                                 deadline_s=time.monotonic() + max(request.timeout_ms, 0) / 1000)
        for p in request.partitions:
            result, waiting = self._propose(p["topic"], p["partition"], p["records"])
            produce.results.append(result)
            produce.waiting.extend(waiting)
        if request.acks == 0:
            return None
        if not produce.waiting:
            return ProduceResponse(produce.results)
        self.produce_waiters.add(produce)  # answered by _replicate once written or committed
        return None

    def _propose(self, topic: str, partition: int, records) -> tuple:
        """Propose one partition's batches: (its result entry, [WaitingPartition] to settle)."""
        result = {"topic": topic, "partition": partition, "error_code": 0, "error_message": "", "base_offset": -1, "log_start_offset": -1}
        replica, error = self._replica(topic, partition)
        if error is None and topic == OFFSETS_TOPIC:
            error = ErrorCode.INVALID_REQUEST, f"{OFFSETS_TOPIC} is internal: only group coordinators write it"
        if error is not None:
            result["error_code"], result["error_message"] = int(error[0]), error[1]
            return result, []
        try:
            written = self.replication.propose(replica, records)
        except NotLeaderForPartitionError as exc:
            result["error_code"], result["error_message"] = int(ErrorCode.NOT_LEADER), str(exc)
        except RecordTooLargeError as exc:
            result["error_code"], result["error_message"] = int(ErrorCode.MESSAGE_TOO_LARGE), str(exc)
        except ControlBatchRefusedError as exc:
            result["error_code"], result["error_message"] = int(ErrorCode.INVALID_REQUEST), str(exc)
        except DuplicateSequenceError as exc:
            result["error_code"], result["error_message"] = int(ErrorCode.DUPLICATE_SEQUENCE), str(exc)
        except SequenceError as exc:
            result["error_code"], result["error_message"] = int(ErrorCode.OUT_OF_ORDER_SEQUENCE), str(exc)
        except (CorruptBatchError, ValueError) as exc:
            result["error_code"], result["error_message"] = int(ErrorCode.CORRUPT_MESSAGE), str(exc)
        else:
            result["base_offset"] = written[0].base_offset
            result["log_start_offset"] = replica.log_start_offset
            appended = [w for w in written if not isinstance(w, ProducerBatchInfo)]  # not retries of written ones
            if len(appended) == len(written):
                self.metrics.produced_bytes.labels(topic).inc(len(records))
            self.metrics.produced_records.labels(topic).inc(sum(w.last_offset - w.base_offset + 1 for w in appended))
            # The request is settled when its last batch is: entries of one term are committed in order.
            last = written[-1]
            if isinstance(last, ProducerBatchInfo):  # a retry of a batch held already: wait for that entry
                term = replica.node.term_at(last.last_offset)
                if term is None:  # not where a batch ends any more (compacted): long since committed
                    return result, []
            else:
                term = last.term
            return result, [WaitingPartition(result, replica.key, term, last.last_offset)]
        return result, []

    def _handle_fetch(self, peer, cid, request):
        response, total_bytes, waiting_on = self._read_for_fetch(request)
        if request.max_wait_ms <= 0 or total_bytes >= max(request.min_bytes, 1) or not waiting_on:
            return response
        deadline_s = time.monotonic() + request.max_wait_ms / 1000
        self.purgatory.park(ParkedFetch(peer, cid, request, deadline_s, frozenset(waiting_on)))
        return None

    def _read_for_fetch(self, request):
        """The fetch response as of now, the bytes it carries, and the partitions worth waiting on."""
        budget = request.max_bytes
        entries, total_bytes, waiting_on = [], 0, set()
        for p in request.partitions:
            topic, partition = p["topic"], p["partition"]
            entry = {"topic": topic, "partition": partition, "error_code": 0, "error_message": "",
                     "high_watermark": -1, "log_start_offset": -1, "records": b""}
            replica, error = self._replica(topic, partition)
            if error is not None:
                entry["error_code"], entry["error_message"] = int(error[0]), error[1]
            else:
                entry["high_watermark"] = replica.high_watermark
                entry["log_start_offset"] = replica.log_start_offset
                limit = min(p["max_bytes"], budget)
                try:
                    data = replica.read(p["fetch_offset"], limit) if limit > 0 else b""
                except OffsetOutOfRangeError as exc:
                    entry["error_code"], entry["error_message"] = int(ErrorCode.OFFSET_OUT_OF_RANGE), str(exc)
                except CorruptDataError as exc:  # this partition only; the replica goes to repair
                    entry["error_code"] = int(ErrorCode.CORRUPT_MESSAGE)
                    entry["error_message"] = (f"broker {self.broker_id}'s copy of {topic}-{partition} is damaged ({exc}); "
                                              "it steps down to repair it from the other replicas: refresh metadata and retry")
                    self.replication.report_damage(replica.key, exc)
                else:
                    entry["records"] = data
                    size = len(data)
                    budget -= size
                    total_bytes += size
                    waiting_on.add((topic, partition))
            entries.append(entry)
        return FetchResponse(entries), total_bytes, waiting_on

    def _handle_list_offsets(self, peer, cid, request):
        results = []
        for p in request.partitions:
            entry = {"topic": p["topic"], "partition": p["partition"], "error_code": 0, "error_message": "", "offset": -1, "timestamp_ms": -1}
            replica, error = self._replica(p["topic"], p["partition"])
            if error is not None:
                entry["error_code"], entry["error_message"] = int(error[0]), error[1]
            elif p["timestamp_ms"] == EARLIEST_TIMESTAMP:
                entry["offset"] = replica.log_start_offset
            elif p["timestamp_ms"] == LATEST_TIMESTAMP:
                entry["offset"] = replica.high_watermark
            else:
                found = replica.offset_for_timestamp(p["timestamp_ms"])
                if found is not None and found < replica.high_watermark:
                    entry["offset"], entry["timestamp_ms"] = found, p["timestamp_ms"]
            results.append(entry)
        return ListOffsetsResponse(results)

    # ------------------------------------------------------------------------ timers and waiting

    def _wake_parked_fetches(self) -> None:
        if not self.touched:
            return
        touched, self.touched = self.touched, set()
        for fetch in self.purgatory.waiting_on(touched):
            response, total_bytes, _ = self._read_for_fetch(fetch.request)
            if total_bytes >= max(fetch.request.min_bytes, 1):
                fetch.done = True
                self._send_now(fetch.peer, fetch.cid, response)
            else:
                self.purgatory.repark(fetch, touched)

    def _expire(self, now_s: float) -> None:
        for fetch in self.purgatory.expired(now_s):
            fetch.done = True
            self._reply(fetch.peer, fetch.cid, self._read_for_fetch(fetch.request)[0])
        for peer, cid, response in self.forwarded.abandon(self.active_controller(now_s), now_s):
            self._reply(peer, cid, response)

    def _live_peers_have(self, version: int, now_s: float) -> bool:
        for broker_id in self.peer_addresses:
            if broker_id == self.broker_id:
                continue
            known, seen_s = self.peer_sync_state.get(broker_id, (-1, self._started_s))
            if now_s - seen_s <= PEER_LIVE_WINDOW_S and known < version:
                return False
        return True

    def _apply_committed_metadata(self, now_s: float) -> None:
        """A controller applies what its metadata log committed, then answers the changes it settled."""
        quorum = self.metadata_quorum
        if quorum is None:
            return
        image = quorum.committed_image()
        if image is not None and image.version > self.metadata.version:
            self._apply_metadata(image, from_own_log=True)
        for peer, cid, response in quorum.settle(self.metadata.version, self._live_peers_have, now_s):
            self._reply(peer, cid, response)

    def _drain_peer_replies(self, now_s: float) -> None:
        """Answers from peers: to requests forwarded to the controller (relayed as they are) and
        to this broker's MetadataSync."""
        for broker_id, connection in self.peer_connections.items():
            while (reply := connection.recv_reply_nowait()) is not None:
                reply_cid, frames = reply
                forwarded = self.forwarded.take(broker_id, reply_cid)
                if forwarded is not None and forwarded.peer is not None:
                    try:
                        self.server.send(forwarded.peer, forwarded.cid, frames)
                    except TransportError as error:
                        self.logger.error("reply_failed", api="forwarded", error=str(error))
                elif self._sync is not None and self._sync[:2] == (broker_id, reply_cid):
                    self._sync = None
                    self._next_sync_s = now_s + METADATA_SYNC_INTERVAL_S
                    self._on_sync_reply(frames)

    def _on_sync_reply(self, frames) -> None:
        try:
            response = decode_response(frames)
        except ProtocolError as error:
            self.logger.warning("bad_metadata_sync_reply", error=error.message)
            return
        if isinstance(response, MetadataSyncResponse) and response.metadata is not None:
            metadata = ClusterMetadata.from_wire(response.metadata)
            if metadata.version > self.metadata.version:
                self._apply_metadata_safely(metadata)

    def _apply_metadata_safely(self, metadata: ClusterMetadata) -> None:
        try:
            self._apply_metadata(metadata)
        except OSError as error:  # disk full, say: it comes again (sync, or the next image), don't die
            self.logger.error("metadata_apply_failed", version=metadata.version, error=str(error))

    def _sync_metadata(self, now_s: float) -> None:
        """Every broker but the active controller asks it for newer metadata (and so tells it
        which version this broker has) every METADATA_SYNC_INTERVAL_S.

        A broker the metadata does not list yet (just added) hears from no controller: leaders
        report only to registered brokers. It asks its peers in turn instead; the controller
        among them answers and registers it, the others answer NOT_CONTROLLER."""
        controller = self.active_controller(now_s)
        looking = controller is None and self.broker_id not in self.metadata.brokers and self.peer_connections
        if looking:
            candidates = sorted(self.peer_connections)
            controller = candidates[self._sync_attempts % len(candidates)]
        if controller is None or controller == self.broker_id:
            self._sync = None
            return
        if self._sync is not None:
            asked, _, sent_s = self._sync
            if (asked == controller or looking) and now_s - sent_s <= METADATA_SYNC_TIMEOUT_S:
                return  # its answer is still due
        elif now_s < self._next_sync_s:
            return
        self._sync_attempts += 1
        reassigned = [{"topic": key[0], "partition": key[1], "replicas": voters} for key, voters in self._reassigned]
        sync = MetadataSyncRequest(self.broker_id, self.metadata.version, self.peer_addresses[self.broker_id], reassigned)
        sync_cid = self.peer_connections[controller].send_request(encode(sync))
        self._sync = (controller, sync_cid, now_s) if sync_cid is not None else None
        if sync_cid is None:
            self._next_sync_s = now_s + METADATA_SYNC_INTERVAL_S

    def _drive_reassignments(self, now_s: float) -> None:
        """Step the reassignments this broker leads (the active controller records the finished
        ones, its own and those brokers report)."""
        if now_s >= self._next_reassignment_step_s:
            self._next_reassignment_step_s = now_s + REASSIGNMENT_STEP_EVERY_S
            self._reassigned = self.replication.drive_reassignments(reassignment_targets(self.metadata))
            quorum = self.metadata_quorum
            if quorum is not None and quorum.leads:
                for key, voters in self._reassigned:
                    self.membership_facts.reassignment_completed(key, voters)
                self._record_membership_facts()

    def _record_membership_facts(self):
        """On the active controller: propose the membership facts heard of (registrations,
        finished moves; the brokers this one was started with register here), so every change
        builds on them; returns the head (None where changes cannot be taken, see MetadataQuorum.head)."""
        quorum = self.metadata_quorum
        head = quorum.head(self.metadata) if quorum is not None else None
        if head is None:
            return None
        for broker_id, address in self.config.peers.items():
            if broker_id not in head.brokers and broker_id not in head.decommissioned:
                self.membership_facts.register(broker_id, address)
        if not self.membership_facts:
            return head
        image = self.membership_facts.fold(head, self.logger)
        if image is head:
            return head
        try:
            quorum.propose(image)
        except (NotLeaderForPartitionError, RecordTooLargeError) as error:
            self.logger.warning("membership_record_failed", error=str(error))
            return quorum.head(self.metadata)
        self.logger.info("membership_recorded", version=image.version, brokers=sorted(image.brokers))
        return quorum.head(self.metadata)

    def _housekeeping(self) -> None:
        now_ms = int(time.time() * 1000)
        quorum = self.metadata_quorum
        replicas = [*self.replicas.values(), *([quorum.replica] if quorum is not None else [])]
        for replica in replicas:
            try:
                replica.run_housekeeping(now_ms)
            except CorruptDataError as error:  # compaction read a damaged batch: repair, don't die
                self.replication.report_damage(replica.key, error)
            except OSError as error:
                self.logger.error("housekeeping_failed", partition=f"{replica.topic}-{replica.partition}", error=str(error))
        self._scrub(replicas)
        self.backpressure.sweep()

    def _scrub(self, replicas: list) -> None:
        """Spend SCRUB_BYTES_PER_TURN crc-checking the replicas' closed segments, round robin
        from where the last turn stopped (PartitionLog.scrub); damage found goes to repair."""
        budget = SCRUB_BYTES_PER_TURN
        start = self._scrub_next % len(replicas) if replicas else 0
        turn = replicas[start:] + replicas[:start]
        for done, replica in enumerate(turn):
            if budget <= 0:
                self._scrub_next = start + done
                return
            try:
                budget -= replica.log.scrub(min(budget, SCRUB_BYTES_PER_TURN // 8))
            except CorruptDataError as error:
                self.replication.report_damage(replica.key, error)
            except (OSError, ValueError) as error:  # ValueError: its log closed meanwhile
                self.logger.error("scrub_failed", partition=f"{replica.topic}-{replica.partition}", error=str(error))

