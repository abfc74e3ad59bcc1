"""PartitionLog: append (leader and follower), read bounds, rolling, truncation, timestamps,
flush policy, and bad input that must leave the disk untouched."""

import os

import pytest

from distlog.log.batch import CorruptBatchError, RecordBatch, iter_batches, stamp_batch
from distlog.log.batch_builder import build_batch
from distlog.log.errors import (
    CorruptSegmentNameError,
    NotAPartitionLogError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
)
from distlog.log.records import batch_records
from tests.log.helpers import read_all, values_batch


def test_leader_append_assigns_consecutive_offsets_and_term(open_log):
    log = open_log()
    assert (log.log_start_offset, log.log_end_offset, log.last_term) == (0, 0, 0)
    assert log.append(values_batch(b"a", b"b"), leader_term=3) == (0, 1)
    assert log.append(values_batch(b"c"), leader_term=4) == (2, 2)
    assert log.log_end_offset == 3
    assert log.last_term == 4
    assert [(r.offset, r.value) for r in read_all(log)] == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert log.batch_header_at(1).leader_term == 3
    assert log.batch_header_at(2).base_offset == 2


def test_several_batches_in_one_buffer_are_stamped_in_order(open_log):
    log = open_log()
    log.append(values_batch(b"x"))
    assert log.append(values_batch(b"a", b"b") + values_batch(b"c")) == (1, 3)
    assert [r.offset for r in read_all(log)] == [0, 1, 2, 3]
    assert [b.base_offset for b in iter_batches(log.read(0, 1 << 20))] == [0, 1, 3]


def test_append_does_not_modify_the_callers_buffer(open_log):
    log = open_log()
    log.append(values_batch(b"x"))
    original = bytearray(values_batch(b"a"))
    snapshot = bytes(original)
    log.append(original)
    assert bytes(original) == snapshot


def test_follower_append_keeps_offsets_and_requires_contiguity(open_log):
    leader = open_log()
    follower = open_log(directory=leader.directory + "-follower")
    leader.append(values_batch(b"a", b"b"), leader_term=2)
    leader.append(values_batch(b"c"), leader_term=2)
    assert follower.append(leader.read(0, 1 << 20), assign_offsets=False) == (0, 2)
    assert bytes(follower.read(0, 1 << 20)) == bytes(leader.read(0, 1 << 20))
    assert follower.last_term == 2
    gap = bytearray(values_batch(b"z"))
    stamp_batch(gap, 5, 2)
    with pytest.raises(ValueError, match="starts at offset 5, but the log continues at 3"):
        follower.append(gap, assign_offsets=False)
    assert follower.log_end_offset == 3


def test_read_returns_whole_batches_within_max_bytes_but_at_least_one(open_log):
    log = open_log()
    for i in range(10):
        log.append(values_batch(b"v" * 50, b"w" * 50))
    batch_bytes = RecordBatch(log.read(0, 1)).batch_length
    assert len(log.read(0, 1)) == batch_bytes
    assert len(log.read(0, batch_bytes * 3 + 5)) == batch_bytes * 3
    assert RecordBatch(log.read(5, 1)).base_offset == 4  # offset 5 lives in the batch 4..5
    assert len(log.read(0, 1 << 20)) == batch_bytes * 10


def test_read_stops_before_the_high_watermark(open_log):
    log = open_log()
    for _ in range(5):
        log.append(values_batch(b"a", b"b"))
    assert [b.base_offset for b in iter_batches(log.read(0, 1 << 20, max_offset=5))] == [0, 2, 4]
    assert [b.base_offset for b in iter_batches(log.read(0, 1 << 20, max_offset=4))] == [0, 2]
    assert len(log.read(4, 1 << 20, max_offset=4)) == 0
    assert len(log.read(0, 1, max_offset=0)) == 0


