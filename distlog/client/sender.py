"""The producer's sender thread: drains sealed batches, ships them to leaders, retries, resolves futures.

It owns every socket of the producer (ZeroMQ sockets are not thread-safe); user threads reach
it only through the RecordAccumulator, the PartitionCounts lookups below, and a WakePipe
poked once per batch. Per broker it keeps up to max_in_flight Produce requests outstanding, one
batch per partition per request so a partition's batches go out in order.

Every batch it takes ends in exactly one completion: acknowledged, failed, or — when the
producer is closed with a timeout that passed (the accumulator is aborted) or the loop dies of
a bug — failed with the reason, so no future is left waiting forever.

One thread serves every partition, so nothing in the loop may wait on one broker: produce
requests are pipelined, a leader that does not answer only fills its own in-flight window (its
batches wait and retry within delivery_timeout_ms while the others flow), and a metadata lookup
holds the loop at most METADATA_ATTEMPT_S, asking other brokers when one is slow
(ClusterView.request_any). A partition without a leader (an election) waits, looked up again
with backoff (ClusterView.refresh_soon).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import zmq

from distlog.client.accumulator import ProducerBatch, RecordAccumulator
from distlog.client.cluster import ClusterView
from distlog.client.errors import ProducerClosedError, RequestTimedOutError
from distlog.client.sequencer import Sequencer, by_order
from distlog.protocol.errors import DistlogError, ErrorCode, is_retriable
from distlog.protocol.messages import ErrorResponse, ProduceRequest

# Errors after which the partition's leader may have moved: look it up again before retrying. A
# leader that did not answer in time may have been paused or cut off, and replaced meanwhile.
_REFRESH_ON = frozenset({ErrorCode.NOT_LEADER, ErrorCode.BROKER_NOT_AVAILABLE, ErrorCode.REQUEST_TIMED_OUT})
# Refusals that say nothing is wrong with the broker, only "not now" (at its limits) or "not yet"
# (an earlier batch is missing, and this one is held behind it): the retry waits retry_backoff_ms
# each time, not longer and longer, or a throttled producer would slow to one batch a second.
_STEADY_BACKOFF_ON = frozenset({ErrorCode.THROTTLING, ErrorCode.OUT_OF_ORDER_SEQUENCE})
# Answers a leader gives before anything of the batch is proposed: that attempt wrote nothing.
# Every other failure (a timeout, a lost connection, NOT_LEADER from a leader that lost its
# leadership with the batch proposed, ...) leaves it open whether the batch is in the log.
REFUSED_UNWRITTEN = frozenset({ErrorCode.OUT_OF_ORDER_SEQUENCE, ErrorCode.MESSAGE_TOO_LARGE,
                               ErrorCode.CORRUPT_MESSAGE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                               ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_TOPIC, ErrorCode.THROTTLING})
# The longest one metadata lookup may hold the sender thread, and with it every partition's
# traffic; a topic's partition count that did not come in time is asked for again (PartitionCounts).
METADATA_ATTEMPT_S = 1.0
# A produce unanswered this long makes the sender check whether its partition's leader moved
# (a follower elects a new leader 0.5-1 s after it last heard from the old one).
LEADER_CHECK_AFTER_S = 1.0


@dataclass(frozen=True)
class SenderSettings:
    acks: int
    retries: int
    retry_backoff_s: float
    request_timeout_s: float
    delivery_timeout_s: float
    max_in_flight: int
    max_request_bytes: int
    idempotent: bool = False
    metadata_max_age_s: float = 300.0  # Kafka's metadata.max.age.ms: look again even without errors


class PartitionCounts:
    """Topic partition counts that user threads ask for and the sender thread looks up."""

    def __init__(self):
        self._arrived = threading.Condition()
        self.counts: dict = {}  # read without the lock on the send() fast path
        self._errors: dict = {}
        self._wanted: set = set()

    def request(self, topic: str) -> None:
        with self._arrived:
            self._errors.pop(topic, None)
            self._wanted.add(topic)

    def request_again(self, topic: str) -> None:
        """Forget the known count and ask for it anew (partitions may have been added)."""
        with self._arrived:
            self.counts.pop(topic, None)
            self._errors.pop(topic, None)
            self._wanted.add(topic)

    def wait(self, topic: str, timeout_s: float) -> int:
        """The topic's partition count, once the sender looked it up; a lookup that timed out is
        asked for again until timeout_s, other errors are raised."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while topic not in self.counts:
                remaining = deadline - time.monotonic()
                error = self._errors.get(topic)
                if error is not None:
                    if error.code != ErrorCode.REQUEST_TIMED_OUT or remaining <= 0:
                        raise error
                    del self._errors[topic]
                    self._wanted.add(topic)  # the sender asks again on its next turn
                if remaining <= 0:
                    raise RequestTimedOutError(
                        f"no metadata for topic '{topic}' within max_block_ms={timeout_s * 1000:.0f}; is the cluster up?")
                self._arrived.wait(min(remaining, 0.5))
            return self.counts[topic]

    def has_wanted(self) -> bool:
        return bool(self._wanted)

    def take_wanted(self) -> set:
        with self._arrived:
            wanted, self._wanted = self._wanted, set()
            return wanted

    def resolve(self, topic: str, count: int | None = None, error: Exception | None = None) -> None:
        with self._arrived:
            if error is not None:
                self._errors[topic] = error
            else:
                self.counts[topic] = count
            self._arrived.notify_all()


