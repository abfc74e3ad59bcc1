"""Retention (time and size, whole closed segments) and compaction (last value per key,
tombstones, atomic swap under concurrent readers)."""

import errno
import os
import threading
import time

import pytest

from distlog.log.batch import RecordBatch, iter_batches
from distlog.log.records import Record, batch_records
from distlog.log.errors import OffsetOutOfRangeError
from tests.log.helpers import read_all, values_batch

DAY_MS = 24 * 3600 * 1000


def test_time_retention_deletes_old_closed_segments_only(open_log, clock):
    log = open_log(segment_bytes=200, retention_ms=DAY_MS)  # one 145-byte batch per segment
    for i in range(8):
        log.append(values_batch(b"x" * 60, timestamp_ms=clock.now_ms + i * 1000))
    assert len(log.segments) == 8
    assert log.apply_retention(clock.now_ms + DAY_MS) == 0
    assert log.apply_retention(clock.now_ms + DAY_MS + 3500) == 4  # batches 0..3 are too old
    assert log.log_start_offset == 4
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    assert [r.offset for r in read_all(log)] == [4, 5, 6, 7]
    assert log.apply_retention(clock.now_ms + 10 * DAY_MS) == 3
    assert (len(log.segments), log.log_start_offset, log.log_end_offset) == (1, 7, 8)  # the active one stays


def test_size_retention_keeps_at_least_retention_bytes(open_log, clock):
    log = open_log(segment_bytes=300, retention_bytes=500, retention_ms=-1)
    for _ in range(20):
        log.append(values_batch(b"y" * 80))
    deleted = log.apply_retention(clock.now_ms + 100 * DAY_MS)
    assert deleted > 0
    assert log.size_bytes >= 500
    assert log.size_bytes - log.segments[0].size_bytes < 500
    assert log.log_start_offset == log.segments[0].base_offset > 0


def test_retention_forever_and_compacted_topics_delete_nothing(open_log, clock):
    forever = open_log(segment_bytes=200, retention_ms=-1)
    compacted = open_log(directory=forever.directory + "-c", segment_bytes=200, cleanup_policy="compact", retention_ms=1)
    for log in (forever, compacted):
        for _ in range(6):
            log.append(values_batch(b"z" * 80, keys=[b"k"]))
        assert log.apply_retention(clock.now_ms + 1000 * DAY_MS) == 0


def test_retention_survives_reopen(open_log, clock):
    log = open_log(segment_bytes=200, retention_ms=DAY_MS)
    for i in range(6):
        log.append(values_batch(b"x" * 80, timestamp_ms=clock.now_ms))
    log.apply_retention(clock.now_ms + 2 * DAY_MS)
    start = log.log_start_offset
    log.close()
    assert open_log(segment_bytes=200, retention_ms=DAY_MS).log_start_offset == start > 0


def _keyed_log(open_log, clock, rounds=6, keys=4):
    log = open_log(segment_bytes=400, cleanup_policy="compact", delete_retention_ms=DAY_MS)
    for round_number in range(rounds):
        for key in range(keys):
            value = b"k%d-r%d" % (key, round_number)
            log.append(values_batch(value, keys=[b"k%d" % key], timestamp_ms=clock.now_ms))
    return log


def test_compaction_keeps_the_last_value_per_key_and_all_offsets(open_log, clock):
    log = _keyed_log(open_log, clock)
    end_before = log.log_end_offset
    before = {r.offset: r for r in read_all(log)}
    active_before = bytes(log.read(log.segments[-1].base_offset, 1 << 20))
    stats = log.compact()
    assert 1 <= stats.segments_cleaned <= len(log.segments) - 1
    assert stats.records_after < stats.records_before
    assert stats.bytes_after < stats.bytes_before
    after = read_all(log)
    assert log.log_end_offset == end_before
    assert bytes(log.read(log.segments[-1].base_offset, 1 << 20)) == active_before
    for record in after:
        assert before[record.offset] == record  # survivors keep offset, key, value, timestamp
    closed_end = log.segments[-1].base_offset
    latest_closed = {}
    for record in before.values():
        if record.offset < closed_end:
            latest_closed[record.key] = record.offset
    survivors_in_closed = sorted(r.offset for r in after if r.offset < closed_end)
    assert survivors_in_closed == sorted(latest_closed.values())
    for offset in range(end_before):  # every offset still resolves to a batch (spans kept)
        assert log.batch_header_at(offset).base_offset <= offset