def test_read_at_the_end_is_empty_and_outside_the_range_raises(open_log):
    log = open_log()
    assert len(log.read(0, 100)) == 0
    log.append(values_batch(b"a"))
    assert len(log.read(1, 100)) == 0
    with pytest.raises(OffsetOutOfRangeError, match="valid read positions are 0..1") as raised:
        log.read(2, 100)
    assert (raised.value.offset, raised.value.log_start_offset, raised.value.log_end_offset) == (2, 0, 1)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.batch_header_at(1)


def test_segments_roll_at_segment_bytes_and_reads_cross_them(open_log):
    log = open_log(segment_bytes=300, index_interval_bytes=1)
    for i in range(30):
        log.append(values_batch(b"%03d" % i, b"x" * 40))
    segments = log.segments
    assert len(segments) > 5
    assert all(s.size_bytes <= 300 for s in segments)
    assert [s.base_offset for s in segments[1:]] == [s.next_offset for s in segments[:-1]]
    assert [r.offset for r in read_all(log, max_bytes=1)] == list(range(60))
    for offset in range(60):
        assert RecordBatch(log.read(offset, 1)).base_offset == offset - offset % 2
    names = sorted(os.listdir(log.directory))
    assert names[:3] == ["00000000000000000000.index", "00000000000000000000.log", "00000000000000000000.timeindex"]


def test_a_batch_bigger_than_a_segment_gets_a_segment_of_its_own(open_log):
    log = open_log(segment_bytes=100)
    log.append(values_batch(b"x" * 500))
    log.append(values_batch(b"y" * 500))
    assert [s.base_offset for s in log.segments] == [0, 1]
    assert [r.value[:1] for r in read_all(log)] == [b"x", b"y"]


def test_segments_roll_by_age(open_log, clock):
    log = open_log(segment_ms=1000)
    log.append(values_batch(b"a"))
    clock.advance(999)
    log.append(values_batch(b"b"))
    assert len(log.segments) == 1
    clock.advance(1)
    log.append(values_batch(b"c"))
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_offset_for_timestamp_finds_the_first_record_at_or_after(open_log):
    log = open_log(segment_bytes=400, index_interval_bytes=1)
    for i in range(20):
        log.append(build_batch([b"a", b"b"], timestamps_ms=[1000 + 10 * i, 1005 + 10 * i]))
    assert len(log.segments) > 2
    assert log.offset_for_timestamp(0) == 0
    assert log.offset_for_timestamp(1000) == 0
    assert log.offset_for_timestamp(1001) == 1
    assert log.offset_for_timestamp(1006) == 2
    assert log.offset_for_timestamp(1195) == 39
    assert log.offset_for_timestamp(1196) is None


def test_truncate_to_drops_the_tail_across_segments(open_log):
    log = open_log(segment_bytes=250)
    for i in range(12):
        log.append(values_batch(b"%02d" % i, b"y" * 30), leader_term=1 + i // 4)
    assert len(log.segments) > 3
    with pytest.raises(ValueError, match="truncate to a batch boundary"):
        log.truncate_to(5)
    log.truncate_to(10)
    assert log.log_end_offset == 10
    assert log.last_term == 2
    assert [r.offset for r in read_all(log)] == list(range(10))
    assert log.append(values_batch(b"new"), leader_term=7) == (10, 10)
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset, log.last_term, len(log.segments)) == (0, 0, 0, 1)
    assert sorted(os.listdir(log.directory)) == [
        "00000000000000000000.index", "00000000000000000000.log", "00000000000000000000.timeindex"
    ]


def test_truncate_survives_reopen(open_log, tmp_path):
    log = open_log(segment_bytes=200)
    for i in range(10):
        log.append(values_batch(b"%d" % i, b"z" * 30), leader_term=5)
    log.truncate_to(8)
    log.append(values_batch(b"after"), leader_term=6)
    log.close()
    reopened = open_log(segment_bytes=200)
    assert reopened.log_end_offset == 9
    assert reopened.last_term == 6
    assert [r.value for r in read_all(reopened)][-1] == b"after"


