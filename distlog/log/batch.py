"""The record batch: one byte layout shared by disk and wire, built and read with numpy.

A batch is a fixed little-endian header, then a record table (one fixed-size numpy row per
record), then a columnar payload: every key back to back, then every value, then every
record's msgpack-encoded headers. docs/FORMAT.md gives the exact bytes.

The crc32c covers every byte after the crc field, so a leader can stamp base_offset and
leader_term into a batch it received (stamp_batch) without recomputing the checksum. Nothing
here loops per record except the client-side conveniences records() and decode_records().
"""

from __future__ import annotations

import operator
import struct
import time
from itertools import compress, repeat
from typing import Iterator, NamedTuple

import crc32c
import msgpack
import numpy as np

MAGIC = 1
MAX_OFFSET = 2**63 - 1  # offsets are int64 everywhere a reader puts them in numpy

# magic, base_offset, batch_length, leader_term | crc | attributes, record_count,
# last_offset_delta, first_timestamp_ms, max_timestamp_ms, producer_id, producer_epoch,
# base_sequence
_HEADER = struct.Struct("<BQIIIHIIqqqhi")
HEADER_SIZE = _HEADER.size  # 61
_BASE_OFFSET = struct.Struct("<Q")
_LEADER_TERM = struct.Struct("<I")
_BASE_OFFSET_POS = 1
_BATCH_LENGTH_POS = 9
_LEADER_TERM_POS = 13
_CRC_POS = 17
CRC_START = 21  # the checksum covers buf[CRC_START:batch_length]
_PRODUCER = struct.Struct("<qhi")  # producer_id, producer_epoch, base_sequence
_PRODUCER_POS = 47

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
_ROW = struct.Struct("<Iqiii")
# attributes bit set by the builders (never by callers) when every record has record 0's key
# and value length and no headers: a single record is then found by arithmetic, which is
# what makes random single-record reads cheap. verify() checks the claim.
ATTR_FIXED_WIDTH = 0x0100
# attributes bit of a control batch (Kafka's bit 5, isControl): records the system writes for
# itself, such as a Raft leader's marker. They take offsets like any record, but consumers
# skip them and producers may not send them.
ATTR_CONTROL = 0x0020
_MAX_BATCH_BYTES = 2**32 - 1


class CorruptBatchError(ValueError):
    """A batch whose bytes are inconsistent; the message says what is wrong and where."""


class Record(NamedTuple):
    """One decoded record; key/value are None when null, headers is a list of (str, bytes)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list


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
    header = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if header.magic != MAGIC:
        raise CorruptBatchError(f"batch at byte {pos} has magic {header.magic}, expected {MAGIC}")
    if header.batch_length < HEADER_SIZE:
        raise CorruptBatchError(
            f"batch at byte {pos} claims batch_length {header.batch_length} < header size {HEADER_SIZE}"
        )
    return header


def stamp_batch(buf, base_offset: int, leader_term: int) -> None:
    """Write base_offset and leader_term into the batch at the start of buf, in place.

    Both fields sit before the crc field, so the checksum stays valid."""
    _BASE_OFFSET.pack_into(buf, _BASE_OFFSET_POS, base_offset)
    _LEADER_TERM.pack_into(buf, _LEADER_TERM_POS, leader_term)


def with_producer_fields(data, producer_id: int, producer_epoch: int, base_sequence: int) -> bytearray:
    """A copy of the batch at the start of data with its producer fields replaced and its crc
    recomputed (they sit inside the checksum, unlike base_offset and leader_term). An
    idempotent producer renumbers a batch this way: the old bytes may still be queued to send."""
    copy = bytearray(memoryview(data).cast("B"))
    stamp_producer_fields(copy, producer_id, producer_epoch, base_sequence)
    return copy


def stamp_producer_fields(buf: bytearray, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
    """Replace the producer fields of the batch in buf and recompute its crc, in place: for a
    batch buffer no one else holds yet (built and not sent). A fresh copy of a megabyte batch
    costs page faults as well as the copy, and was half the sender thread's time."""
    view = memoryview(buf)
    _PRODUCER.pack_into(buf, _PRODUCER_POS, producer_id, producer_epoch, base_sequence)
    struct.pack_into("<I", buf, _CRC_POS, crc32c.crc32c(view[CRC_START:]))


