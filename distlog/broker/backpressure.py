"""Backpressure: bounds on what a broker holds for its clients, and the answer beyond them.

A client that sends faster than the cluster can answer, or reads slower than the broker
answers, would otherwise make the broker hold more and more for it:

  - requests parked for a later answer: produces waiting for their acks, fetches long-polling.
    Each costs bookkeeping and a look on every high watermark move, and a parked produce stands
    for bytes the followers still have to copy;
  - reply bytes handed to ZeroMQ that the client has not taken yet (a slow or stuck reader).
    A fetch reply is a zero-copy view of the log, so this is pinned memory and mapped pages;
  - requests queued in ZeroMQ before the broker reads them. The ROUTER's receive high-water mark
    bounds those per connection and pushes back through TCP (transports/zmq_transport.py).

For the first two the broker admits a Produce (acks 1 or all) or a Fetch only while it is under
its limits, and otherwise answers THROTTLING before doing anything with it: a throttled produce
wrote nothing, so its retry writes each record once. Kafka's answer to the same problem is
`queued.max.requests` and `queued.max.request.bytes` (stop reading the socket) plus quotas
(delay the answer); an explicit, retriable refusal is simpler here and tells the client what
happened. Producers back off and retry (and so block in send() once buffer_memory is full, and
raise after max_block_ms); consumers pause fetching from that broker for a backoff.

Pure: the broker hands in what it parks, releases and queues. A queued reply is followed by a
tracker (anything with a `done` attribute; ZeroMQ's MessageTracker in the broker) that says
when ZeroMQ let go of its bytes.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What a broker holds for its clients at most (the broker's --max-* options)."""

    parked_per_connection: int = 1_000  # a Producer keeps up to max_in_flight (10) per broker
    parked_total: int = 20_000
    parked_produce_bytes: int = 256 << 20  # Kafka's queued.max.request.bytes is unbounded; 256 MiB here
    unsent_reply_bytes_per_connection: int = 64 << 20  # a few of the biggest fetch answers


@dataclass
class _Parked:
    api: str
    received_s: float
    produce_bytes: int


class Backpressure:
    """Counts what is parked and what is unsent, per connection and in all; says when to refuse."""

    def __init__(self, limits: Limits = Limits()):
        self.limits = limits
        self._parked: dict = {}  # (peer, cid) -> _Parked
        self._parked_by_peer: Counter = Counter()
        self.parked_produce_bytes = 0
        self._unsent: dict = {}  # peer -> deque of (bytes, tracker), oldest first
        self._unsent_bytes: Counter = Counter()
        self.throttled: Counter = Counter()  # api name -> requests refused

    # ------------------------------------------------------------------------- admission

    def refusal(self, peer: bytes, api: str, produce_bytes: int = 0) -> str | None:
        """Why a request from `peer` that may park (a produce with acks, a fetch) is refused
        now, or None to admit it. produce_bytes: the records a produce carries."""
        why = self._why_refused(peer, api, produce_bytes)
        if why is not None:
            self.throttled[api] += 1
        return why

    def _why_refused(self, peer: bytes, api: str, produce_bytes: int) -> str | None:
        limits = self.limits
        parked_here = self._parked_by_peer[peer]
        if parked_here >= limits.parked_per_connection:
            return (f"this connection has {parked_here} requests waiting for an answer already "
                    f"(limit {limits.parked_per_connection}); send fewer at once")
        if len(self._parked) >= limits.parked_total:
            return f"the broker has {len(self._parked)} requests waiting for an answer (limit {limits.parked_total})"
        # One produce is always admitted when none waits, so a big batch is never refused forever.
        if produce_bytes and self.parked_produce_bytes and \
                self.parked_produce_bytes + produce_bytes > limits.parked_produce_bytes:
            return (f"produces of {self.parked_produce_bytes} bytes wait for their acknowledgement already "
                    f"(limit {limits.parked_produce_bytes}): the replicas are behind")
        if api == "FETCH":
            unsent = self.unsent_reply_bytes(peer)
            if unsent >= limits.unsent_reply_bytes_per_connection:
                return (f"{unsent} bytes of earlier replies wait for this client to read them "
                        f"(limit {limits.unsent_reply_bytes_per_connection}); read replies before fetching more")
        return None

    # ------------------------------------------------------------------------- parked requests

    def park(self, peer: bytes, cid: int, api: str, received_s: float, produce_bytes: int = 0) -> None:
        """A request that will be answered by a later turn."""
        self._parked[(peer, cid)] = _Parked(api, received_s, produce_bytes)
        self._parked_by_peer[peer] += 1
        self.parked_produce_bytes += produce_bytes

    def release(self, peer: bytes, cid: int):
        """The request is being answered: (api, received at) if it was parked, else None."""
        parked = self._parked.pop((peer, cid), None)
        if parked is None:
            return None
        left = self._parked_by_peer[peer] - 1
        if left:
            self._parked_by_peer[peer] = left
        else:
            del self._parked_by_peer[peer]
        self.parked_produce_bytes -= parked.produce_bytes
        return parked.api, parked.received_s

    @property
    def parked(self) -> int:
        return len(self._parked)

    # ------------------------------------------------------------------------- unsent replies

    def reply_pending(self, peer: bytes, size_bytes: int) -> None:
        """A reply of size_bytes for `peer` was made and leaves at the end of this turn: it counts
        from now, or a burst of fetches read in one turn would all be admitted."""
        if size_bytes:
            self._unsent_bytes[peer] += size_bytes

    def reply_queued(self, peer: bytes, size_bytes: int, tracker, *, pending: bool) -> None:
        """A reply of size_bytes went to ZeroMQ for `peer` (pending: counted by reply_pending
        already); tracker.done once ZeroMQ let go of it, None if the reply was dropped."""
        if not pending:
            self._unsent_bytes[peer] += size_bytes
        if tracker is None:
            self._forget_bytes(peer, size_bytes)
        else:
            self._unsent.setdefault(peer, deque()).append((size_bytes, tracker))

    def unsent_reply_bytes(self, peer: bytes) -> int:
        """Bytes of replies to `peer` made and not yet written to its socket by ZeroMQ."""
        queue = self._unsent.get(peer)
        # One connection's replies leave in order, so the done ones are at the front.
        while queue and queue[0][1].done:
            self._forget_bytes(peer, queue.popleft()[0])
        if queue is not None and not queue:
            del self._unsent[peer]
        return self._unsent_bytes.get(peer, 0)

    def _forget_bytes(self, peer: bytes, size_bytes: int) -> None:
        left = self._unsent_bytes[peer] - size_bytes
        if left:
            self._unsent_bytes[peer] = left
        else:
            del self._unsent_bytes[peer]

    def sweep(self) -> None:
        """Forget replies ZeroMQ let go of, for connections that sent nothing since (housekeeping)."""
        for peer in list(self._unsent):
            self.unsent_reply_bytes(peer)