def test_compaction_is_idempotent_and_survives_reopen(open_log, clock):
    log = _keyed_log(open_log, clock)
    log.compact()
    once = read_all(log)
    stats = log.compact()
    assert stats.records_before == stats.records_after
    assert stats.segments_cleaned == 0
    assert read_all(log) == once
    log.close()
    reopened = open_log(segment_bytes=400, cleanup_policy="compact")
    assert read_all(reopened) == once


def test_tombstones_stay_for_delete_retention_then_go(open_log, clock):
    log = open_log(segment_bytes=250, cleanup_policy="compact", delete_retention_ms=DAY_MS)
    log.append(values_batch(b"v1", keys=[b"gone"]))
    log.append(values_batch(None, keys=[b"gone"]))  # tombstone
    for i in range(6):
        log.append(values_batch(b"filler-%d" % i, keys=[b"other"]))
    log.compact(clock.now_ms + 1000)
    gone = [r for r in read_all(log) if r.key == b"gone"]
    assert [(r.offset, r.value) for r in gone] == [(1, None)]
    stats = log.compact(clock.now_ms + DAY_MS + 1)
    assert stats.tombstones_removed == 1
    assert not [r for r in read_all(log) if r.key == b"gone"]


def test_compaction_is_a_no_op_for_delete_topics(open_log):
    log = open_log(segment_bytes=200)
    for _ in range(5):
        log.append(values_batch(b"x" * 50, keys=[b"same"]))
    before = read_all(log)
    assert log.compact().segments_cleaned == 0
    assert read_all(log) == before


def test_readers_see_valid_data_while_compaction_swaps_segments(open_log, clock):
    log = _keyed_log(open_log, clock, rounds=20)
    held = log.read(0, 1 << 20)  # a view taken before compaction
    held_records = [r for b in iter_batches(held) for r in batch_records(b)]
    expected = {r.offset: r for r in read_all(log)}
    problems = []
    reader_passes = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                for record in read_all(log, max_bytes=300):
                    if expected[record.offset] != record:
                        problems.append(f"offset {record.offset}: {record} != {expected[record.offset]}")
            except Exception as error:  # any failure in the reader is a test failure
                problems.append(repr(error))
                return
            reader_passes.append(1)

    thread = threading.Thread(target=reader)
    thread.start()
    compactions = 0
    try:
        # Keep swapping segments until the reader has completed several passes during swaps.
        # The deadline only stops a hung reader from hanging the suite; it is no speed limit.
        hang_guard = time.monotonic() + 90
        while (compactions < 5 or len(reader_passes) < 3) and thread.is_alive():
            assert time.monotonic() < hang_guard, f"hung: {len(reader_passes)} reader passes in 90 s"
            log.compact()
            compactions += 1
            for key in range(4):  # appends roll segments, giving compaction new work
                value = b"late-%d-%d" % (key, compactions)
                offset = log.log_end_offset
                expected[offset] = Record(offset, clock.now_ms, b"k%d" % key, value, [])  # before readers can see it
                log.append(values_batch(value, keys=[b"k%d" % key], timestamp_ms=clock.now_ms))
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert problems == []
    assert len(reader_passes) >= 3
    assert [r for b in iter_batches(held) for r in batch_records(b)] == held_records
    assert RecordBatch(held).base_offset == 0