def _is_fixed_width(table: np.ndarray) -> bool:
    """Every record has record 0's key and value length, and no headers."""
    return (
        bool(np.all(table["key_length"] == table["key_length"][0]))
        and bool(np.all(table["value_length"] == table["value_length"][0]))
        and bool(np.all(table["headers_length"] == -1))
    )


def _exclusive_cumsum(lengths: np.ndarray) -> np.ndarray:
    """Start position of each item given lengths where -1 (null) occupies no bytes."""
    sizes = np.maximum(lengths, 0)
    return np.cumsum(sizes, dtype=np.int64) - sizes


def _decode_one(offset: int, timestamp_ms: int, payload: memoryview, key, value, headers) -> Record:
    """A Record from (position, length) pairs into payload; length -1 is null."""
    key_position, key_length = key
    value_position, value_length = value
    headers_position, headers_length = headers
    decoded_headers = []
    if headers_length > 0:
        pairs = msgpack.unpackb(payload[headers_position : headers_position + headers_length], raw=False)
        decoded_headers = [(name, bytes(data)) for name, data in pairs]
    return Record(
        offset,
        timestamp_ms,
        None if key_length < 0 else bytes(payload[key_position : key_position + key_length]),
        None if value_length < 0 else bytes(payload[value_position : value_position + value_length]),
        decoded_headers,
    )


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
        return BatchHeader._make(_HEADER.unpack_from(self._view))

    @property
    def base_offset(self) -> int:
        return _BASE_OFFSET.unpack_from(self._view, _BASE_OFFSET_POS)[0]

    @property
    def leader_term(self) -> int:
        return _LEADER_TERM.unpack_from(self._view, _LEADER_TERM_POS)[0]

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

    def _table(self) -> np.ndarray:
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
        actual_crc = crc32c.crc32c(self._view[CRC_START:])
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
        table = self._table()
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
            if header.attributes & ATTR_FIXED_WIDTH and not _is_fixed_width(table):
                raise CorruptBatchError(f"{self._where()}: flagged fixed-width but record lengths differ")

    def arrays(self) -> BatchArrays:
        """Offsets, timestamps, lengths and payload positions as numpy columns."""
        header = self._header
        table = self._table()
        key_lengths = table["key_length"]
        value_lengths = table["value_length"]
        key_positions = _exclusive_cumsum(key_lengths)
        total_key_bytes = int(np.maximum(key_lengths, 0).sum(dtype=np.int64))
        value_positions = _exclusive_cumsum(value_lengths) + total_key_bytes
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
        _, _, key_width, width, _ = _ROW.unpack_from(self._view, HEADER_SIZE)
        if self._header.attributes & ATTR_FIXED_WIDTH:
            key_bytes = n * max(key_width, 0)
        else:
            table = self._table()
            if not bool(np.all(table["value_length"] == width)):
                width = -1
            key_bytes = int(np.maximum(table["key_length"], 0).sum(dtype=np.int64))
        if width < 0:
            raise ValueError(f"{self._where()}: values do not all have one non-null length")
        start = HEADER_SIZE + n * ROW_SIZE + key_bytes
        return np.frombuffer(self._view, dtype=np.uint8, count=n * width, offset=start).reshape(n, width)

    def record(self, offset: int) -> Record:
        """Decode only the record at offset (a random read); KeyError if the batch lacks it."""
        n = self._header.record_count
        delta = offset - self.base_offset
        if 0 <= delta < n and self._header.attributes & ATTR_FIXED_WIDTH:
            row_delta, timestamp_delta, key_length, value_length, _ = _ROW.unpack_from(
                self._view, HEADER_SIZE + delta * ROW_SIZE
            )
            if row_delta == delta:
                _, _, key_width, value_width, _ = _ROW.unpack_from(self._view, HEADER_SIZE)
                key_width, value_width = max(key_width, 0), max(value_width, 0)
                payload = self._view[HEADER_SIZE + n * ROW_SIZE :]
                return _decode_one(
                    offset, timestamp_delta + self._header.first_timestamp_ms, payload,
                    (delta * key_width, key_length), (n * key_width + delta * value_width, value_length), (0, -1),
                )
        table = self._table()
        deltas = table["offset_delta"]
        row = delta
        if not (0 <= row < len(deltas) and int(deltas[row]) == delta):
            row = int(np.searchsorted(deltas, delta)) if delta >= 0 else len(deltas)
            if row >= len(deltas) or int(deltas[row]) != delta:
                raise KeyError(f"{self._where()} has no record at offset {offset}")
        # The three length columns are the last three int32 words of each 24-byte row.
        lengths = np.frombuffer(self._view, dtype="<i4", count=len(deltas) * 6, offset=HEADER_SIZE).reshape(-1, 6)[:, 3:]
        sizes = np.maximum(lengths, 0)
        totals = sizes.sum(axis=0, dtype=np.int64).tolist()
        before = sizes[:row].sum(axis=0, dtype=np.int64).tolist()
        key_length, value_length, headers_length = lengths[row].tolist()
        payload = self._view[HEADER_SIZE + len(deltas) * ROW_SIZE :]
        return _decode_one(
            offset, int(table[row]["timestamp_delta"]) + self._header.first_timestamp_ms, payload,
            (before[0], key_length), (totals[0] + before[1], value_length),
            (totals[0] + totals[1] + before[2], headers_length),
        )

    def records(self) -> list[Record]:
        """Decode every record (client side; loops per record)."""
        arrays = self.arrays()
        table = self._table()
        headers_lengths = table["headers_length"]
        values_end = int(arrays.value_positions[-1] + max(int(arrays.value_lengths[-1]), 0)) if len(table) else 0
        headers_positions = _exclusive_cumsum(headers_lengths) + values_end
        payload = arrays.payload
        return [
            _decode_one(
                offset, timestamp_ms, payload, (key_position, key_length), (value_position, value_length),
                (headers_position, headers_length),
            )
            for offset, timestamp_ms, key_position, key_length, value_position, value_length,
            headers_position, headers_length in zip(
                arrays.offsets.tolist(), arrays.timestamps_ms.tolist(), arrays.key_positions.tolist(),
                arrays.key_lengths.tolist(), arrays.value_positions.tolist(), arrays.value_lengths.tolist(),
                headers_positions.tolist(), headers_lengths.tolist(),
            )
        ]

    def __repr__(self) -> str:
        return (
            f"RecordBatch(base_offset={self.base_offset}, last_offset={self.last_offset}, "
            f"record_count={self.record_count}, batch_length={self.batch_length}, leader_term={self.leader_term})"
        )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def assemble_batch(
    *,
    offset_deltas: np.ndarray,
    timestamps_ms: np.ndarray,
    key_lengths: np.ndarray,
    value_lengths: np.ndarray,
    headers_lengths: np.ndarray,
    payload_parts: list,
    last_offset_delta: int | None = None,
    base_offset: int = 0,
    leader_term: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    writable: bool = False,
) -> bytes | bytearray:
    """Lay out one batch from its columns; payload_parts are the keys, values and headers
    bytes in that order (any bytes-like). Used by the builders and by compaction, which keeps
    the original offset deltas and span (last_offset_delta) of a batch it filters. writable:
    return a bytearray (the producer stamps its producer fields into it in place)."""
    n = len(offset_deltas)
    payload_bytes = sum(memoryview(part).nbytes for part in payload_parts)
    batch_length = HEADER_SIZE + n * ROW_SIZE + payload_bytes
    if batch_length > _MAX_BATCH_BYTES:
        raise ValueError(f"batch of {batch_length} bytes exceeds the format limit of {_MAX_BATCH_BYTES}")
    timestamps_ms = np.asarray(timestamps_ms, dtype=np.int64)
    first_timestamp_ms = int(timestamps_ms[0]) if n else 0
    max_timestamp_ms = int(timestamps_ms.max()) if n else 0
    if last_offset_delta is None:
        last_offset_delta = int(offset_deltas[-1]) if n else 0
    # The batch is the header, the row table and the payload parts laid end to end: checksum
    # the pieces in turn and join them once, rather than filling a bytearray and copying it
    # to bytes (two fresh allocations of the batch's size, page faults and all).
    table = np.empty(n, dtype=RECORD_DTYPE)
    table["offset_delta"] = offset_deltas
    table["timestamp_delta"] = timestamps_ms - first_timestamp_ms
    table["key_length"] = key_lengths
    table["value_length"] = value_lengths
    table["headers_length"] = headers_lengths
    attributes &= ~ATTR_FIXED_WIDTH
    if n and _is_fixed_width(table):
        attributes |= ATTR_FIXED_WIDTH
    header = bytearray(HEADER_SIZE)
    _HEADER.pack_into(
        header, 0, MAGIC, base_offset, batch_length, leader_term, 0, attributes, n, last_offset_delta,
        first_timestamp_ms, max_timestamp_ms, producer_id, producer_epoch, base_sequence,
    )
    pieces = [header, memoryview(table).cast("B"), *(memoryview(part).cast("B") for part in payload_parts)]
    crc = crc32c.crc32c(memoryview(header)[CRC_START:])
    for piece in pieces[1:]:
        crc = crc32c.crc32c(piece, crc)
    struct.pack_into("<I", header, _CRC_POS, crc)
    return bytearray().join(pieces) if writable else b"".join(pieces)