def test_truncate_keeps_views_read_before_it_valid(open_log):
    log = open_log()
    for i in range(5):
        log.append(values_batch(b"keep-%d" % i))
    held = log.read(0, 1 << 20)
    log.truncate_to(1)
    log.append(values_batch(b"overwrite" * 5))
    assert [r.value for r in batch_records(RecordBatch(held))] == [b"keep-0"]
    assert [b.record_count for b in iter_batches(held)] == [1] * 5


def test_reset_to_starts_over_at_an_offset(open_log):
    log = open_log(segment_bytes=200)
    for i in range(10):
        log.append(values_batch(b"x" * 40))
    log.reset_to(500)
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (500, 500, 0)
    assert log.append(values_batch(b"a")) == (500, 500)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(499, 100)
    log.close()
    reopened = open_log(segment_bytes=200)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (500, 501)


def test_corrupt_batches_are_never_written(open_log):
    log = open_log()
    log.append(values_batch(b"good"))
    damaged = bytearray(values_batch(b"bad"))
    damaged[-1] ^= 0xFF
    with pytest.raises(CorruptBatchError, match="crc32c mismatch"):
        log.append(values_batch(b"fine") + bytes(damaged))
    with pytest.raises(CorruptBatchError, match="cut off"):
        log.append(values_batch(b"fine")[:-3])
    assert log.log_end_offset == 1
    assert log.size_bytes == len(values_batch(b"good"))


def test_batches_over_max_message_bytes_are_refused(open_log):
    log = open_log(max_message_bytes=200)
    with pytest.raises(RecordTooLargeError, match="max.message.bytes=200"):
        log.append(values_batch(b"x" * 300))
    assert (log.log_end_offset, log.size_bytes) == (0, 0)


def test_flush_policy_always_flushes_when_dirty(open_log, monkeypatch):
    log = open_log()
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    assert log.maybe_flush() is False
    log.append(values_batch(b"a"))
    assert log.maybe_flush() is True
    assert fsyncs
    assert log.maybe_flush() is False


def test_flush_policy_interval_and_never(open_log, clock):
    interval_log = open_log(flush_policy="interval:100")
    interval_log.append(values_batch(b"a"))
    assert interval_log.maybe_flush(clock.now_ms + 50) is False
    assert interval_log.maybe_flush(clock.now_ms + 100) is True
    never_log = open_log(directory=interval_log.directory + "-never", flush_policy="never")
    never_log.append(values_batch(b"a"))
    assert never_log.maybe_flush(clock.now_ms + 10**9) is False


def test_a_directory_with_foreign_files_is_refused_untouched(tmp_path, open_log):
    directory = tmp_path / "not-a-log"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    (directory / "draft.tmp").write_text("mine too")
    (directory / "00000000000000000000.log.tmp").write_text("looks like ours")
    with pytest.raises(NotAPartitionLogError, match="notes.txt"):
        open_log(directory=directory)
    assert sorted(os.listdir(directory)) == ["00000000000000000000.log.tmp", "draft.tmp", "notes.txt"]


def test_a_segment_name_that_does_not_parse_is_refused(tmp_path, open_log):
    log = open_log()
    log.append(values_batch(b"a"))
    log.close()
    (tmp_path / "p0" / "12x.log").write_bytes(b"")
    with pytest.raises(CorruptSegmentNameError, match="12x.log"):
        open_log()


def test_open_creates_missing_directories_and_delete_removes_it(tmp_path, open_log):
    log = open_log(directory=tmp_path / "a" / "b" / "p3")
    log.append(values_batch(b"a"))
    log.delete()
    assert not (tmp_path / "a" / "b" / "p3").exists()


def test_closed_log_refuses_appends(open_log):
    log = open_log()
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.append(values_batch(b"a"))


def test_numpy_offsets_are_accepted_and_non_integers_refused(open_log):
    import numpy as np

    log = open_log()
    log.append(values_batch(b"a", b"b"))
    assert RecordBatch(log.read(np.int64(1), 10)).base_offset == 0
    with pytest.raises(TypeError):
        log.read(1.0, 10)
    with pytest.raises(TypeError):
        log.truncate_to(None)


