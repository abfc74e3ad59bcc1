"""The record batch format: one byte layout shared by disk and wire, read with numpy.

A batch is a fixed little-endian header, then a record table (one fixed-size numpy row per
record), then a columnar payload: every key back to back, then every value, then every
record's msgpack-encoded headers. docs/FORMAT.md gives the exact bytes.

This module is what the broker needs of a batch: parse and check a header (peek_header),
view a batch and verify it (RecordBatch), walk a region of batches (iter_batches, or just
count its records: count_records), and
stamp fields into one (stamp_batch, stamp_producer_fields). It never loops per record. Laying
a batch out lives in batch_builder.py, decoding records into Python objects (a client's
concern) in records.py, and dropping records from a batch in compaction.py; each reads and
writes the layout through the constants and helpers below.

The crc32c covers the leader_term and every byte after the crc field (batch_crc): a leader
stamps the term into each batch it appends and recomputes the checksum then (stamp_batch; a
pass over bytes it copies anyway). base_offset alone stays outside it, stamped without a
recomputation: offset continuity, which every reader checks, catches a damaged one. The term
is inside because Raft trusts it: a flipped term could make a replica's log look more up to
date than it is, and elect a leader without a committed entry.
"""

from __future__ import annotations

import struct
from typing import Iterator, NamedTuple

import crc32c
import numpy as np

MAGIC = 1
MAX_OFFSET = 2**63 - 1  # offsets are int64 everywhere a reader puts them in numpy

# magic, base_offset, batch_length, leader_term | crc | attributes, record_count,
# last_offset_delta, first_timestamp_ms, max_timestamp_ms, producer_id, producer_epoch,
# base_sequence
HEADER_STRUCT = struct.Struct("<BQIIIHIIqqqhi")
HEADER_SIZE = HEADER_STRUCT.size  # 61
_BASE_OFFSET = struct.Struct("<Q")
_LEADER_TERM = struct.Struct("<I")
_BASE_OFFSET_POS = 1
_BATCH_LENGTH_POS = 9
_BATCH_LENGTH = struct.Struct("<I")
LEADER_TERM_POS = 13
CRC_POS = 17
CRC_START = 21  # the checksum covers buf[CRC_START:batch_length]
_PRODUCER = struct.Struct("<qhi")  # producer_id, producer_epoch, base_sequence
_PRODUCER_POS = 47
_RECORD_COUNT = struct.Struct("<I")
_RECORD_COUNT_POS = 23

RECORD_DTYPE = np.dtype(
    [
        ("offset_delta", "<u4"),
        ("timestamp_delta", "<i8"),
        ("key_length", "<i4"),
        ("value_length", "<i4"),
        ("headers_length", "<i4"),
    ]
)
ROW_SIZE = RECORD_DTYPE.itemsize  # 24
# One RECORD_DTYPE row as a struct: reading a single row this way skips numpy's per-call cost.
ROW_STRUCT = struct.Struct("<Iqiii")
# attributes bit set by the builders (never by callers) when every record has record 0's key
# and value length and no headers: a single record is then found by arithmetic, which is
# what makes random single-record reads cheap. verify() checks the claim.
ATTR_FIXED_WIDTH = 0x0100
# attributes bit of a control batch (Kafka's bit 5, isControl): records the system writes for
# itself, such as a Raft leader's marker. They take offsets like any record, but consumers
# skip them and producers may not send them.
ATTR_CONTROL = 0x0020
MAX_BATCH_BYTES = 2**32 - 1  # batch_length is a u32


class CorruptBatchError(ValueError):
    """A batch whose bytes are inconsistent; the message says what is wrong and where."""


class BatchHeader(NamedTuple):
    """Every fixed header field of a batch, in on-disk order."""

    magic: int
    base_offset: int
    batch_length: int
    leader_term: int
    crc: int
    attributes: int
    record_count: int
    last_offset_delta: int
    first_timestamp_ms: int
    max_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta


