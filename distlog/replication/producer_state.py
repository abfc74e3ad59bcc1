"""Idempotent produce: which batches of each producer a partition already holds.

A producer that retries a batch whose acknowledgement was lost must not get it written twice.
Every batch of an idempotent producer carries its producer id, epoch and base sequence (the
batch header's producer fields, docs/FORMAT.md); the leader remembers the sequence ranges and
offsets of each producer's last WINDOW batches and answers a batch it has seen with the offset
it was first written at, instead of appending it again.

Rules for a batch of producer P (Kafka's, minus transactions):
- P unknown: append it if it starts at sequence 0 (a new producer, or one that renumbered a
  partition after giving up on a batch). Any other first sequence is refused with
  OUT_OF_ORDER_SEQUENCE: P's state aged out here, or its earlier batches were lost with an
  uncommitted tail this replica never had and a later batch overtook their retries. Written, it
  would land ahead of them and they could never follow (it also wrote twice a retry of a batch
  whose state had aged out). The producer retries it after the earlier ones, or with none
  coming renumbers: a fresh producer id, sequences from 0.
- the same (first, last) sequence range as one of P's remembered batches: a duplicate.
- first sequence right after P's last one: append it.
- a range wholly between the first sequence this partition saw from P and P's last one, but no
  longer remembered: refused with DUPLICATE_SEQUENCE. From that first sequence on, P's
  sequences were written without gaps, so every one of them was written once already; the
  producer takes this as success (offset unknown) rather than send the records again. Kafka
  answers the same way. Before that first sequence nothing is known (P was new here, or its
  state aged out), so an older range is OUT_OF_ORDER: never acknowledged as written on a guess.
- anything else: refused with OUT_OF_ORDER_SEQUENCE. A gap means an earlier batch has not
  arrived (it is being retried): writing this one first would reorder the partition.
The producer keeps at most WINDOW batches per partition in flight, so a retry always falls
inside the window.

Sequences are 31-bit and wrap to 0, as Kafka's do. Every replica keeps the table as it writes
(replica.py), and one that just opened reads it from the tail of its log, so a new leader or a
restarted broker still recognises the retries of batches written just before.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

SEQUENCE_MODULUS = 2**31
# How many batches per producer and partition the leader remembers (Kafka: 5). The client keeps
# no more than this many in flight per partition. More than Kafka's because at RF=3 a produce
# round trip holds two fsyncs (the leader's and a follower's): with 5 batches in flight one
# partition's throughput stalled at ~0.8M records/s of 100 B (bench/produce.py), so the
# producer defaults to 10 requests in flight and may use up to this many.
WINDOW = 16
# Producers remembered per partition, least recently written forgotten first (Kafka expires
# them by age instead). Every Producer instance draws a new id, so without a bound the table
# of a long-lived partition would grow forever; a forgotten producer is "unknown" again.
MAX_PRODUCERS = 10_000


class ProducerBatchInfo(NamedTuple):
    """The producer fields of one batch and where it sits in the log."""

    producer_id: int
    producer_epoch: int
    first_sequence: int
    last_sequence: int
    base_offset: int
    last_offset: int


def batch_info(header) -> ProducerBatchInfo | None:
    """The producer fields of a batch header (distlog.log.batch.BatchHeader) at its stamped
    offsets; None for a batch from a producer that is not idempotent."""
    if header.producer_id < 0:
        return None
    return ProducerBatchInfo(
        header.producer_id, header.producer_epoch, header.base_sequence,
        (header.base_sequence + header.last_offset_delta) % SEQUENCE_MODULUS,
        header.base_offset, header.base_offset + header.last_offset_delta,
    )


class SequenceError(ValueError):
    """A batch that is neither new nor a known duplicate: the producer's retries went wrong."""


class DuplicateSequenceError(SequenceError):
    """A batch written before, too long ago for its offsets to be remembered."""


def _within(sequence: int, first: int, last: int) -> bool:
    """Whether `sequence` lies in first..last, in 31-bit wrapping order."""
    return (sequence - first) % SEQUENCE_MODULUS <= (last - first) % SEQUENCE_MODULUS


@dataclass
class _ProducerEntry:
    epoch: int
    first_sequence: int  # from here on this producer's sequences were written without gaps
    last_sequence: int | None  # its last written (the next batch starts right after); None: see truncate
    batches: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # of ProducerBatchInfo