def test_a_tailing_reader_thread_sees_every_record_in_order_while_appends_roll(open_log):
    import threading
    import time

    log = open_log(segment_bytes=2000, index_interval_bytes=64)
    total = 300
    seen = []
    errors = []

    def tail():
        offset = 0
        deadline = time.monotonic() + 20
        while offset < total and time.monotonic() < deadline:
            try:
                for batch in iter_batches(log.read(offset, 700)):
                    seen.extend(record.value for record in batch_records(batch) if record.offset >= offset)
                    offset = batch.last_offset + 1
            except Exception as error:  # the writer thread must never hand the reader bad bytes
                errors.append(repr(error))
                return

    reader = threading.Thread(target=tail)
    reader.start()
    for i in range(0, total, 3):
        log.append(values_batch(b"%d" % i, b"%d" % (i + 1), b"%d" % (i + 2)))
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert errors == []
    assert seen == [b"%d" % i for i in range(total)]
    assert len(log.segments) > 5


def test_a_file_where_the_directory_should_be_is_refused(tmp_path, open_log):
    path = tmp_path / "p9"
    path.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is a file"):
        open_log(directory=path)
    assert path.read_text() == "not a directory"


def test_a_producer_batch_cannot_burn_offsets(open_log):
    import struct

    from distlog.log.batch import batch_crc

    log = open_log()
    batch = bytearray(values_batch(b"a"))
    struct.pack_into("<I", batch, 27, 1_000_000)  # last_offset_delta, covered by the crc
    struct.pack_into("<I", batch, 17, batch_crc(batch))
    RecordBatch(batch).verify()  # a valid compacted-style batch ...
    with pytest.raises(CorruptBatchError, match="numbers its records 0..n-1"):
        log.append(batch)  # ... but not something a producer may send
    assert log.log_end_offset == 0


def test_close_releases_every_file_descriptor(tmp_path, clock):
    import gc

    from distlog.log.config import LogConfig
    from distlog.log.partition_log import PartitionLog

    def open_fds():
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    config = LogConfig(segment_bytes=300, cleanup_policy="compact")
    log = PartitionLog.open(str(tmp_path / "fds"), config, clock_ms=clock)
    for i in range(20):
        log.append(values_batch(b"v%d" % i * 20, keys=[b"k%d" % (i % 3)]))
    read_all(log)
    log.compact()
    log.truncate_to(log.segments[2].base_offset)
    log.close()
    assert open_fds() == before


def test_tail_start_offset_covers_at_least_the_asked_bytes_and_not_much_more(open_log):
    log = open_log(segment_bytes=2000, index_interval_bytes=1)
    for i in range(60):
        log.append(values_batch(b"v%02d" % i))
    batch_bytes = log.size_bytes // 60
    assert log.tail_start_offset(10**9) == log.log_start_offset
    for tail_bytes in (1, batch_bytes * 3, 2000, 2500):
        start = log.tail_start_offset(tail_bytes)
        covered = sum(b.batch_length for b in iter_batches_from(log, start))
        assert tail_bytes <= covered < tail_bytes + batch_bytes, (tail_bytes, start, covered)


def iter_batches_from(log, offset):
    while offset < log.log_end_offset:
        for batch in iter_batches(log.read(offset, 1 << 20)):
            yield batch
            offset = batch.last_offset + 1


def test_delete_segments_before_drops_whole_leading_segments_but_never_the_active_one(open_log):
    log = open_log(segment_bytes=200)
    for i in range(8):
        log.append(values_batch(b"v" * 50))
    boundaries = [segment.next_offset for segment in log.segments[:-1]]
    assert log.delete_segments_before(boundaries[0] - 1) == 0
    assert log.delete_segments_before(boundaries[1]) == 2
    assert log.log_start_offset == boundaries[1]
    assert log.delete_segments_before(10**9) == len(boundaries) - 2
    assert len(log.segments) == 1 and log.log_end_offset == 8
