"""Decoding records: one record read at random matches the whole batch decoded, and damaged
regions only ever raise CorruptBatchError."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distlog.log.batch import CorruptBatchError, RecordBatch
from distlog.log.batch_builder import build_batch
from distlog.log.records import batch_records, decode_records, record_at
from tests.log.strategies import record_lists


@settings(max_examples=60, deadline=None)
@given(record_lists(), st.integers(min_value=0, max_value=2**40))
def test_record_at_one_offset_matches_full_decode(records, base_offset):
    values, keys, timestamps, headers = records
    batch = RecordBatch(build_batch(values, keys, timestamps, headers, base_offset=base_offset))
    for record in batch_records(batch):
        assert record_at(batch, record.offset) == record
    with pytest.raises(KeyError):
        record_at(batch, base_offset + len(values))


@settings(max_examples=300, deadline=None)
@given(record_lists(), st.data())
def test_damaged_regions_only_ever_raise_corrupt_batch_error(records, data):
    values, keys, timestamps, headers = records
    region = bytearray(build_batch(values, keys, timestamps, headers) * 2)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(region) - 1))
        region[position] = data.draw(st.integers(0, 255))
    region = region[: data.draw(st.integers(0, len(region)))]
    try:
        decoded = decode_records(region)
    except CorruptBatchError:
        return
    assert len(decoded) <= 2 * len(values)
