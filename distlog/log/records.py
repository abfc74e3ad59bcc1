"""Decoding records: a batch's records as Python objects, for clients, tools and tests.

Record is one decoded record; batch_records decodes a whole batch, record_at one record of
it (a random read), decode_records every batch of a fetched region. They make a Python
object per record, which suits readers that hand records to a person or an application
(and the controller, reading metadata images back from its log); the broker's data
path never decodes and stays on batch.py's numpy columns. The consumer decodes column-wise
itself and falls back to batch_records only for records with headers.
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack
import numpy as np

from distlog.log.batch import (
    ATTR_FIXED_WIDTH,
    HEADER_SIZE,
    ROW_SIZE,
    ROW_STRUCT,
    RecordBatch,
    field_positions,
    iter_batches,
)


class Record(NamedTuple):
    """One decoded record; key/value are None when null, headers is a list of (str, bytes)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list


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


def batch_records(batch: RecordBatch) -> list[Record]:
    """Decode every record of batch (loops per record)."""
    arrays = batch.arrays()
    table = batch.table()
    headers_lengths = table["headers_length"]
    values_end = int(arrays.value_positions[-1] + max(int(arrays.value_lengths[-1]), 0)) if len(table) else 0
    headers_positions = field_positions(headers_lengths) + values_end
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


def record_at(batch: RecordBatch, offset: int) -> Record:
    """Decode only the record of batch at offset (a random read); KeyError if the batch lacks it."""
    n = batch.record_count
    view = batch.buffer
    delta = offset - batch.base_offset
    if 0 <= delta < n and batch.attributes & ATTR_FIXED_WIDTH:
        row_delta, timestamp_delta, key_length, value_length, _ = ROW_STRUCT.unpack_from(
            view, HEADER_SIZE + delta * ROW_SIZE
        )
        if row_delta == delta:
            _, _, key_width, value_width, _ = ROW_STRUCT.unpack_from(view, HEADER_SIZE)
            key_width, value_width = max(key_width, 0), max(value_width, 0)
            payload = view[HEADER_SIZE + n * ROW_SIZE :]
            return _decode_one(
                offset, timestamp_delta + batch.first_timestamp_ms, payload,
                (delta * key_width, key_length), (n * key_width + delta * value_width, value_length), (0, -1),
            )
    table = batch.table()
    deltas = table["offset_delta"]
    row = delta
    if not (0 <= row < len(deltas) and int(deltas[row]) == delta):
        row = int(np.searchsorted(deltas, delta)) if delta >= 0 else len(deltas)
        if row >= len(deltas) or int(deltas[row]) != delta:
            raise KeyError(f"batch at offset {batch.base_offset} has no record at offset {offset}")
    # The three length columns are the last three int32 words of each 24-byte row.
    lengths = np.frombuffer(view, dtype="<i4", count=len(deltas) * 6, offset=HEADER_SIZE).reshape(-1, 6)[:, 3:]
    sizes = np.maximum(lengths, 0)
    totals = sizes.sum(axis=0, dtype=np.int64).tolist()
    before = sizes[:row].sum(axis=0, dtype=np.int64).tolist()
    key_length, value_length, headers_length = lengths[row].tolist()
    payload = view[HEADER_SIZE + len(deltas) * ROW_SIZE :]
    return _decode_one(
        offset, int(table[row]["timestamp_delta"]) + batch.first_timestamp_ms, payload,
        (before[0], key_length), (totals[0] + before[1], value_length),
        (totals[0] + totals[1] + before[2], headers_length),
    )


def decode_records(buf) -> list[Record]:
    """Every record of every whole batch in buf, verified."""
    return [record for batch in iter_batches(buf) for record in batch_records(batch)]