def test_compaction_inside_multi_record_batches_keeps_each_batch_span(open_log, clock):
    log = open_log(segment_bytes=300, cleanup_policy="compact")
    for round_number in range(4):
        values = [b"a%d" % round_number, b"b%d" % round_number, b"c%d" % round_number]
        log.append(values_batch(*values, keys=[b"a", b"b", b"a"]))
    log.append(values_batch(b"tail", keys=[b"t"]))
    closed_end = log.segments[-1].base_offset
    spans = [(log.batch_header_at(o).base_offset, log.batch_header_at(o).last_offset) for o in range(closed_end)]
    log.compact()
    assert [(log.batch_header_at(o).base_offset, log.batch_header_at(o).last_offset) for o in range(closed_end)] == spans
    survivors = [(r.key, r.value) for r in read_all(log) if r.offset < closed_end]
    assert survivors == [(b"b", b"b%d" % (closed_end // 3 - 1)), (b"a", b"c%d" % (closed_end // 3 - 1))]


def test_compaction_skips_work_until_segments_close_or_tombstones_expire(open_log, clock):
    log = _keyed_log(open_log, clock)
    log.append(values_batch(None, keys=[b"k0"], timestamp_ms=clock.now_ms))
    log.append(values_batch(b"roll" * 30, keys=[b"k9"], timestamp_ms=clock.now_ms))
    log.append(values_batch(b"roll" * 30, keys=[b"k9"], timestamp_ms=clock.now_ms))
    assert log.compact().records_before > 0
    assert log.compact().records_before == 0  # nothing new: no work at all
    assert log.compact(clock.now_ms + DAY_MS + 1).tombstones_removed == 1
    log.truncate_to(log.segments[-1].base_offset)
    for round_number in range(3):
        log.append(values_batch(b"again-%d" % round_number * 20, keys=[b"k1"], timestamp_ms=clock.now_ms))
    assert log.compact(clock.now_ms + DAY_MS + 1).records_before > 0  # new closed segments: work again


def test_a_compaction_that_fails_on_a_full_disk_removes_its_partial_copy(open_log, clock, monkeypatch):
    log = _keyed_log(open_log, clock)
    before = read_all(log)
    real_fsync = os.fsync

    def full_disk_for_copies(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".cleaned"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_for_copies)
    with pytest.raises(OSError):
        log.compact()
    # a copy left behind would keep the disk full until the next open
    assert [name for name in os.listdir(log.directory) if name.endswith(".cleaned")] == []
    assert read_all(log) == before
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert log.compact().segments_cleaned >= 1


def test_compaction_keeps_every_control_batch_as_written(open_log, clock):
    from distlog.consensus.membership import Membership
    from distlog.consensus.partition_storage import membership_batch, membership_in_batch

    log = open_log(segment_bytes=400, cleanup_policy="compact", delete_retention_ms=DAY_MS)
    memberships = [Membership((1, 2, 3), (4,)), Membership((1, 2, 3, 4)), Membership((2, 3, 4))]
    for round_number, membership in enumerate(memberships):
        log.append(membership_batch(0, 1, membership))  # the same key each time: a user's record would go
        for key in range(4):
            log.append(values_batch(b"k%d-r%d" % (key, round_number), keys=[b"k%d" % key], timestamp_ms=clock.now_ms))
    for key in range(4):
        log.append(values_batch(b"filler", keys=[b"k%d" % key], timestamp_ms=clock.now_ms))

    def control_batches():
        found, offset = [], 0
        while offset < log.log_end_offset:  # (a read stops at a segment's end)
            for batch in iter_batches(log.read(offset, 1 << 20)):
                found += [bytes(batch.buffer)] if batch.is_control else []
                offset = batch.last_offset + 1
        return found

    before = control_batches()
    stats = log.compact()
    assert stats.segments_cleaned >= 1 and stats.records_after < stats.records_before, "user records were compacted"
    assert control_batches() == before
    assert [membership_in_batch(b) for b in before] == memberships
