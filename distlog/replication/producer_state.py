"""Idempotent produce: which batches of each producer a partition already holds.

A producer that retries a batch whose acknowledgement was lost must not get it written twice.
Every batch of an idempotent producer carries its producer id, epoch and base sequence (the
batch header's producer fields, docs/FORMAT.md); the leader remembers the sequence ranges and
offsets of each producer's last WINDOW batches and answers a batch it has seen with the offset
it was first written at, instead of appending it again.

Rules for a batch of producer P (Kafka's, minus transactions):
- P unknown (new, its state aged out, or a producer that renumbered a partition after giving
  up on a batch): append it, whatever its first sequence.
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

Sequences are 31-bit and wrap to 0, as Kafka's do. The replica rebuilds the table from the
tail of its log when the partition opens, so a restarted broker still recognises the retries
of batches written just before it went down.
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
    batches: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # of ProducerBatchInfo


class ProducerStateTable:
    """Per partition: producer id -> the last WINDOW batches written for it."""

    def __init__(self):
        self._producers: dict = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, batch: ProducerBatchInfo) -> ProducerBatchInfo | None:
        """Before appending: the earlier write if `batch` is a duplicate, None if it is new.
        Raises SequenceError if it is neither."""
        entry = self._producers.get(batch.producer_id)
        if entry is None or batch.producer_epoch > entry.epoch:
            return None
        if batch.producer_epoch < entry.epoch:
            raise SequenceError(
                f"producer {batch.producer_id} epoch {batch.producer_epoch} is older than epoch {entry.epoch} "
                "already written here; a newer instance of this producer has taken over"
            )
        for known in entry.batches:
            if (known.first_sequence, known.last_sequence) == (batch.first_sequence, batch.last_sequence):
                return known
        last = entry.batches[-1].last_sequence
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
            entry = _ProducerEntry(batch.producer_epoch, batch.first_sequence)
        entry.batches.append(batch)
        self._producers[batch.producer_id] = entry
        if len(self._producers) > MAX_PRODUCERS:
            del self._producers[next(iter(self._producers))]
