"""Building record batches: lay out the format of batch.py from Python lists or numpy columns.

The producer seals every batch it sends with build_batch (lists of bytes) or
build_batch_from_arrays (numpy columns), and compaction re-lays the records it keeps with
assemble_batch; both must cost no Python bytecode loop per record, so every per-record step
runs in C or numpy. The builders alone set ATTR_FIXED_WIDTH, and they compute the crc32c.
"""

from __future__ import annotations

import operator
import struct
import time
from itertools import compress, repeat

import crc32c
import msgpack
import numpy as np

from distlog.log.batch import (
    ATTR_FIXED_WIDTH,
    CRC_POS,
    CRC_START,
    LEADER_TERM_POS,
    HEADER_SIZE,
    HEADER_STRUCT,
    MAGIC,
    MAX_BATCH_BYTES,
    RECORD_DTYPE,
    ROW_SIZE,
    is_fixed_width,
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
    if batch_length > MAX_BATCH_BYTES:
        raise ValueError(f"batch of {batch_length} bytes exceeds the format limit of {MAX_BATCH_BYTES}")
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
    if n and is_fixed_width(table):
        attributes |= ATTR_FIXED_WIDTH
    header = bytearray(HEADER_SIZE)
    HEADER_STRUCT.pack_into(
        header, 0, MAGIC, base_offset, batch_length, leader_term, 0, attributes, n, last_offset_delta,
        first_timestamp_ms, max_timestamp_ms, producer_id, producer_epoch, base_sequence,
    )
    pieces = [header, memoryview(table).cast("B"), *(memoryview(part).cast("B") for part in payload_parts)]
    # batch.batch_crc over the pieces, without joining them first: the term, then the rest
    crc = crc32c.crc32c(memoryview(header)[CRC_START:], crc32c.crc32c(memoryview(header)[LEADER_TERM_POS:CRC_POS]))
    for piece in pieces[1:]:
        crc = crc32c.crc32c(piece, crc)
    struct.pack_into("<I", header, CRC_POS, crc)
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