class WakePipe:
    """How user threads wake the sender thread: a non-blocking pipe it polls next to its sockets.

    The sender closes it when it exits, under the lock wake() takes, so a late wake() (flush
    after close) is a no-op rather than a write to a file descriptor number reused meanwhile."""

    def __init__(self):
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"x")
            except BlockingIOError:
                pass  # the pipe is full: the sender wakes anyway

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.read_fd)
                os.close(self._write_fd)


class Sender:
    """The loop the sender thread runs until the producer closes and every batch is finished."""

    def __init__(self, accumulator: RecordAccumulator, cluster: ClusterView, settings: SenderSettings,
                 partition_counts: PartitionCounts, wake_pipe: WakePipe):
        self.accumulator = accumulator
        self.cluster = cluster
        self.settings = settings
        self.partition_counts = partition_counts
        self.wake_pipe = wake_pipe
        self.poller = zmq.Poller()
        self.poller.register(wake_pipe.read_fd, zmq.POLLIN)
        self.registered: set = set()
        self.waiting: list = []  # batches not yet sent (new, or waiting to retry)
        self.in_flight: dict = {}  # endpoint -> {cid: (sent_at_s, [batches])}
        # Producer.metrics(): written by this thread only, read by any (whole ints under the GIL).
        self.counters = {"records_sent": 0, "records_failed": 0, "batches_sent": 0, "bytes_sent": 0,
                         "retries": 0, "requests_sent": 0, "requests_throttled": 0}
        self.sequencer = Sequencer() if settings.idempotent else None
        # Idempotent: `waiting` keeps each partition's batches in number order on its own (new
        # ones arrive in order, _send keeps the order it finds); only a retry, appended at the
        # end, breaks it. Sorting every turn would cost O(n log n) per loop with a long queue.
        self._retry_appended = False
        self._metadata_checked_s = time.monotonic()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as error:
            self._fail_everything(DistlogError(ErrorCode.UNKNOWN_SERVER_ERROR, f"the producer's sender thread failed: {error!r}"))
            raise
        finally:
            self.cluster.close()
            self.wake_pipe.close()

    def _loop(self) -> None:
        while True:
            if self.accumulator.aborted:
                self._fail_everything(ProducerClosedError("the producer was closed before this record was delivered"))
                return
            now_s = time.monotonic()
            busy = {(b.topic, b.partition) for b in self.waiting}
            drained = self.accumulator.drain(now_s, busy)
            if self.sequencer is not None:
                for batch in drained:
                    self.sequencer.number(batch)
            self.waiting.extend(drained)
            wanted = self.partition_counts.take_wanted()
            if now_s - self._metadata_checked_s >= self.settings.metadata_max_age_s:
                # A topic deleted and created again with another partition count, or leaders that
                # moved without any request failing, are only noticed by looking again.
                self._metadata_checked_s = now_s
                wanted |= set(self.partition_counts.counts)
            if wanted:
                self._look_up(wanted)
            self._send(now_s)
            if self.accumulator.closed and not self.waiting and not any(self.in_flight.values()) \
                    and self.accumulator.is_empty():
                return
            self._poll(self._timeout_ms(now_s))
            self._receive()
            self._expire(time.monotonic())

    def _fail_everything(self, error: DistlogError) -> None:
        """Complete every batch this thread holds or could still take with `error`."""
        self.accumulator.close()  # later send() calls raise instead of queueing for nobody
        batches = self.waiting + self._batches_in_flight()
        self.waiting, self.in_flight = [], {}
        for batch in batches + self.accumulator.drain(time.monotonic()):
            self._finish(batch, -1, error)

    # ------------------------------------------------------------------------------ metadata

    def _look_up(self, topics: set) -> None:
        try:
            self.cluster.refresh(sorted(topics), timeout_s=min(METADATA_ATTEMPT_S, self.settings.request_timeout_s))
        except DistlogError as error:
            for topic in topics:
                self.partition_counts.resolve(topic, error=error)
            return
        for topic in topics:
            info = self.cluster.topics.get(topic)
            if info is None:
                self.partition_counts.resolve(topic, error=DistlogError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    f"topic '{topic}' does not exist (create it with `distlog topic create {topic}`)"))
            else:
                self.partition_counts.resolve(topic, info.partition_count)

    # ------------------------------------------------------------------------------- sending

    def _send(self, now_s: float) -> None:
        by_endpoint: dict = {}
        stale_topics = set()
        still_waiting = []
        # Take the list: _send_to may put batches back for a retry (a connection lost), and
        # those must land in the new list, not in one about to be replaced.
        waiting, self.waiting = self.waiting, []
        held = set()  # idempotent: partitions whose next batch cannot go, so no later one may
        if self.sequencer is not None:
            if self.sequencer.needs_renumbering:
                for batch in self.sequencer.renumber(waiting, self._keys_in_flight()):
                    waiting.remove(batch)
                    self._finish(batch, -1, DistlogError(
                        ErrorCode.REQUEST_TIMED_OUT, "an earlier batch of this partition failed for good and this one "
                        "may have been written by an earlier attempt; sending it again under a new producer id "
                        "could write it twice, so it failed, and may or may not be in the log"))
                held |= self.sequencer.needs_renumbering
            if self._retry_appended:
                waiting.sort(key=by_order)
                self._retry_appended = False
        for batch in waiting:
            key = (batch.topic, batch.partition)
            endpoint = None
            if batch.retry_at_s <= now_s and key not in held:
                endpoint = self.cluster.leader_endpoint(batch.topic, batch.partition)
                if endpoint is None:
                    stale_topics.add(batch.topic)
            if endpoint is None:
                still_waiting.append(batch)
                if self.sequencer is not None:
                    held.add(key)
                continue
            by_endpoint.setdefault(endpoint, []).append(batch)
        for endpoint, batches in by_endpoint.items():
            still_waiting.extend(self._send_to(endpoint, batches, now_s))
        self.waiting = still_waiting + self.waiting
        if stale_topics:  # the batches stay waiting meanwhile; their delivery timeout bounds the wait
            self.cluster.refresh_soon(stale_topics, timeout_s=min(METADATA_ATTEMPT_S, self.settings.request_timeout_s))

    def _send_to(self, endpoint: str, batches: list, now_s: float) -> list:
        """Send as many requests as the in-flight window allows; return the batches left over."""
        settings = self.settings
        connection = self.cluster.connection(endpoint)
        if endpoint not in self.registered:
            self.poller.register(connection.socket, zmq.POLLIN)
            self.poller.register(connection.watch_disconnects(), zmq.POLLIN)
            self.registered.add(endpoint)
        if connection.disconnected():  # before sending: a drop noticed later concerns what goes out now
            self._connection_lost(endpoint)
        if not connection.link_up:
            # Sent now, they could vanish with the old connection. The broker may be gone for
            # good (a crashed leader whose partitions a new leader took over): look the leaders
            # up again, so the batches go wherever leadership went (or here, once it is back).
            for batch in batches:
                self.cluster.invalidate(batch.topic, batch.partition)
            return batches
        in_flight = self.in_flight.setdefault(endpoint, {})
        left = batches
        while left and (len(in_flight) < settings.max_in_flight or settings.acks == 0):
            request_batches, left = self._next_request(left)
            if not request_batches:
                break  # everything left is held back (an idempotent partition's line is full)
            partitions = [{"topic": b.topic, "partition": b.partition, "records": b.data} for b in request_batches]
            request = ProduceRequest(acks=settings.acks, timeout_ms=int(settings.request_timeout_s * 1000), partitions=partitions)
            cid = connection.send(request)
            if cid is None:
                return request_batches + left  # not connected right now; try again on the next turn
            self.counters["requests_sent"] += 1
            for batch in request_batches:
                batch.attempts += 1
                if self.sequencer is not None:
                    self.sequencer.sent(batch)
            if settings.acks == 0:
                for batch in request_batches:
                    self._finish(batch, -1, None)
            else:
                in_flight[cid] = (now_s, request_batches)
        return left

    def _next_request(self, batches: list) -> tuple:
        """(batches for one request, the rest): one per partition, up to max_request_bytes.
        `rest` keeps the order of `batches`, so a partition's batches go out in order."""
        taken, rest, partitions, size = [], [], set(), 0
        for batch in batches:
            key = (batch.topic, batch.partition)
            fits = not taken or size + len(batch.data) <= self.settings.max_request_bytes
            if key in partitions or not fits or (self.sequencer is not None and not self.sequencer.may_send(batch)):
                rest.append(batch)
                partitions.add(key)  # a later batch of it must not overtake this one
                continue
            taken.append(batch)
            partitions.add(key)
            size += len(batch.data)
        return taken, rest

    def _poll(self, timeout_ms: int) -> None:
        events = dict(self.poller.poll(timeout_ms))
        if self.wake_pipe.read_fd in events:
            self.wake_pipe.drain()

    def _timeout_ms(self, now_s: float) -> int:
        timeout_s = self.accumulator.seconds_until_ready(now_s, {(b.topic, b.partition) for b in self.waiting})
        if self.partition_counts.has_wanted():
            timeout_s = 0.0
        if self.waiting:
            timeout_s = min(timeout_s, 0.01)
        return int(timeout_s * 1000)

    # ----------------------------------------------------------------------------- replies

    def _receive(self) -> None:
        # Every connection, not only those with requests in flight: an unread late reply or
        # connection event keeps its socket readable and the poll would return at once, forever.
        for endpoint in self.registered:
            connection = self.cluster.connection(endpoint)
            in_flight = self.in_flight.get(endpoint, {})
            while True:
                try:
                    reply = connection.poll_reply()
                except DistlogError:
                    continue  # an undecodable reply: the request will time out and be retried
                if reply is None:
                    break
                cid, response = reply
                entry = in_flight.pop(cid, None)
                if entry is not None:  # else a late reply to a request we already gave up on
                    self._on_response(entry[1], response)
            if connection.disconnected():
                self._connection_lost(endpoint)

    def _abandon(self, endpoint: str, cid: int) -> None:
        """Give up on a request: its shared-memory slots (Producer(shm=True)) are free again."""
        abandon = getattr(self.cluster.connection(endpoint), "abandon", None)  # test doubles may lack it
        if abandon is not None:
            abandon(cid)

    def _connection_lost(self, endpoint: str) -> None:
        """The connection dropped (a broker restart, say): what it carried unanswered is lost, so
        retry it now instead of waiting out request_timeout. As after a timeout, a batch whose
        acknowledgement was lost is written twice."""
        in_flight = self.in_flight.get(endpoint, {})
        lost = list(in_flight.values())
        for cid in in_flight:
            self._abandon(endpoint, cid)
        in_flight.clear()
        for _, batches in lost:
            for batch in batches:
                self._failed(batch, RequestTimedOutError(f"the connection to {endpoint} dropped before the produce reply"))

    def _on_response(self, batches: list, response) -> None:
        if isinstance(response, ErrorResponse):
            if response.error_code == ErrorCode.THROTTLING:  # nothing written; retried after a backoff
                self.counters["requests_throttled"] += 1
            for batch in batches:
                self._failed(batch, DistlogError(response.error_code, response.error_message))
            return
        results = {(r["topic"], r["partition"]): r for r in response.partitions}
        for batch in batches:
            result = results.get((batch.topic, batch.partition))
            if result is None:
                self._failed(batch, DistlogError(ErrorCode.UNKNOWN_SERVER_ERROR, "the broker's reply left out this partition"))
            elif result["error_code"] == ErrorCode.DUPLICATE_SEQUENCE and self.sequencer is not None:
                self._finish(batch, -1, None)  # written by an earlier attempt, where is no longer known
            elif result["error_code"]:
                self._failed(batch, DistlogError(result["error_code"], result["error_message"]))
            else:
                self._finish(batch, result["base_offset"], None)

    def _failed(self, batch: ProducerBatch, error: DistlogError) -> None:
        if error.code not in REFUSED_UNWRITTEN:
            batch.maybe_written = True
        settings = self.settings
        now_s = time.monotonic()
        past_deadline = now_s - batch.created_s >= settings.delivery_timeout_s
        retriable = is_retriable(error.code)
        if error.code == ErrorCode.OUT_OF_ORDER_SEQUENCE and self.sequencer is not None:
            # An earlier batch of the partition has not arrived: this one goes again after it.
            # If none is coming (it failed for good), the partition is renumbered first.
            retriable = True
            if not self.sequencer.has_earlier(batch, self.waiting + self._batches_in_flight()):
                self.sequencer.failed_for_good(batch)
        if retriable and batch.attempts <= settings.retries and not past_deadline:
            if error.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                self.cluster.forget(batch.topic)  # deleted and created again, maybe: epochs start over
            elif error.code in _REFRESH_ON:
                self.cluster.invalidate(batch.topic, batch.partition)  # look the leader up before the retry
            if error.code in _STEADY_BACKOFF_ON:
                batch.retry_at_s = now_s + settings.retry_backoff_s
            else:
                batch.retry_at_s = now_s + min(1.0, settings.retry_backoff_s * (2 ** min(batch.attempts - 1, 10)))
            self.counters["retries"] += 1
            self.waiting.append(batch)
            self._retry_appended = True
        else:
            self._finish(batch, -1, error)

    def _finish(self, batch: ProducerBatch, base_offset: int, error) -> None:
        if error is not None and self.sequencer is not None:
            self.sequencer.failed_for_good(batch)
        counters = self.counters
        if error is None:
            counters["records_sent"] += batch.record_count
            counters["batches_sent"] += 1
            counters["bytes_sent"] += len(batch.data)
        else:
            counters["records_failed"] += batch.record_count
        try:
            batch.complete(base_offset, error)
        finally:
            self.accumulator.release(batch)
            if self.sequencer is not None:
                self.sequencer.settled(batch)

    def _expire(self, now_s: float) -> None:
        settings = self.settings
        slow = []
        for endpoint, in_flight in self.in_flight.items():
            for cid, (sent_at_s, batches) in list(in_flight.items()):
                if now_s - sent_at_s >= settings.request_timeout_s:
                    del in_flight[cid]
                    self._abandon(endpoint, cid)  # its ring slots, if any, are free again
                    for batch in batches:
                        self._failed(batch, RequestTimedOutError(
                            f"no produce reply from {endpoint} within {settings.request_timeout_s:.3g} s"))
                elif now_s - sent_at_s >= LEADER_CHECK_AFTER_S:
                    slow.append((endpoint, cid, batches))
        if slow:
            self._leave_moved_leaders(slow)
        expired, kept = [], []
        for batch in self.waiting:
            (expired if now_s - batch.created_s >= settings.delivery_timeout_s else kept).append(batch)
        if expired:
            self.waiting = kept
            for batch in expired:
                self._finish(batch, -1, RequestTimedOutError(
                    f"records for {batch.topic}-{batch.partition} not delivered within delivery_timeout_ms="
                    f"{settings.delivery_timeout_s * 1000:.0f}: no leader reachable"))

    def _leave_moved_leaders(self, slow: list) -> None:
        """A paused or cut-off leader never answers NOT_LEADER: for requests unanswered for
        LEADER_CHECK_AFTER_S, look the leaders up, and resend to the new leader the batches whose
        partition moved (an idempotent retry is recognised there if the old leader had
        replicated it; a non-idempotent one may be written twice, as after any timeout)."""
        self.cluster.refresh_soon({b.topic for _, _, batches in slow for b in batches},
                                  timeout_s=min(METADATA_ATTEMPT_S, self.settings.request_timeout_s))
        for endpoint, cid, batches in slow:
            moved = any(self.cluster.leader_endpoint(b.topic, b.partition) not in (endpoint, None) for b in batches)
            if moved and self.in_flight.get(endpoint, {}).pop(cid, None) is not None:
                for batch in batches:
                    self._failed(batch, RequestTimedOutError(
                        f"no produce reply from {endpoint}, and leadership of {batch.topic}-{batch.partition} "
                        "moved elsewhere meanwhile"))

    # ------------------------------------------------------------------------ idempotence

    def _batches_in_flight(self) -> list:
        return [b for flights in self.in_flight.values() for _, batches in flights.values() for b in batches]

    def _keys_in_flight(self) -> set:
        return {(b.topic, b.partition) for b in self._batches_in_flight()}