class BatchArrays(NamedTuple):
    """Column view of a batch; positions index into payload; lengths are -1 for null."""

    offsets: np.ndarray
    timestamps_ms: np.ndarray
    key_lengths: np.ndarray
    value_lengths: np.ndarray
    key_positions: np.ndarray
    value_positions: np.ndarray
    payload: memoryview


def peek_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the header at buf[pos:]; CorruptBatchError if fewer than HEADER_SIZE bytes remain
    or the magic byte is unknown (then batch_length cannot be trusted)."""
    available_bytes = len(buf) - pos
    if available_bytes < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch header at byte {pos} is cut off: {available_bytes} of {HEADER_SIZE} bytes present"
        )
    header = BatchHeader._make(HEADER_STRUCT.unpack_from(buf, pos))
    if header.magic != MAGIC:
        raise CorruptBatchError(f"batch at byte {pos} has magic {header.magic}, expected {MAGIC}")
    if header.batch_length < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch at byte {pos} claims batch_length {header.batch_length} < header size {HEADER_SIZE}"
        )
    return header


def batch_crc(batch) -> int:
    """The crc32c of a batch (exactly one, at the start of `batch`): over its leader_term, then
    every byte after the crc field."""
    view = memoryview(batch).cast("B")
    batch_length = _BATCH_LENGTH.unpack_from(view, _BATCH_LENGTH_POS)[0]
    return crc32c.crc32c(view[CRC_START:batch_length], crc32c.crc32c(view[LEADER_TERM_POS:CRC_POS]))


def stamp_batch(buf, base_offset: int, leader_term: int) -> None:
    """Write base_offset and leader_term into the batch at the start of buf, in place,
    recomputing its crc if the term changed (the crc covers the term, not the base offset)."""
    _BASE_OFFSET.pack_into(buf, _BASE_OFFSET_POS, base_offset)
    if _LEADER_TERM.unpack_from(buf, LEADER_TERM_POS)[0] != leader_term:
        _LEADER_TERM.pack_into(buf, LEADER_TERM_POS, leader_term)
        struct.pack_into("<I", buf, CRC_POS, batch_crc(buf))


def with_producer_fields(data, producer_id: int, producer_epoch: int, base_sequence: int) -> bytearray:
    """A copy of the batch at the start of data with its producer fields replaced and its crc
    recomputed (they sit inside the checksum, as leader_term does, unlike base_offset). An
    idempotent producer renumbers a batch this way: the old bytes may still be queued to send."""
    copy = bytearray(memoryview(data).cast("B"))
    stamp_producer_fields(copy, producer_id, producer_epoch, base_sequence)
    return copy


def stamp_producer_fields(buf: bytearray, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
    """Replace the producer fields of the batch in buf and recompute its crc, in place: for a
    batch buffer no one else holds yet (built and not sent). A fresh copy of a megabyte batch
    costs page faults as well as the copy, and was half the sender thread's time."""
    _PRODUCER.pack_into(buf, _PRODUCER_POS, producer_id, producer_epoch, base_sequence)
    struct.pack_into("<I", buf, CRC_POS, batch_crc(buf))


def is_fixed_width(table: np.ndarray) -> bool:
    """Every record has record 0's key and value length, and no headers: what ATTR_FIXED_WIDTH
    claims of a record table (the builders set the bit by it, verify() checks it)."""
    return (
        bool(np.all(table["key_length"] == table["key_length"][0]))
        and bool(np.all(table["value_length"] == table["value_length"][0]))
        and bool(np.all(table["headers_length"] == -1))
    )


def field_positions(lengths: np.ndarray) -> np.ndarray:
    """Start position of each item of a payload column laid back to back, given its lengths,
    where -1 (null) occupies no bytes."""
    sizes = np.maximum(lengths, 0)
    return np.cumsum(sizes, dtype=np.int64) - sizes


