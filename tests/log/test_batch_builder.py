"""Batch builders: every field round trips, the list and array builders lay out the same bytes,
and bad columns are refused."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch, build_batch_from_arrays
from distlog.log.records import Record, batch_records, decode_records
from tests.log.strategies import maybe_bytes, record_lists


@settings(max_examples=150, deadline=None)
@given(record_lists(), st.integers(min_value=0, max_value=2**62), st.integers(min_value=0, max_value=2**32 - 1))
def test_build_batch_round_trips_every_field(records, base_offset, leader_term):
    values, keys, timestamps, headers = records
    buf = build_batch(values, keys, timestamps, headers, base_offset=base_offset, leader_term=leader_term,
                      producer_id=7, producer_epoch=3, base_sequence=11)
    batch = RecordBatch(buf)
    batch.verify()
    n = len(values)
    assert batch.record_count == n
    assert batch.base_offset == base_offset
    assert batch.last_offset == base_offset + n - 1
    assert batch.leader_term == leader_term
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (7, 3, 11)
    assert batch.first_timestamp_ms == timestamps[0]
    assert batch.max_timestamp_ms == max(timestamps)
    assert batch.batch_length == len(buf)
    expected = [
        Record(base_offset + i, timestamps[i], (keys or [None] * n)[i], values[i], list((headers or [None] * n)[i] or []))
        for i in range(n)
    ]
    assert batch_records(batch) == expected
    assert decode_records(buf) == expected


def test_builders_agree_for_equal_length_values():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 256, size=(1000, 100), dtype=np.uint8)
    keys = rng.integers(0, 256, size=(1000, 8), dtype=np.uint8)
    timestamps = np.arange(1000, dtype=np.int64) + 1_700_000_000_000
    from_arrays = build_batch_from_arrays(values, keys, timestamps, base_offset=5)
    from_lists = build_batch([bytes(v) for v in values], [bytes(k) for k in keys], list(timestamps), base_offset=5)
    assert from_arrays == from_lists
    batch = RecordBatch(from_arrays)
    batch.verify()
    assert np.array_equal(batch.values_2d(), values)
    arrays = batch.arrays()
    assert np.array_equal(arrays.offsets, np.arange(5, 1005))
    assert np.array_equal(arrays.timestamps_ms, timestamps)


def test_build_from_arrays_with_lengths_and_nulls():
    buffer = np.frombuffer(b"aabbbc", dtype=np.uint8)
    buf = build_batch_from_arrays(buffer, value_lengths=np.array([2, -1, 3, 0, 1], dtype=np.int32), timestamps_ms=42)
    records = batch_records(RecordBatch(buf))
    assert [r.value for r in records] == [b"aa", None, b"bbb", b"", b"c"]
    assert all(r.key is None and r.timestamp_ms == 42 for r in records)
    with pytest.raises(ValueError):
        RecordBatch(buf).values_2d()


def test_build_from_arrays_rejects_lengths_past_the_buffer():
    with pytest.raises(ValueError, match="value_lengths add up to 5"):
        build_batch_from_arrays(np.zeros(3, dtype=np.uint8), value_lengths=[2, 3])


def test_timestamps_default_to_one_clock_read():
    batch = RecordBatch(build_batch([b"a", b"b"]))
    arrays = batch.arrays()
    assert arrays.timestamps_ms[0] == arrays.timestamps_ms[1] > 1_600_000_000_000


def test_empty_batches_are_refused():
    with pytest.raises(ValueError):
        build_batch([])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(maybe_bytes, maybe_bytes), min_size=1, max_size=30))
def test_arrays_builder_with_lengths_matches_the_list_builder(pairs):
    keys = [key for key, _ in pairs]
    values = [value for _, value in pairs]

    def column(items):
        lengths = np.array([-1 if item is None else len(item) for item in items], dtype=np.int32)
        return np.frombuffer(b"".join(item or b"" for item in items) or b"\0", dtype=np.uint8), lengths

    value_buffer, value_lengths = column(values)
    key_buffer, key_lengths = column(keys)
    from_arrays = build_batch_from_arrays(
        value_buffer, key_buffer, 77, value_lengths=value_lengths, key_lengths=key_lengths, base_offset=3
    )
    assert from_arrays == build_batch(values, keys, [77] * len(values), base_offset=3)
