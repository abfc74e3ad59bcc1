"""Record batch format: round trips, stamping, verification of damaged bytes, region iteration."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distlog.log.batch import (
    HEADER_SIZE,
    MAGIC,
    RECORD_DTYPE,
    CorruptBatchError,
    RecordBatch,
    iter_batches,
    peek_header,
    stamp_batch,
    stamp_producer_fields,
    with_producer_fields,
)
from distlog.log.batch_builder import build_batch, build_batch_from_arrays
from distlog.log.records import Record, batch_records, decode_records, record_at

maybe_bytes = st.one_of(st.none(), st.binary(max_size=40))
header_lists = st.one_of(
    st.none(), st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3)
)


@st.composite
def record_lists(draw):
    n = draw(st.integers(min_value=1, max_value=20))
    values = draw(st.lists(maybe_bytes, min_size=n, max_size=n))
    keys = draw(st.one_of(st.none(), st.lists(maybe_bytes, min_size=n, max_size=n)))
    timestamps = draw(st.lists(st.integers(min_value=0, max_value=2**45), min_size=n, max_size=n))
    headers = draw(st.one_of(st.none(), st.lists(header_lists, min_size=n, max_size=n)))
    return values, keys, timestamps, headers


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


def test_stamp_keeps_the_crc_valid():
    buf = bytearray(build_batch([b"x", b"y", b"z"]))
    crc_before = RecordBatch(buf).crc
    stamp_batch(buf, 1234, 9)
    batch = RecordBatch(buf)
    batch.verify()
    assert (batch.base_offset, batch.last_offset, batch.leader_term, batch.crc) == (1234, 1236, 9, crc_before)
    stamp_batch(memoryview(buf), 99, 1)
    assert peek_header(buf).base_offset == 99


def test_producer_fields_stamped_in_place_match_the_copying_stamp():
    built = build_batch([b"a", b"bb", None], writable=True)
    assert isinstance(built, bytearray)
    copied = with_producer_fields(bytes(built), 77, 3, 1000)
    buffer_before = id(built)
    stamp_producer_fields(built, 77, 3, 1000)
    assert id(built) == buffer_before and bytes(built) == copied
    batch = RecordBatch(built)
    batch.verify()  # the crc was recomputed over the new fields
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (77, 3, 1000)
    arrays = build_batch_from_arrays(np.zeros((4, 8), dtype=np.uint8), writable=True)
    assert isinstance(arrays, bytearray) and isinstance(build_batch_from_arrays(np.zeros((4, 8), dtype=np.uint8)), bytes)


def test_header_layout_is_documented_size():
    assert HEADER_SIZE == 61
    assert RECORD_DTYPE.itemsize == 24
    assert build_batch([b"v"])[0] == MAGIC


@pytest.mark.parametrize("position", range(21, HEADER_SIZE + 24 + 2))
def test_any_flipped_bit_after_the_crc_is_detected(position):
    buf = bytearray(build_batch([b"v"], [b"k"], [5]))
    buf[position] ^= 0x10
    with pytest.raises(CorruptBatchError, match="crc32c mismatch"):
        RecordBatch(buf).verify()


def test_bad_magic_and_short_header_say_where():
    buf = bytearray(build_batch([b"v"]))
    with pytest.raises(CorruptBatchError, match="cut off: 10 of 61"):
        peek_header(buf[:10])
    buf[0] = 7
    with pytest.raises(CorruptBatchError, match="byte 0 has magic 7"):
        peek_header(buf)


def test_inconsistent_table_is_reported_even_with_a_fresh_crc():
    import crc32c

    buf = bytearray(build_batch([b"abc"]))
    table = np.frombuffer(buf, dtype=RECORD_DTYPE, count=1, offset=HEADER_SIZE)
    table["value_length"] = 2
    struct.pack_into("<I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    with pytest.raises(CorruptBatchError, match="describes 2 payload bytes but 3 follow"):
        RecordBatch(buf).verify()


def test_iter_batches_skips_a_cut_off_tail_and_raises_on_corruption():
    region = build_batch([b"a"], base_offset=0) + build_batch([b"b", b"c"], base_offset=1)
    third = build_batch([b"d"], base_offset=3)
    batches = list(iter_batches(region + third[:-1]))
    assert [b.base_offset for b in batches] == [0, 1]
    assert [r.value for r in decode_records(region + third[:30])] == [b"a", b"b", b"c"]
    damaged = bytearray(region + third)
    damaged[len(region) + HEADER_SIZE + 5] ^= 1
    with pytest.raises(CorruptBatchError, match=f"at byte {len(region)}"):
        list(iter_batches(damaged))
    assert len(list(iter_batches(damaged, verify=False))) == 3


def test_record_batch_wraps_without_copying():
    buf = bytearray(build_batch([b"abc"]) + b"trailing")
    batch = RecordBatch(memoryview(buf))
    assert len(batch.buffer) == batch.batch_length
    buf[batch.batch_length - 1] = ord("z")
    assert batch_records(batch)[0].value == b"abz"


def test_empty_batches_are_refused():
    with pytest.raises(ValueError):
        build_batch([])


@settings(max_examples=60, deadline=None)
@given(record_lists(), st.integers(min_value=0, max_value=2**40))
def test_record_at_one_offset_matches_full_decode(records, base_offset):
    values, keys, timestamps, headers = records
    batch = RecordBatch(build_batch(values, keys, timestamps, headers, base_offset=base_offset))
    for record in batch_records(batch):
        assert record_at(batch, record.offset) == record
    with pytest.raises(KeyError):
        record_at(batch, base_offset + len(values))


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


@settings(max_examples=100, deadline=None)
@given(record_lists(), st.data())
def test_filter_batch_keeps_exactly_the_chosen_records_and_the_span(records, data):
    from distlog.log.compaction import filter_batch

    values, keys, timestamps, headers = records
    batch = RecordBatch(build_batch(values, keys, timestamps, headers, base_offset=100, leader_term=4, producer_id=5))
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    filtered = RecordBatch(filter_batch(batch, keep))
    filtered.verify()
    assert batch_records(filtered) == [record for record, kept in zip(batch_records(batch), keep) if kept]
    assert (filtered.base_offset, filtered.last_offset, filtered.leader_term, filtered.producer_id) == (
        100, 100 + len(values) - 1, 4, 5
    )


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


def test_a_base_offset_past_int64_is_corrupt_not_an_overflow():
    # Found by the damaged-regions fuzz test in CI: base_offset is outside the CRC, so a flipped
    # top bit reached numpy and raised OverflowError instead of CorruptBatchError.
    import struct

    from distlog.log.batch import CorruptBatchError, RecordBatch
    from distlog.log.batch_builder import build_batch
    from distlog.log.records import decode_records

    damaged = bytearray(build_batch([None]))
    struct.pack_into("<Q", damaged, 1, 2**63)
    with pytest.raises(CorruptBatchError, match="largest offset"):
        RecordBatch(damaged).verify()
    with pytest.raises(CorruptBatchError):
        decode_records(damaged)