class RecordBatch:
    """A batch over bytes/bytearray/memoryview, without copying.

    The constructor checks only that the header parses and the whole batch is present;
    call verify() before trusting the contents."""

    __slots__ = ("_header", "_view")

    def __init__(self, buf):
        header = peek_header(buf)
        if header.batch_length > len(buf):
            raise CorruptBatchError(
                f"batch at offset {header.base_offset} is cut off: batch_length {header.batch_length}, "
                f"{len(buf)} bytes present"
            )
        self._header = header
        self._view = memoryview(buf).cast("B")[: header.batch_length]

    @property
    def header(self) -> BatchHeader:
        """All header fields, as the buffer holds them now (stamping changes two)."""
        return BatchHeader._make(HEADER_STRUCT.unpack_from(self._view))

    @property
    def base_offset(self) -> int:
        return _BASE_OFFSET.unpack_from(self._view, _BASE_OFFSET_POS)[0]

    @property
    def leader_term(self) -> int:
        return _LEADER_TERM.unpack_from(self._view, LEADER_TERM_POS)[0]

    @property
    def last_offset(self) -> int:
        return self.base_offset + self._header.last_offset_delta

    @property
    def batch_length(self) -> int:
        return self._header.batch_length

    @property
    def record_count(self) -> int:
        return self._header.record_count

    @property
    def last_offset_delta(self) -> int:
        return self._header.last_offset_delta

    @property
    def crc(self) -> int:
        return self._header.crc

    @property
    def is_control(self) -> bool:
        return bool(self._header.attributes & ATTR_CONTROL)

    @property
    def attributes(self) -> int:
        return self._header.attributes

    @property
    def first_timestamp_ms(self) -> int:
        return self._header.first_timestamp_ms

    @property
    def max_timestamp_ms(self) -> int:
        return self._header.max_timestamp_ms

    @property
    def producer_id(self) -> int:
        return self._header.producer_id

    @property
    def producer_epoch(self) -> int:
        return self._header.producer_epoch

    @property
    def base_sequence(self) -> int:
        return self._header.base_sequence

    @property
    def buffer(self) -> memoryview:
        """Exactly this batch's bytes."""
        return self._view

    def _where(self) -> str:
        return f"batch at offset {self.base_offset}"

    def table(self) -> np.ndarray:
        """The record table, one RECORD_DTYPE row per record, as a view of the batch's bytes."""
        count = self._header.record_count
        if HEADER_SIZE + count * ROW_SIZE > len(self._view):
            raise CorruptBatchError(
                f"{self._where()}: {count} records need a {count * ROW_SIZE}-byte table but batch_length "
                f"is {len(self._view)}"
            )
        return np.frombuffer(self._view, dtype=RECORD_DTYPE, count=count, offset=HEADER_SIZE)

    def verify(self) -> None:
        """Raise CorruptBatchError unless crc, sizes and the record table are consistent."""
        header = self._header
        actual_crc = batch_crc(self._view)
        if actual_crc != header.crc:
            raise CorruptBatchError(
                f"{self._where()}: crc32c mismatch (stored {header.crc:#010x}, computed {actual_crc:#010x})"
            )
        # base_offset sits outside the checksum (leaders stamp it), so a damaged one is caught here.
        if header.base_offset + header.last_offset_delta > MAX_OFFSET:
            raise CorruptBatchError(
                f"{self._where()}: offsets end at {header.base_offset + header.last_offset_delta}, past the "
                f"largest offset {MAX_OFFSET}"
            )
        table_end = HEADER_SIZE + header.record_count * ROW_SIZE
        if table_end > header.batch_length:
            raise CorruptBatchError(
                f"{self._where()}: {header.record_count} records need a {table_end - HEADER_SIZE}-byte "
                f"table but batch_length is {header.batch_length}"
            )
        table = self.table()
        lengths = np.concatenate((table["key_length"], table["value_length"], table["headers_length"]))
        if len(lengths) and lengths.min() < -1:
            raise CorruptBatchError(f"{self._where()}: negative field length below -1 in the record table")
        payload_bytes = int(np.maximum(lengths, 0).sum(dtype=np.int64))
        if table_end + payload_bytes != header.batch_length:
            raise CorruptBatchError(
                f"{self._where()}: record table describes {payload_bytes} payload bytes but "
                f"{header.batch_length - table_end} follow the table"
            )
        if header.record_count:
            deltas = table["offset_delta"]
            if int(deltas[-1]) > header.last_offset_delta:
                raise CorruptBatchError(
                    f"{self._where()}: last record has offset_delta {int(deltas[-1])}, beyond the "
                    f"batch's last_offset_delta {header.last_offset_delta}"
                )
            if len(deltas) > 1 and not bool(np.all(deltas[1:] > deltas[:-1])):
                raise CorruptBatchError(f"{self._where()}: offset deltas are not strictly increasing")
            if header.attributes & ATTR_FIXED_WIDTH and not is_fixed_width(table):
                raise CorruptBatchError(f"{self._where()}: flagged fixed-width but record lengths differ")

    def arrays(self) -> BatchArrays:
        """Offsets, timestamps, lengths and payload positions as numpy columns."""
        header = self._header
        table = self.table()
        key_lengths = table["key_length"]
        value_lengths = table["value_length"]
        key_positions = field_positions(key_lengths)
        total_key_bytes = int(np.maximum(key_lengths, 0).sum(dtype=np.int64))
        value_positions = field_positions(value_lengths) + total_key_bytes
        payload_start = HEADER_SIZE + header.record_count * ROW_SIZE
        return BatchArrays(
            offsets=table["offset_delta"].astype(np.int64) + self.base_offset,
            timestamps_ms=table["timestamp_delta"] + header.first_timestamp_ms,
            key_lengths=key_lengths,
            value_lengths=value_lengths,
            key_positions=key_positions,
            value_positions=value_positions,
            payload=self._view[payload_start:],
        )

    def values_2d(self) -> np.ndarray:
        """An (n, width) uint8 view of the values; ValueError unless all share one non-null length."""
        n = self._header.record_count
        if n == 0:
            return np.zeros((0, 0), dtype=np.uint8)
        _, _, key_width, width, _ = ROW_STRUCT.unpack_from(self._view, HEADER_SIZE)
        if self._header.attributes & ATTR_FIXED_WIDTH:
            key_bytes = n * max(key_width, 0)
        else:
            table = self.table()
            if not bool(np.all(table["value_length"] == width)):
                width = -1
            key_bytes = int(np.maximum(table["key_length"], 0).sum(dtype=np.int64))
        if width < 0:
            raise ValueError(f"{self._where()}: values do not all have one non-null length")
        start = HEADER_SIZE + n * ROW_SIZE + key_bytes
        return np.frombuffer(self._view, dtype=np.uint8, count=n * width, offset=start).reshape(n, width)

    def __repr__(self) -> str:
        return (
            f"RecordBatch(base_offset={self.base_offset}, last_offset={self.last_offset}, "
            f"record_count={self.record_count}, batch_length={self.batch_length}, leader_term={self.leader_term})"
        )


