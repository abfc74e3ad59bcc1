"""Numbering for the idempotent producer: each partition's batches get consecutive sequence
numbers, so the leader can tell a retry of a written batch from a new one.

The sender numbers a batch when it takes it from the accumulator, in the order the batches
were sealed, and stamps producer id, epoch and base sequence into the batch header. Ordering
rules the sender follows (see Sender._send):
- a partition's batches go out in number order, at most one per request;
- the line: from a partition's oldest batch that was sent but is not finished (acknowledged or
  failed), at most WINDOW (16, the broker's dedup window) batches have been sent. A batch whose
  acknowledgement was lost may have been written; its retry is only recognised while it is
  among the producer's last WINDOW batches on the broker, so no batch past the window may go
  out before it is settled, even when the ones after it were acknowledged (a chaos run found exactly that);
- a batch waiting to be retried holds back every later batch of its partition;
- OUT_OF_ORDER_SEQUENCE means an earlier batch has not arrived yet: retry once it has.

A batch that fails for good (a non-retriable error, or delivery_timeout_ms) leaves a hole the
broker would wait on forever, so the partition is renumbered: once nothing of it is in flight,
its waiting batches get a fresh producer id and sequences from 0, which the leader accepts as
a new producer. Except a waiting batch that may have been written already (an earlier attempt
timed out, or ended in an answer such as NOT_LEADER that leaves it open): under a new id the
leader could not recognise it, and would write it twice (a chaos run found that). Such a batch
fails instead, its outcome unknown, as Kafka's producer fails what it cannot resend safely. (Kafka bumps the producer epoch for this; a fresh id per partition does the
same without a round trip.) Producer ids are random 62-bit numbers drawn by the client: with
no transactions to fence there is nothing for a broker to allocate, and two producers drawing
the same id is a one-in-10^18 event.
"""

from __future__ import annotations

import secrets
from collections import deque

from distlog.log.batch import stamp_producer_fields, with_producer_fields
from distlog.replication.producer_state import SEQUENCE_MODULUS, WINDOW

PRODUCER_EPOCH = 0
MAX_IN_FLIGHT = WINDOW


def new_producer_id() -> int:
    return secrets.randbits(62) + 1


class Sequencer:
    """Sequence numbers and producer ids per partition, for the sender thread only."""

    def __init__(self):
        self._producer_ids: dict = {}  # (topic, partition) -> producer id
        self._next_sequence: dict = {}  # (topic, partition) -> base sequence of its next batch
        self._next_order = 0
        self.needs_renumbering: set = set()  # partitions with a hole no retry will fill
        self._lines: dict = {}  # (topic, partition) -> deque of batches sent and not yet settled, in order

    def number(self, batch) -> None:
        """Give a batch fresh from the accumulator the next sequence of its partition."""
        batch.order = self._next_order
        self._next_order += 1
        self._stamp(batch, in_place=isinstance(batch.data, bytearray))

    def _stamp(self, batch, in_place: bool = False) -> None:
        """in_place only for a batch never sent: a request that timed out may still sit in a
        ZeroMQ queue holding the batch's buffer (frames go zero-copy), so a renumbered batch
        gets a copy rather than changing bytes that may yet be sent."""
        key = (batch.topic, batch.partition)
        producer_id = self._producer_ids.get(key)
        if producer_id is None:
            producer_id = self._producer_ids[key] = new_producer_id()
        sequence = self._next_sequence.get(key, 0)
        if in_place:
            stamp_producer_fields(batch.data, producer_id, PRODUCER_EPOCH, sequence)
        else:
            batch.data = with_producer_fields(batch.data, producer_id, PRODUCER_EPOCH, sequence)
        self._next_sequence[key] = (sequence + batch.record_count) % SEQUENCE_MODULUS

    def may_send(self, batch) -> bool:
        """Whether the batch may go out now: it is already in its partition's line (a retry), or
        the line has room for one more (see the module docstring)."""
        line = self._lines.get((batch.topic, batch.partition))
        return not line or len(line) < WINDOW or any(queued is batch for queued in line)

    def sent(self, batch) -> None:
        """The batch went out in a request: it joins its partition's line if it is not in it."""
        line = self._lines.setdefault((batch.topic, batch.partition), deque())
        if not any(queued is batch for queued in line):
            line.append(batch)

    def settled(self, batch) -> None:
        """The batch is acknowledged or failed: the line moves past every settled batch at its head."""
        line = self._lines.get((batch.topic, batch.partition))
        while line and line[0].done.is_set():
            line.popleft()

    def failed_for_good(self, batch) -> None:
        """The batch will not be retried: the partition's later batches must be renumbered."""
        self.needs_renumbering.add((batch.topic, batch.partition))

    def renumber(self, waiting: list, in_flight_keys: set) -> list:
        """For each partition that needs it and has nothing in flight, restamp its waiting
        batches (in their order) under a fresh producer id, sequences from 0. Returns the
        waiting batches that may have been written already, left as they are: the caller
        fails them (see the module docstring)."""
        unsafe = []
        for key in list(self.needs_renumbering):
            if key in in_flight_keys:
                continue  # its answers come first: they may be OUT_OF_ORDER and join the waiting
            self.needs_renumbering.discard(key)
            self._producer_ids[key] = new_producer_id()
            self._next_sequence[key] = 0
            self._lines.pop(key, None)  # under the new id nothing has been sent yet
            for batch in sorted((b for b in waiting if (b.topic, b.partition) == key), key=by_order):
                if batch.maybe_written:
                    unsafe.append(batch)
                else:
                    self._stamp(batch)
        return unsafe

    def has_earlier(self, batch, pending) -> bool:
        """Whether a batch of the same partition numbered before `batch` is among `pending`."""
        key = (batch.topic, batch.partition)
        return any((b.topic, b.partition) == key and b.order < batch.order for b in pending)


def by_order(batch) -> int:
    """Sort key: the order batches were numbered in."""
    return batch.order