def list_column(items: list) -> tuple[np.ndarray, bytes]:
    """(lengths as int32 with -1 for None, the other items joined) for a list of bytes|None.

    Every per-item step runs in C (list.count, map, join): this builds each batch the producer
    seals, so it must not cost a Python bytecode loop per record."""
    items = items if isinstance(items, list) else list(items)
    n = len(items)
    nulls = items.count(None)
    if nulls == n:
        return np.full(n, -1, dtype=np.int32), b""
    if nulls == 0:
        return np.fromiter(map(len, items), dtype=np.int32, count=n), b"".join(items)
    present_mask = np.fromiter(map(operator.is_not, items, repeat(None)), dtype=bool, count=n)
    present = list(compress(items, present_mask))
    lengths = np.full(n, -1, dtype=np.int32)
    lengths[present_mask] = np.fromiter(map(len, present), dtype=np.int32, count=len(present))
    return lengths, b"".join(present)


def build_batch(
    values,
    keys=None,
    timestamps_ms=None,
    headers=None,
    *,
    base_offset: int = 0,
    leader_term: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    writable: bool = False,
) -> bytes | bytearray:
    """Build a batch from Python lists: values (bytes|None), keys (bytes|None, or None for all
    null), timestamps_ms (ints, or None = now, one clock read), headers (per record a list of
    (str, bytes) pairs or None)."""
    n = len(values)
    if n == 0:
        raise ValueError("a batch needs at least one record")
    for name, column in (("keys", keys), ("timestamps_ms", timestamps_ms), ("headers", headers)):
        if column is not None and len(column) != n:
            raise ValueError(f"{name} has {len(column)} entries but values has {n}")
    keys = keys if keys is not None else [None] * n
    if timestamps_ms is None:
        timestamps_ms = np.full(n, _now_ms(), dtype=np.int64)
    if headers is None or list(headers).count(None) == n:
        encoded_headers = [None] * n
    else:
        encoded_headers = [
            msgpack.packb([[name, data] for name, data in record_headers], use_bin_type=True) if record_headers else None
            for record_headers in headers
        ]
    key_lengths, key_bytes = list_column(keys)
    value_lengths, value_bytes = list_column(values)
    headers_lengths, headers_bytes = list_column(encoded_headers)
    return assemble_batch(
        offset_deltas=np.arange(n, dtype=np.uint32),
        timestamps_ms=np.asarray(timestamps_ms, dtype=np.int64),
        key_lengths=key_lengths,
        value_lengths=value_lengths,
        headers_lengths=headers_lengths,
        payload_parts=[key_bytes, value_bytes, headers_bytes],
        base_offset=base_offset,
        leader_term=leader_term,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        attributes=attributes,
        writable=writable,
    )


