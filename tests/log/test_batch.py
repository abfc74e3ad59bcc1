"""Record batch format: stamping, header layout, verification of damaged bytes, region iteration."""

import struct

import numpy as np
import pytest

from distlog.log.batch import (
    HEADER_SIZE,
    MAGIC,
    RECORD_DTYPE,
    CorruptBatchError,
    RecordBatch,
    batch_crc,
    iter_batches,
    peek_header,
    stamp_batch,
    stamp_producer_fields,
    with_producer_fields,
)
from distlog.log.batch_builder import build_batch, build_batch_from_arrays
from distlog.log.records import batch_records, decode_records


def test_stamp_keeps_the_crc_valid_and_the_crc_covers_the_term_but_not_the_base_offset():
    buf = bytearray(build_batch([b"x", b"y", b"z"]))
    crc_before = RecordBatch(buf).crc
    stamp_batch(buf, 1234, 0)  # the base offset alone: the crc stays as it was
    assert RecordBatch(buf).crc == crc_before
    stamp_batch(buf, 1234, 9)
    batch = RecordBatch(buf)
    batch.verify()
    assert (batch.base_offset, batch.last_offset, batch.leader_term) == (1234, 1236, 9)
    assert batch.crc != crc_before  # recomputed over the new term
    stamp_batch(memoryview(buf), 99, 9)
    assert peek_header(buf).base_offset == 99
    buf[16] ^= 0x01  # a flipped bit in the term is caught
    with pytest.raises(CorruptBatchError, match="crc32c mismatch"):
        RecordBatch(buf).verify()


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
    buf = bytearray(build_batch([b"abc"]))
    table = np.frombuffer(buf, dtype=RECORD_DTYPE, count=1, offset=HEADER_SIZE)
    table["value_length"] = 2
    struct.pack_into("<I", buf, 17, batch_crc(buf))
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


def test_a_base_offset_past_int64_is_corrupt_not_an_overflow():
    # Found by the damaged-regions fuzz test in CI: base_offset is outside the CRC, so a flipped
    # top bit reached numpy and raised OverflowError instead of CorruptBatchError.
    damaged = bytearray(build_batch([None]))
    struct.pack_into("<Q", damaged, 1, 2**63)
    with pytest.raises(CorruptBatchError, match="largest offset"):
        RecordBatch(damaged).verify()
    with pytest.raises(CorruptBatchError):
        decode_records(damaged)