class ProducerStateTable:
    """Per partition: producer id -> the last WINDOW batches written for it."""

    def __init__(self, end_offset: int = 0):
        self._producers: dict = {}
        # The offset after the last batch recorded (or the log end the table was read from):
        # where the log this table describes ends.
        self.end_offset = end_offset

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, batch: ProducerBatchInfo) -> ProducerBatchInfo | None:
        """Before appending: the earlier write if `batch` is a duplicate, None if it is new.
        Raises SequenceError if it is neither."""
        entry = self._producers.get(batch.producer_id)
        if entry is None or batch.producer_epoch > entry.epoch:
            if batch.first_sequence == 0:
                return None
            raise SequenceError(
                f"producer {batch.producer_id} is not known here and its batch starts at sequence "
                f"{batch.first_sequence}, not 0: its earlier batches are still on their way, or it must start over "
                "under a new producer id")
        if batch.producer_epoch < entry.epoch:
            raise SequenceError(
                f"producer {batch.producer_id} epoch {batch.producer_epoch} is older than epoch {entry.epoch} "
                "already written here; a newer instance of this producer has taken over"
            )
        for known in entry.batches:
            if (known.first_sequence, known.last_sequence) == (batch.first_sequence, batch.last_sequence):
                return known
        last = entry.last_sequence
        if last is None:  # known, with nothing in the log (see truncate)
            if batch.first_sequence == entry.first_sequence:
                return None
            raise SequenceError(
                f"producer {batch.producer_id} sent sequences {batch.first_sequence}..{batch.last_sequence} but "
                f"{entry.first_sequence} comes next (its earlier batches were lost with an uncommitted tail and "
                "are being retried)")
        expected = (last + 1) % SEQUENCE_MODULUS
        if batch.first_sequence == expected:
            return None
        if _within(batch.first_sequence, entry.first_sequence, last) and _within(
                batch.last_sequence, entry.first_sequence, last):
            raise DuplicateSequenceError(
                f"producer {batch.producer_id}'s sequences {batch.first_sequence}..{batch.last_sequence} were written "
                f"before (its last is {last}), longer ago than the last {WINDOW} batches this partition remembers"
            )
        raise SequenceError(
            f"producer {batch.producer_id} sent sequences {batch.first_sequence}..{batch.last_sequence} but "
            f"{expected} comes next and the batch is not one of its last {WINDOW}; an earlier batch is "
            "still on its way (the producer retries in order)"
        )

    def record(self, batch: ProducerBatchInfo) -> None:
        """After appending `batch` (with its real offsets)."""
        entry = self._producers.pop(batch.producer_id, None)  # re-inserted last: most recent
        if entry is None or batch.producer_epoch > entry.epoch:
            entry = _ProducerEntry(batch.producer_epoch, batch.first_sequence, batch.last_sequence)
        entry.batches.append(batch)
        entry.last_sequence = batch.last_sequence
        self._producers[batch.producer_id] = entry
        self.end_offset = max(self.end_offset, batch.last_offset + 1)
        if len(self._producers) > MAX_PRODUCERS:
            del self._producers[next(iter(self._producers))]

    def batches(self) -> list:
        """Every remembered batch (of all producers), least recently written producer first."""
        return [batch for entry in self._producers.values() for batch in entry.batches]

    def truncate(self, offset: int) -> None:
        """The log lost every batch from `offset` on (a follower's uncommitted tail replaced):
        forget those batches. A producer left with none remembered must go on from the first
        one lost: its older batches are committed, never cut (it sends a batch past its last
        WINDOW only once the one WINDOW before is settled), and it retries in order. If that
        first lost batch was the first this table saw of it, nothing the table knew of it is in
        the log, and only that sequence may come next (not any: a later batch that overtook the retries
        would be written ahead of them, and they refused for good)."""
        if offset >= self.end_offset:
            return
        for entry in self._producers.values():
            batches = entry.batches
            if not batches or batches[-1].base_offset < offset:
                continue
            while batches and batches[-1].base_offset >= offset:
                first_lost = batches.pop()
            if batches:
                entry.last_sequence = batches[-1].last_sequence
            elif first_lost.first_sequence == entry.first_sequence:
                entry.last_sequence = None  # nothing written: first_sequence comes next
            else:
                entry.last_sequence = (first_lost.first_sequence - 1) % SEQUENCE_MODULUS
        self.end_offset = offset