def _column_bytes(data, lengths, name: str):
    """(lengths int32, payload bytes-like) for a 2-D (n, width) array or a 1-D buffer + lengths."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"{name} must be a uint8 array, got {data.dtype}")
    if data.ndim == 2:
        if lengths is not None:
            raise ValueError(f"{name} is 2-D, so its lengths come from its shape; do not pass {name[:-1]}_lengths")
        rows, width = data.shape
        return np.full(rows, width, dtype=np.int32), np.ascontiguousarray(data)
    if data.ndim != 1 or lengths is None:
        raise ValueError(f"{name} must be a 2-D (n, width) array, or a 1-D buffer with {name[:-1]}_lengths")
    lengths = np.asarray(lengths, dtype=np.int32)
    used_bytes = int(np.maximum(lengths, 0).sum(dtype=np.int64))
    if used_bytes > len(data):
        raise ValueError(f"{name[:-1]}_lengths add up to {used_bytes} bytes but {name} holds {len(data)}")
    return lengths, np.ascontiguousarray(data[:used_bytes])


def build_batch_from_arrays(
    values,
    keys=None,
    timestamps_ms=None,
    *,
    value_lengths=None,
    key_lengths=None,
    base_offset: int = 0,
    leader_term: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    writable: bool = False,
) -> bytes | bytearray:
    """Build a batch from numpy columns without a per-record loop.

    values: uint8 (n, width), or a 1-D uint8 buffer with value_lengths (int32, -1 = null);
    keys likewise, or None for all-null keys; timestamps_ms: int64 array, scalar, or None (now)."""
    value_lengths, value_bytes = _column_bytes(values, value_lengths, "values")
    n = len(value_lengths)
    if n == 0:
        raise ValueError("a batch needs at least one record")
    if keys is None:
        key_lengths, key_bytes = np.full(n, -1, dtype=np.int32), b""
    else:
        key_lengths, key_bytes = _column_bytes(keys, key_lengths, "keys")
        if len(key_lengths) != n:
            raise ValueError(f"keys describe {len(key_lengths)} records but values describe {n}")
    if timestamps_ms is None:
        timestamps_ms = _now_ms()
    timestamps_ms = np.broadcast_to(np.asarray(timestamps_ms, dtype=np.int64), (n,))
    return assemble_batch(
        offset_deltas=np.arange(n, dtype=np.uint32),
        timestamps_ms=timestamps_ms,
        key_lengths=key_lengths,
        value_lengths=value_lengths,
        headers_lengths=np.full(n, -1, dtype=np.int32),
        payload_parts=[key_bytes, value_bytes],
        base_offset=base_offset,
        leader_term=leader_term,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        attributes=attributes,
        writable=writable,
    )


def _gather(payload: np.ndarray, positions: np.ndarray, lengths: np.ndarray) -> bytes:
    """The bytes of the given (position, length) runs of payload, concatenated, without a loop."""
    sizes = np.maximum(lengths, 0).astype(np.int64)
    total_bytes = int(sizes.sum())
    if total_bytes == 0:
        return b""
    run_starts = np.cumsum(sizes) - sizes
    indexes = np.arange(total_bytes, dtype=np.int64) + np.repeat(positions - run_starts, sizes)
    return payload[indexes].tobytes()


def filter_batch(batch: RecordBatch, keep: np.ndarray) -> bytes:
    """A copy of batch holding only the records where keep is True, with their original
    offsets, the batch's span (last_offset_delta), term and producer fields. Keeping nothing
    gives a record-less batch, so the log's offsets stay contiguous (compaction uses this)."""
    arrays = batch.arrays()
    table = batch._table()
    keep = np.asarray(keep, dtype=bool)
    headers_lengths = table["headers_length"]
    values_end = int(np.maximum(arrays.value_lengths, 0).sum(dtype=np.int64)) + (
        int(arrays.value_positions[0]) if len(table) else 0
    )
    headers_positions = _exclusive_cumsum(headers_lengths) + values_end
    payload = np.frombuffer(arrays.payload, dtype=np.uint8)
    return assemble_batch(
        offset_deltas=table["offset_delta"][keep],
        timestamps_ms=arrays.timestamps_ms[keep],
        key_lengths=arrays.key_lengths[keep],
        value_lengths=arrays.value_lengths[keep],
        headers_lengths=headers_lengths[keep],
        payload_parts=[
            _gather(payload, arrays.key_positions[keep], arrays.key_lengths[keep]),
            _gather(payload, arrays.value_positions[keep], arrays.value_lengths[keep]),
            _gather(payload, headers_positions[keep], headers_lengths[keep]),
        ],
        last_offset_delta=batch.last_offset_delta,
        base_offset=batch.base_offset,
        leader_term=batch.leader_term,
        producer_id=batch.producer_id,
        producer_epoch=batch.producer_epoch,
        base_sequence=batch.base_sequence,
        attributes=batch.attributes,
    )


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


def decode_records(buf) -> list[Record]:
    """Every record of every whole batch in buf, verified (client side convenience)."""
    return [record for batch in iter_batches(buf) for record in batch.records()]