def count_records(buf) -> int:
    """The records of the whole batches stored back to back in buf, read from their headers
    alone (two fields per batch, nothing verified: for counters, not for trusting data)."""
    pos, records, end = 0, 0, len(buf)
    while end - pos >= HEADER_SIZE:
        batch_length = _BATCH_LENGTH.unpack_from(buf, pos + _BATCH_LENGTH_POS)[0]
        if batch_length < HEADER_SIZE or pos + batch_length > end:
            break
        records += _RECORD_COUNT.unpack_from(buf, pos + _RECORD_COUNT_POS)[0]
        pos += batch_length
    return records


def iter_batches(buf, verify: bool = True) -> Iterator[RecordBatch]:
    """Yield the batches stored back to back in buf. A trailing incomplete batch (a fetch cut
    it off) is ignored; a corrupt one raises CorruptBatchError naming its byte position."""
    view = memoryview(buf).cast("B")
    pos = 0
    end = len(view)
    while end - pos >= HEADER_SIZE:
        try:
            header = peek_header(view, pos)
        except CorruptBatchError as error:
            raise CorruptBatchError(f"{error} (in a region of {end} bytes)") from None
        if pos + header.batch_length > end:
            return
        batch = RecordBatch(view[pos : pos + header.batch_length])
        if verify:
            try:
                batch.verify()
            except CorruptBatchError as error:
                raise CorruptBatchError(f"{error}, at byte {pos} of the region") from None
        yield batch
        pos += header.batch_length

