"""Consumer: read records by offset from assigned partitions, with prefetching fetches per broker.

    consumer = Consumer("tcp://127.0.0.1:9092")
    consumer.assign([TopicPartition("orders", 0)])
    consumer.seek_to_beginning()
    for record in consumer.poll(timeout=1.0):
        print(record.offset, record.key, record.value)
    consumer.close()

or, in a consumer group, which shares the topics' partitions among its members and stores how
far each got (committed offsets):

    consumer = Consumer("tcp://127.0.0.1:9092", group_id="billing")
    consumer.subscribe(["orders"], on_assign=print, on_revoke=print)
    try:
        while True:
            for record in consumer.poll(timeout=1.0):
                handle(record)
    finally:
        consumer.close()  # commits (with auto-commit) and leaves the group at once

One fetch is in flight per broker at any time: as soon as a response arrives the next fetch goes
out, so the broker reads ahead while the caller processes. Batches are CRC-checked client side
and decoded only when poll() hands their records out.

Group membership runs inside poll(): there is no background thread, so poll() must be called
at least once per session_timeout_ms, or the coordinator counts the consumer as gone and gives
its partitions to the others (the next poll() then calls on_lost and joins again). The
rebalance callbacks and the commit before a revocation run inside poll() too, and may make it
take longer than its timeout (as in Kafka); heartbeats never do. distlog/client/group.py says
how membership works.

Nothing poll() does waits on one broker: fetches and the ListOffsets that resolve a seek to the
beginning or end go out pipelined, one of each per broker, and metadata is looked up again only
in bounded, backed-off attempts (ClusterView.refresh_soon). So poll(timeout) returns within its
timeout, with what the reachable brokers sent, while another broker is paused or a partition is
between leaders; a partition whose leader does not answer just has no records yet.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from itertools import repeat
from typing import NamedTuple

import numpy as np
import zmq

from distlog.client.cluster import ClusterView
from distlog.client.deadline import Deadline
from distlog.client.errors import RequestTimedOutError
from distlog.client.group import GroupClient
from distlog.client.offsets import list_offsets
from distlog.log.batch import HEADER_SIZE, ROW_SIZE, CorruptBatchError, RecordBatch, iter_batches
from distlog.log.records import batch_records
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, FetchRequest, ListOffsetsRequest


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list


_RESET_POLICIES = {"earliest": EARLIEST_TIMESTAMP, "latest": LATEST_TIMESTAMP, "none": None}
# How long poll() sleeps at most between turns: a partition without a leader is looked up again,
# and an expired request resent, this soon after it is due.
_TURN_S = 0.1
# A fetch unanswered this long past its long poll makes the consumer check whether the leader
# moved (a follower elects a new one 0.5-0.9 s after it last heard from the old).
LEADER_CHECK_AFTER_S = 1.0
# Errors after which the partition's leader may have moved: look it up again (epoch kept).
_LEADER_MOVED = frozenset({ErrorCode.NOT_LEADER, ErrorCode.BROKER_NOT_AVAILABLE})
# How long close() gives the last commit and the leave heartbeat together, by default.
CLOSE_TIMEOUT_S = 5.0


class _PartitionState:
    __slots__ = ("position", "fetch_offset", "pending_reset", "batches", "decoded", "decoded_end", "cursor",
                 "high_watermark", "log_start_offset", "error")

    def __init__(self):
        self.position = None  # next offset poll() returns
        self.fetch_offset = None  # next offset to ask the broker for (ahead of position when prefetched)
        self.pending_reset = None  # EARLIEST_TIMESTAMP / LATEST_TIMESTAMP to resolve before fetching
        self.batches = deque()  # fetched, not yet returned RecordBatches
        self.decoded = None  # records of the batch poll() is handing out, from `cursor` on
        self.decoded_end = 0  # the offset after that batch
        self.cursor = 0
        self.high_watermark = -1
        self.log_start_offset = -1
        self.error = None  # raised by poll() once the records before it are handed out, until a seek

    def seek(self, offset: int) -> None:
        self.position = self.fetch_offset = offset
        self.pending_reset = None
        self.batches.clear()
        self.decoded = None
        self.error = None


def _slices(payload: bytes, positions: np.ndarray, lengths: np.ndarray) -> list:
    """payload[pos:pos+len] for each record, None where the length is -1 (null)."""
    if len(lengths) and lengths.min() < 0:
        if lengths.max() < 0:
            return [None] * len(lengths)
        return [payload[p:p + n] if n >= 0 else None for p, n in zip(positions.tolist(), lengths.tolist())]
    ends = (positions + lengths).tolist()
    return [payload[p:e] for p, e in zip(positions.tolist(), ends)]


def decode_batch(tp: TopicPartition, batch: RecordBatch, min_offset: int) -> list:
    """ConsumerRecords of `batch` at offsets >= min_offset, decoded column-wise (no numpy per record).
    A control batch has none for the application: its offsets are passed over."""
    if batch.is_control:
        return []
    n = batch.record_count
    arrays = batch.arrays()
    key_bytes = int(np.maximum(arrays.key_lengths, 0).sum())
    value_bytes = int(np.maximum(arrays.value_lengths, 0).sum())
    if batch.batch_length - HEADER_SIZE - n * ROW_SIZE > key_bytes + value_bytes:
        records = batch_records(batch)  # headers present: the general decoder handles them
        return [ConsumerRecord(tp.topic, tp.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers)
                for r in records if r.offset >= min_offset]
    start = int(np.searchsorted(arrays.offsets, min_offset)) if n and arrays.offsets[0] < min_offset else 0
    payload = bytes(arrays.payload[: key_bytes + value_bytes])
    keys = _slices(payload, arrays.key_positions[start:], arrays.key_lengths[start:])
    values = _slices(payload, arrays.value_positions[start:], arrays.value_lengths[start:])
    count = n - start
    # The cyclic GC is paused while the records are made: every 700 new tuples would start a
    # collection, which was 60% of decoding (710 against 287 ns a record). The records hold
    # only strs, ints, bytes and None, so they cannot form a cycle the pause could leave behind;
    # the allocations still count, and the next collection runs as soon as GC is back on.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        # tuple.__new__ straight from map: namedtuple's own constructor costs a Python call per record.
        return list(map(tuple.__new__, repeat(ConsumerRecord, count), zip(
            repeat(tp.topic, count), repeat(tp.partition, count), arrays.offsets[start:].tolist(),
            arrays.timestamps_ms[start:].tolist(), keys, values, repeat(_NO_HEADERS, count),
        )))
    finally:
        if paused:
            gc.enable()


_NO_HEADERS = ()


class Consumer:
    """Reads assigned partitions, or those its consumer group gives it; behaves like
    kafka-python's KafkaConsumer (manual assign(), or subscribe() with a group_id)."""

    def __init__(
        self,
        bootstrap,
        group_id: str | None = None,
        *,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        client_id: str = "distlog-consumer",
        group_assignor: str | None = None,
        auto_offset_reset: str = "earliest",
        max_poll_records: int = 500,
        fetch_max_wait_ms: int = 500,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 32 * 1024 * 1024,
        max_partition_fetch_bytes: int = 8 * 1024 * 1024,
        request_timeout_ms: int = 30_000,
        consumer_timeout_ms: float | None = None,
        retry_backoff_ms: int = 100,
    ):
        if auto_offset_reset not in _RESET_POLICIES:
            raise ValueError(f"auto_offset_reset must be one of {sorted(_RESET_POLICIES)}, got {auto_offset_reset!r}")
        self.auto_offset_reset = auto_offset_reset
        self.max_poll_records = max_poll_records
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_min_bytes = fetch_min_bytes
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        self.request_timeout_s = request_timeout_ms / 1000
        self.retry_backoff_s = retry_backoff_ms / 1000
        self.consumer_timeout_s = None if consumer_timeout_ms is None else consumer_timeout_ms / 1000
        self._cluster = ClusterView(bootstrap, request_timeout_s=self.request_timeout_s)
        self._states: dict = {}
        self._in_flight: dict = {}  # endpoint -> (cid, sent_at_s, {tp: fetch_offset at send})
        self._offsets_in_flight: dict = {}  # endpoint -> (cid, sent_at_s, {tp: pending_reset at send})
        self._throttled_until: dict = {}  # endpoint -> monotonic time: it answered THROTTLING, fetch again then
        self._leaderless: set = set()  # topics with an assigned partition whose leader is not known
        self._poller = zmq.Poller()
        self._registered: set = set()
        self._turn = 0
        self._closed = False
        self._counters = {"records_consumed": 0, "bytes_fetched": 0, "fetch_responses": 0, "fetch_errors": 0,
                          "fetches_throttled": 0}
        self.group_id = group_id
        self._group = None if group_id is None else GroupClient(
            self, group_id, client_id=client_id, session_timeout_ms=session_timeout_ms, assignor=group_assignor,
            enable_auto_commit=enable_auto_commit, auto_commit_interval_ms=auto_commit_interval_ms,
            make_tp=TopicPartition)

    # -------------------------------------------------------------------------- assignment

    def assign(self, partitions) -> None:
        """Read exactly these partitions (replaces any earlier assignment). Unknown topics raise.
        With a group_id, commits go to the group outside its membership (allowed only while
        the group has no members)."""
        if self._group is not None and self._group.membership.active:
            raise ValueError("the consumer is subscribed: unsubscribe() before assigning partitions by hand")
        partitions = [TopicPartition(*tp) for tp in partitions]
        for tp in partitions:
            info = self._cluster.topic(tp.topic)
            if not 0 <= tp.partition < info.partition_count:
                raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                   f"topic '{tp.topic}' has partitions 0..{info.partition_count - 1}, not {tp.partition}"
                                   " (a partition number within that range; `distlog topic describe` lists them)")
        states = {}
        for tp in partitions:
            states[tp] = self._states.get(tp) or _PartitionState()
            if states[tp].position is None and states[tp].pending_reset is None:
                states[tp].pending_reset = _RESET_POLICIES[self.auto_offset_reset]
        self._states = states
        self._in_flight.clear()
        self._offsets_in_flight.clear()

    def assignment(self) -> set:
        """The partitions this consumer reads now: assigned, or given by its group."""
        return set(self._states)

    # ------------------------------------------------------------------------- consumer group

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None) -> None:
        """Join the consumer group (group_id) for `topics`; its coordinator shares their partitions
        among the members, and poll() takes them up. Each callback gets a list of TopicPartition:
        on_assign after partitions were given to this consumer (seeked to their committed
        offsets, or reset by auto_offset_reset where none is), on_revoke before they are taken
        away (their positions still there to commit; auto-commit commits them right after),
        on_lost once they were lost (fenced, or the session expired: nothing is committed, as
        another member may own them already); on_lost defaults to on_revoke."""
        if self._group is None:
            raise ValueError("subscribe() needs a group_id (Consumer(bootstrap, group_id=...)); "
                             "without one, assign() partitions by hand")
        topics = [topics] if isinstance(topics, str) else list(topics)
        if not topics:
            raise ValueError("subscribe to at least one topic (unsubscribe() leaves the group)")
        if self._states and not self._group.membership.active:
            raise ValueError("partitions are assigned by hand: unsubscribe() before subscribing")
        self._group.on_assign, self._group.on_revoke, self._group.on_lost = on_assign, on_revoke, on_lost
        self._group.membership.subscribe(topics)

    def subscription(self) -> set:
        """The topics subscribed to (empty when not subscribed)."""
        return set(self._group.membership.subscription) if self._group is not None else set()

    def unsubscribe(self, timeout: float | None = None) -> None:
        """Leave the group (revoking, and with auto-commit committing, what it gave this consumer),
        or drop a manual assignment."""
        if self._group is not None and self._group.membership.active:
            self._group.leave(Deadline(CLOSE_TIMEOUT_S if timeout is None else timeout),
                              commit=self._group.enable_auto_commit)
        self.assign([])

    def commit(self, offsets: dict | None = None, asynchronous: bool = False, timeout: float | None = None) -> None:
        """Store in the group how far this consumer got: `offsets` ({TopicPartition: the offset of
        the next record to read}), by default the position of every partition it reads. Waits
        for the coordinator's answer (up to `timeout`, default request_timeout_ms) unless
        `asynchronous`, whose failures are only logged. CommitFailedError when the group no
        longer counts this consumer in (its partitions are then someone else's)."""
        group = self._require_group("commit()")
        offsets = self._positions(self._states) if offsets is None else {
            TopicPartition(*tp): int(offset) for tp, offset in offsets.items()}
        group.commit(offsets, Deadline(self.request_timeout_s if timeout is None else timeout), asynchronous)

    def committed(self, partitions, timeout: float | None = None) -> dict:
        """{TopicPartition: the group's committed offset, or None where it has none}, asked now."""
        group = self._require_group("committed()")
        partitions = [TopicPartition(*tp) for tp in partitions]
        return group.committed(partitions, Deadline(self.request_timeout_s if timeout is None else timeout))

    def _require_group(self, what: str) -> GroupClient:
        if self._group is None:
            raise ValueError(f"{what} needs a group_id (Consumer(bootstrap, group_id=...))")
        return self._group

    def _positions(self, partitions) -> dict:
        """{tp: position} of those of `partitions` this consumer reads and knows a position of."""
        out = {}
        for tp in partitions:
            state = self._states.get(tp)
            if state is not None and state.position is not None and state.pending_reset is None:
                out[tp] = state.position
        return out

    def _add_partitions(self, offsets: dict) -> None:
        """Start reading partitions the group gave: at {tp: offset}, or auto_offset_reset where None."""
        policy = _RESET_POLICIES[self.auto_offset_reset]
        for tp, offset in offsets.items():
            state = self._states[tp] = _PartitionState()
            if offset is not None:
                state.seek(offset)
            elif policy is None:
                state.error = DistlogError(ErrorCode.OFFSET_OUT_OF_RANGE, (
                    f"{tp.topic}-{tp.partition} has no committed offset in group '{self.group_id}' and "
                    "auto_offset_reset is 'none' (seek() it, or commit an offset for it)"))
            else:
                state.pending_reset = policy

    def _drop_partitions(self, partitions) -> None:
        for tp in partitions:
            self._states.pop(tp, None)

    def seek(self, partition, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._state(partition).seek(offset)

    def seek_to_beginning(self, *partitions) -> None:
        """Next poll() starts at each partition's log start offset (all assigned ones by default)."""
        self._reset_to(partitions, EARLIEST_TIMESTAMP)

    def seek_to_end(self, *partitions) -> None:
        """Next poll() returns only records produced from now on."""
        self._reset_to(partitions, LATEST_TIMESTAMP)

    def _reset_to(self, partitions, timestamp: int) -> None:
        for tp in partitions or list(self._states):
            state = self._state(tp)
            state.seek(0)
            state.position = state.fetch_offset = None
            state.pending_reset = timestamp  # resolved with ListOffsets on the next poll/position

    def position(self, partition, timeout: float | None = None) -> int:
        """The offset of the next record poll() will return for `partition`; looking it up (after
        a seek to the beginning or end) takes up to `timeout` seconds (default request_timeout_ms),
        then RequestTimedOutError."""
        state = self._state(partition)
        if state.pending_reset is not None:
            self._run_until(lambda: state.pending_reset is None,
                            Deadline(self.request_timeout_s if timeout is None else timeout))
        if state.pending_reset is not None:
            tp = TopicPartition(*partition)
            raise RequestTimedOutError(f"the position of {tp.topic}-{tp.partition} could not be looked up within "
                                       f"{self.request_timeout_s if timeout is None else timeout:.3g} s: its leader did not answer")
        return state.position

    def partitions_for_topic(self, topic: str, timeout: float | None = None) -> list:
        """The topic's partition numbers, looked up within `timeout` seconds (default request_timeout_ms)."""
        return list(range(self._cluster.topic(topic, timeout).partition_count))

    def topics(self) -> list:
        """Every topic's name (kafka-python's KafkaConsumer.topics(); internal ones left out)."""
        self._cluster.refresh()
        return sorted(name for name in self._cluster.topics if not name.startswith("__"))

    list_topics = topics  # the confluent-kafka name
    partitions_for = partitions_for_topic  # the producer's name for it, so either works on both

    def beginning_offsets(self, partitions, timeout: float | None = None) -> dict:
        """{TopicPartition: its log start offset}, asked of each partition's leader now (as
        kafka-python's KafkaConsumer.beginning_offsets); any partition, assigned or not."""
        return self._offsets({TopicPartition(*tp): EARLIEST_TIMESTAMP for tp in partitions}, timeout)

    def end_offsets(self, partitions, timeout: float | None = None) -> dict:
        """{TopicPartition: its high watermark}: the offset the next record will get, one past the
        last one a consumer can read."""
        return self._offsets({TopicPartition(*tp): LATEST_TIMESTAMP for tp in partitions}, timeout)

    def offsets_for_times(self, timestamps: dict, timeout: float | None = None) -> dict:
        """{TopicPartition: timestamp_ms} -> {TopicPartition: the first offset whose record's
        timestamp is >= it, or None when no record is that new}; seek() there to replay from a time."""
        for timestamp_ms in timestamps.values():
            if timestamp_ms < 0:
                raise ValueError(f"timestamps are milliseconds since the epoch (>= 0), got {timestamp_ms}")
        found = self._offsets({TopicPartition(*tp): ts for tp, ts in timestamps.items()}, timeout)
        return {tp: None if offset < 0 else offset for tp, offset in found.items()}

    def _offsets(self, requests: dict, timeout: float | None) -> dict:
        answers = list_offsets(self._cluster, requests, self.request_timeout_s if timeout is None else timeout)
        return {tp: answers[tp] for tp in requests}

    def metrics(self) -> dict:
        """Counters since the consumer was made: records_consumed (handed out by poll()),
        bytes_fetched, fetch_responses, fetch_errors, fetches_throttled (a broker at its limits
        answered THROTTLING; fetching from it paused for retry_backoff_ms); and now: assigned_partitions and
        records_lag_max (the most records any assigned partition has past this consumer's
        position, as of the last fetch; -1 before one)."""
        lags = [state.high_watermark - state.position for state in self._states.values()
                if state.high_watermark >= 0 and state.position is not None]
        return {**self._counters, "assigned_partitions": len(self._states),
                "records_lag_max": max(lags) if lags else -1}

    def highwater(self, partition) -> int:
        """The partition's high watermark as of the last fetch (-1 before any)."""
        return self._state(partition).high_watermark

    def _state(self, partition) -> _PartitionState:
        tp = TopicPartition(*partition)
        state = self._states.get(tp)
        if state is None:
            raise ValueError(f"{tp.topic}-{tp.partition} is not assigned to this consumer (assign it first)")
        return state

    # ---------------------------------------------------------------------------------- poll

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list:
        """Up to max_records (default max_poll_records) records, waiting up to `timeout` seconds
        for some if none are buffered. Partitions take turns, so a busy one cannot starve the rest."""
        limit = self.max_poll_records if max_records is None else max_records
        if limit < 1:
            raise ValueError(f"max_records must be at least 1, got {limit}")
        self._wait_for_data(timeout)
        out: list = []
        states = list(self._states.items())
        if states:
            self._turn = (self._turn + 1) % len(states)
            states = states[self._turn:] + states[:self._turn]
        for tp, state in states:
            while len(out) < limit and (state.decoded or state.batches):
                if not state.decoded:
                    batch = state.batches.popleft()
                    state.decoded = decode_batch(tp, batch, state.position)
                    state.decoded_end = batch.last_offset + 1
                    state.cursor = 0
                    if not state.decoded:  # every record was below the position (after a seek)
                        state.position = state.decoded_end
                        continue
                taken = state.decoded[state.cursor:state.cursor + limit - len(out)]
                out.extend(taken)
                state.cursor += len(taken)
                if state.cursor == len(state.decoded):
                    state.decoded = None
                    state.position = state.decoded_end
                else:
                    state.position = state.decoded[state.cursor].offset
        self._counters["records_consumed"] += len(out)
        if out:
            self._prefetch()
        return out

    def poll_batches(self, timeout: float = 1.0) -> list:
        """The fast path: [(TopicPartition, RecordBatch, first_offset)] without decoding records.
        Records of a batch below first_offset were skipped by a seek and are not part of the
        result. Records poll() already decoded but not yet returned come back through poll() only.
        Control batches (a Raft leader's marker) are passed over, as poll() passes their records."""
        self._wait_for_data(timeout)
        taken = []
        for tp, state in self._states.items():
            if state.decoded:
                continue
            while state.batches:
                batch = state.batches.popleft()
                if not batch.is_control:
                    taken.append((tp, batch, state.position))
                    self._counters["records_consumed"] += batch.last_offset + 1 - max(state.position, batch.base_offset)
                state.position = batch.last_offset + 1
        if taken:
            self._prefetch()
        return taken

    def _prefetch(self) -> None:
        """Keep the pipeline full while the caller works. Best effort: the positions already moved
        past the records being returned, so raising here would lose them; the next poll() tries
        again and reports what still fails."""
        try:
            self._send_fetches()
        except DistlogError:
            pass

    def _wait_for_data(self, timeout: float) -> None:
        """Fetch until some partition has data buffered or `timeout` seconds pass."""
        if self._closed:
            raise RuntimeError("the consumer is closed")
        self._run_until(self._has_data, Deadline(timeout))

    def _has_data(self) -> bool:
        for state in self._states.values():
            if state.error is not None and not (state.decoded or state.batches):
                raise state.error
        return any(state.decoded or state.batches for state in self._states.values())

    def _run_until(self, done, deadline: Deadline) -> None:
        """Send what is due, take in what arrived, until done() or the deadline; one turn at least."""
        while True:
            if self._group is not None:
                if self._group.in_flight:
                    self._receive()  # a group answer gets in even while records stay buffered
                self._group.turn()
            self._look_up_leaders(deadline)
            self._send_offset_requests()
            self._send_fetches()
            if done():
                return
            remaining_s = deadline.remaining_s()
            if remaining_s <= 0:
                return
            if self._poller.poll(int(min(remaining_s, _TURN_S) * 1000) + 1):
                self._receive()
            self._expire_requests()

    def __iter__(self):
        idle_since = time.monotonic()
        while True:
            records = self.poll(timeout=0.5)
            if records:
                idle_since = time.monotonic()
                yield from records
            elif self.consumer_timeout_s is not None and time.monotonic() - idle_since >= self.consumer_timeout_s:
                return

    # ---------------------------------------------------------------------------- fetching

    def _look_up_leaders(self, deadline: Deadline) -> None:
        if self._leaderless:
            topics, self._leaderless = self._leaderless, set()
            self._cluster.refresh_soon(topics, deadline.cap(self.request_timeout_s))

    def _send_offset_requests(self) -> None:
        """ListOffsets for partitions waiting for a seek to the beginning or end, pipelined like fetches."""
        by_endpoint: dict = {}
        for tp, state in self._states.items():
            if state.pending_reset is not None:
                endpoint = self._leader(tp)
                if endpoint is not None and endpoint not in self._offsets_in_flight:
                    by_endpoint.setdefault(endpoint, {})[tp] = state.pending_reset
        for endpoint, asked in by_endpoint.items():
            request = ListOffsetsRequest([{"topic": tp.topic, "partition": tp.partition, "timestamp_ms": timestamp}
                                          for tp, timestamp in asked.items()])
            cid = self._send(endpoint, request)
            if cid is not None:
                self._offsets_in_flight[endpoint] = (cid, time.monotonic(), asked)

    def _on_offsets_response(self, endpoint: str, response, asked: dict) -> None:
        if not hasattr(response, "partitions"):  # an ErrorResponse
            for tp in asked:
                self._cluster.invalidate(tp.topic, tp.partition)
            return
        for entry in response.partitions:
            tp = TopicPartition(entry["topic"], entry["partition"])
            state = self._states.get(tp)
            if state is None or state.pending_reset is None or state.pending_reset != asked.get(tp):
                continue  # unassigned or seeked elsewhere since
            if entry["error_code"]:
                self._on_partition_error(tp, entry["error_code"], entry["error_message"])
            else:
                state.seek(entry["offset"])

    def _leader(self, tp: TopicPartition):
        """The partition leader's endpoint, or None (and it is looked up on the next turn)."""
        endpoint = self._cluster.leader_endpoint(tp.topic, tp.partition)
        if endpoint is None:
            self._leaderless.add(tp.topic)
        return endpoint

    def _send(self, endpoint: str, request) -> int | None:
        """Pipeline a request to `endpoint`; its cid, or None if it cannot go out right now."""
        connection = self._cluster.connection(endpoint)
        if endpoint not in self._registered:
            self._poller.register(connection.socket, zmq.POLLIN)
            self._poller.register(connection.watch_disconnects(), zmq.POLLIN)
            self._registered.add(endpoint)
        if connection.disconnected():  # catch up: a drop noticed from here on concerns this request
            self._lost_in_flight(endpoint)
        if not connection.link_up:
            return None  # sent now, it could vanish with the old connection; wait for the new one
        return connection.send(request)

    def _send_fetches(self) -> None:
        by_endpoint: dict = {}
        now_s = time.monotonic()
        for tp, state in self._states.items():
            if state.fetch_offset is None or state.pending_reset is not None or state.error is not None:
                continue
            if sum(b.batch_length for b in state.batches) >= self.max_partition_fetch_bytes:
                continue  # enough buffered; don't read further ahead
            endpoint = self._leader(tp)
            if endpoint is not None and endpoint not in self._in_flight and self._throttled_until.get(endpoint, 0) <= now_s:
                by_endpoint.setdefault(endpoint, []).append(tp)
        for endpoint, tps in by_endpoint.items():
            partitions = [{"topic": tp.topic, "partition": tp.partition, "fetch_offset": self._states[tp].fetch_offset,
                           "max_bytes": self.max_partition_fetch_bytes} for tp in tps]
            request = FetchRequest(self.fetch_max_wait_ms, self.fetch_min_bytes, self.fetch_max_bytes, partitions)
            cid = self._send(endpoint, request)
            if cid is not None:
                self._in_flight[endpoint] = (cid, time.monotonic(), {tp: self._states[tp].fetch_offset for tp in tps})
            elif not self._cluster.connection(endpoint).link_up:
                # The leader's connection is down (it crashed or restarts): leadership may have
                # moved, so look the leaders up again instead of waiting for that broker.
                for tp in tps:
                    self._cluster.invalidate(tp.topic, tp.partition)
                    self._leaderless.add(tp.topic)

    def _receive(self) -> None:
        # Every connection, not only those with a fetch in flight: an unread late reply or
        # connection event keeps its socket readable and the poll would return at once, forever.
        for endpoint in self._registered:
            connection = self._cluster.connection(endpoint)
            while True:
                try:
                    reply = connection.poll_reply()
                except DistlogError:
                    continue
                if reply is None:
                    break
                cid, response = reply
                for flights, on_response in ((self._in_flight, self._on_fetch_response),
                                             (self._offsets_in_flight, self._on_offsets_response)):
                    flight = flights.get(endpoint)
                    if flight is not None and flight[0] == cid:
                        del flights[endpoint]
                        on_response(endpoint, response, flight[2])
                        break
                else:
                    if self._group is not None:
                        self._group.on_reply(endpoint, cid, response)
                # else a late reply to a request we gave up on or that a seek made stale
            if connection.disconnected():
                # The broker went away (a restart, say) with requests unanswered: they are lost,
                # so send again once the connection is back rather than wait out request_timeout.
                self._lost_in_flight(endpoint)

    def _lost_in_flight(self, endpoint: str) -> None:
        self._in_flight.pop(endpoint, None)
        self._offsets_in_flight.pop(endpoint, None)
        if self._group is not None:
            self._group.on_disconnect(endpoint)

    def _on_fetch_response(self, endpoint: str, response, asked: dict) -> None:
        self._counters["fetch_responses"] += 1
        if getattr(response, "error_code", None) == ErrorCode.THROTTLING:
            # The broker holds too much for its clients (backpressure.py): ask it again later.
            self._counters["fetches_throttled"] += 1
            self._throttled_until[endpoint] = time.monotonic() + self.retry_backoff_s
            return
        if not hasattr(response, "partitions"):  # an ErrorResponse: look the leaders up before the next try
            self._counters["fetch_errors"] += 1
            for tp in asked:
                self._cluster.invalidate(tp.topic, tp.partition)
            return
        for entry in response.partitions:
            tp = TopicPartition(entry["topic"], entry["partition"])
            state = self._states.get(tp)
            if state is None or state.fetch_offset != asked.get(tp):
                continue  # unassigned or re-seeked since the fetch went out
            if entry["error_code"]:
                self._counters["fetch_errors"] += 1
                self._on_partition_error(tp, entry["error_code"], entry["error_message"])
                continue
            state.high_watermark = entry["high_watermark"]
            state.log_start_offset = entry["log_start_offset"]
            self._counters["bytes_fetched"] += len(entry["records"])
            try:
                for batch in iter_batches(entry["records"]):
                    if batch.last_offset >= state.fetch_offset:
                        state.batches.append(batch)
                        state.fetch_offset = batch.last_offset + 1
            except CorruptBatchError as error:
                # The broker checked this batch's crc before sending it, so it was damaged on the
                # way, or comes from a broker that does not check; a refetch may bring the same
                # bytes back, and retrying would spin forever in silence. Hand out what came
                # before it, then raise until the caller seeks.
                state.error = DistlogError(ErrorCode.CORRUPT_MESSAGE,
                                           f"{tp.topic}-{tp.partition}: the batch at offset {state.fetch_offset} is "
                                           f"corrupt ({error}); seek past it to skip it")

    def _on_partition_error(self, tp: TopicPartition, code: int, message: str) -> None:
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            policy = _RESET_POLICIES[self.auto_offset_reset]
            if policy is None:
                raise DistlogError(code, message)
            self._states[tp].pending_reset = policy
        elif code in _LEADER_MOVED or code == ErrorCode.CORRUPT_MESSAGE:
            # CORRUPT_MESSAGE: the leader found its copy damaged and steps down to repair it; the
            # next fetch goes to the new leader (a sole copy answers STORAGE_ERROR then).
            self._cluster.invalidate(tp.topic, tp.partition)
        elif code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            self._cluster.forget(tp.topic)
        elif code != ErrorCode.REQUEST_TIMED_OUT:
            raise DistlogError(code, message)

    def _expire_requests(self) -> None:
        """Give up on requests unanswered for too long, so they are sent again (their broker may
        be gone: its partitions' leaders are looked up again first)."""
        now_s = time.monotonic()
        slow = []
        for flights, limit_s in ((self._in_flight, self.request_timeout_s + self.fetch_max_wait_ms / 1000),
                                 (self._offsets_in_flight, self.request_timeout_s)):
            for endpoint, (cid, sent_at_s, asked) in list(flights.items()):
                if now_s - sent_at_s > limit_s:
                    del flights[endpoint]
                    for tp in asked:
                        self._cluster.invalidate(tp.topic, tp.partition)
                elif now_s - sent_at_s > self.fetch_max_wait_ms / 1000 + LEADER_CHECK_AFTER_S:
                    slow.append((flights, endpoint, cid, asked))
        if slow:
            # A paused or cut-off leader never answers NOT_LEADER: past its long poll and a
            # second more, look its partitions' leaders up, and ask the new leader instead.
            self._cluster.refresh_soon({tp.topic for _, _, _, asked in slow for tp in asked},
                                       min(1.0, self.request_timeout_s))
            for flights, endpoint, cid, asked in slow:
                if flights.get(endpoint, (None,))[0] == cid and any(
                        self._cluster.leader_endpoint(tp.topic, tp.partition) not in (endpoint, None) for tp in asked):
                    del flights[endpoint]

    def close(self, timeout: float | None = None) -> None:
        """With a group: commit (with auto-commit) and leave it at once, so the other members take
        over its partitions now, all within `timeout` seconds (default CLOSE_TIMEOUT_S); then
        close the connections. Call it in a `finally`."""
        if self._closed:
            return
        try:
            if self._group is not None:
                self._group.leave(Deadline(CLOSE_TIMEOUT_S if timeout is None else timeout),
                                  commit=self._group.enable_auto_commit)
        finally:
            self._closed = True
            self._cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
