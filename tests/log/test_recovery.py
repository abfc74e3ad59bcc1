"""Recovery on open: real files, damaged on disk, reopened. A torn tail is cut at the first bad
batch; a bad batch with sound ones after it, or in a closed segment, is quarantined from there
(test_damage.py has the rest); missing, stale or damaged indexes are rebuilt; nothing corrupt is
served."""

import os

import numpy as np
import pytest

from distlog.log.batch import HEADER_SIZE, iter_batches
from tests.log.helpers import read_all, values_batch

SETTINGS = dict(segment_bytes=400, index_interval_bytes=1)


def _fill(log, count=20):
    for i in range(count):
        log.append(values_batch(b"record-%02d" % i, b"x" * 20), leader_term=1 + i // 10)
    log.close()


def _last_segment_path(directory):
    return os.path.join(directory, sorted(n for n in os.listdir(directory) if n.endswith(".log"))[-1])


def _batch_starts(path):
    with open(path, "rb") as file:
        data = file.read()
    starts, position = [], 0
    for batch in iter_batches(data):
        starts.append(position)
        position += batch.batch_length
    return starts, data


@pytest.mark.parametrize("cut_bytes", [1, HEADER_SIZE - 1, HEADER_SIZE + 3])
def test_a_torn_last_batch_is_truncated(open_log, cut_bytes):
    log = open_log(**SETTINGS)
    _fill(log)
    path = _last_segment_path(log.directory)
    starts, data = _batch_starts(path)
    with open(path, "r+b") as file:
        file.truncate(starts[-1] + cut_bytes)
    reopened = open_log(**SETTINGS)
    assert reopened.log_end_offset == 38
    assert os.path.getsize(path) == starts[-1]
    assert [r.value for r in read_all(reopened)][-2:] == [b"record-18", b"x" * 20]
    assert reopened.append(values_batch(b"next")) == (38, 38)


def test_a_corrupt_batch_before_a_sound_one_is_quarantined_from_there(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    path = _last_segment_path(log.directory)
    starts, data = _batch_starts(path)
    assert len(starts) >= 2
    with open(path, "r+b") as file:
        file.seek(starts[-2] + HEADER_SIZE + 10)  # inside the record table of the second-last batch
        file.write(b"\xee")
    reopened = open_log(**SETTINGS)
    assert reopened.log_end_offset == 36
    assert (reopened.damage.offset, reopened.damage.held_until) == (36, 40)  # the sound last batch
    assert os.path.getsize(path) == starts[-2]
    records = read_all(reopened)
    assert [r.offset for r in records] == list(range(36))
    assert reopened.last_term == 2


def test_garbage_after_the_last_batch_is_dropped(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    path = _last_segment_path(log.directory)
    size = os.path.getsize(path)
    with open(path, "ab") as file:
        file.write(os.urandom(200))
    reopened = open_log(**SETTINGS)
    assert reopened.log_end_offset == 40
    assert os.path.getsize(path) == size


def test_a_zeroed_tail_from_a_crash_is_dropped(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    path = _last_segment_path(log.directory)
    size = os.path.getsize(path)
    with open(path, "ab") as file:
        file.write(b"\0" * 4096)  # a filesystem may extend a file before the data lands
    reopened = open_log(**SETTINGS)
    assert (reopened.log_end_offset, os.path.getsize(path)) == (40, size)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage", "shift", "shift-one"])
def test_damaged_indexes_of_closed_segments_are_rebuilt(open_log, damage):
    settings = dict(segment_bytes=1000, index_interval_bytes=0)
    log = open_log(**settings)
    _fill(log)
    first_index = os.path.join(log.directory, "00000000000000000000.index")
    first_time_index = os.path.join(log.directory, "00000000000000000000.timeindex")
    good_index = open(first_index, "rb").read()
    assert len(good_index) >= 40
    if damage == "delete":
        os.unlink(first_index)
        os.unlink(first_time_index)
    elif damage == "truncate":
        open(first_index, "r+b").truncate(len(good_index) - 3)
    elif damage == "garbage":
        open(first_index, "wb").write(os.urandom(len(good_index)))
    else:  # every entry, or only the second, points 7 bytes past its batch
        entries = np.frombuffer(good_index, dtype=[("key", "<u4"), ("value", "<u4")]).copy()
        if damage == "shift":
            entries["value"] += 7
        else:
            entries["value"][1] += 7
        open(first_index, "wb").write(entries.tobytes())
    reopened = open_log(**settings)
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(40))
    assert open(first_index, "rb").read() == good_index
    assert reopened.offset_for_timestamp(0) == 0


def test_a_missing_index_of_the_active_segment_is_rebuilt(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    last = _last_segment_path(log.directory)
    os.unlink(last[: -len(".log")] + ".index")
    reopened = open_log(**SETTINGS)
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(40))


def test_an_index_without_its_log_is_removed(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    stray = os.path.join(log.directory, "00000000000000009999.index")
    open(stray, "wb").write(b"\0" * 8)
    open_log(**SETTINGS)
    assert not os.path.exists(stray)


def test_leftover_temp_files_from_a_crashed_swap_are_removed(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    leftover = os.path.join(log.directory, "00000000000000000000.log.cleaned")
    open(leftover, "wb").write(b"half written")
    reopened = open_log(**SETTINGS)
    assert not os.path.exists(leftover)
    assert reopened.log_end_offset == 40


def test_the_whole_last_segment_corrupt_leaves_an_empty_segment(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    path = _last_segment_path(log.directory)
    base_offset = int(os.path.basename(path)[:20])
    with open(path, "r+b") as file:
        file.write(b"\x07")  # bad magic in the first batch
    reopened = open_log(**SETTINGS)
    assert reopened.log_end_offset == base_offset
    assert reopened.append(values_batch(b"again")) == (base_offset, base_offset)


@pytest.mark.parametrize("damage", ["torn", "zeroed"])
def test_a_torn_closed_segment_ends_the_log_there_and_the_rest_is_quarantined(open_log, damage):
    log = open_log(**SETTINGS)
    _fill(log)
    names = sorted(n for n in os.listdir(log.directory) if n.endswith(".log"))
    assert len(names) >= 3
    closed_path = os.path.join(log.directory, names[1])
    starts, data = _batch_starts(closed_path)
    torn_offset = int(names[1][:20]) + len(starts) * 2 - 2  # two records per batch
    with open(closed_path, "r+b") as file:
        if damage == "torn":
            file.truncate(starts[-1] + 7)  # a power loss tore the last batch of a closed segment
        else:
            file.seek(starts[-1])
            file.write(b"\0" * (len(data) - starts[-1]))  # its pages never reached the disk
    reopened = open_log(**SETTINGS)
    # no hole: what followed the torn batch is quarantined, and the log continues at the torn
    # offset, reporting what it lost (a closed segment was fsynced whole: this is damage)
    assert reopened.log_end_offset == torn_offset
    assert (reopened.damage.offset, reopened.damage.held_until) == (torn_offset, 40)
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(torn_offset))
    assert sorted(n for n in os.listdir(log.directory) if n.endswith(".log")) == names[:2]
    assert reopened.append(values_batch(b"next")) == (torn_offset, torn_offset)
    reopened.close()
    assert read_all(open_log(**SETTINGS))[-1].value == b"next"


def test_an_empty_closed_segment_left_by_a_failed_roll_is_dropped(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    names = sorted(n for n in os.listdir(log.directory) if n.endswith(".log"))
    # A roll created this file, then failed; later batches went on into the older segment.
    orphan_offset = int(names[1][:20]) + 2
    orphan = os.path.join(log.directory, "%020d.log" % orphan_offset)
    open(orphan, "wb").close()
    reopened = open_log(**SETTINGS)
    assert reopened.log_end_offset == 40
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(40))
    assert reopened.batch_header_at(orphan_offset).base_offset == orphan_offset
    assert not os.path.exists(orphan)


@pytest.mark.parametrize("index", [".index", ".timeindex"])
def test_an_index_entry_past_the_end_of_a_closed_segment_is_rebuilt(open_log, index):
    log = open_log(**SETTINGS)
    _fill(log)
    path = os.path.join(log.directory, "00000000000000000000" + index)
    good_index = open(path, "rb").read()
    dtype = [("key", "<u4" if index == ".index" else "<i8"), ("value", "<u4")]
    entries = np.frombuffer(good_index, dtype=dtype)
    assert len(entries)
    past_end = np.array([(entries["key"][-1] + 1, 10**6)], dtype=dtype)  # a position / offset far out
    open(path, "ab").write(past_end.tobytes())
    reopened = open_log(**SETTINGS)
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(40))
    assert open(path, "rb").read() == good_index


@pytest.mark.parametrize("damage", ["delete", "truncate", "zeros", "garbage", "one-zero-entry"])
def test_a_damaged_time_index_of_a_closed_segment_never_understates_its_timestamps(open_log, damage):
    # Retention deletes a closed segment by its max timestamp: one read too low from a damaged
    # .timeindex would delete records early.
    settings = dict(segment_bytes=1000, index_interval_bytes=0)
    log = open_log(**settings)
    for i in range(40):  # timestamps go down and up, so the max is not the last batch's
        log.append(values_batch(b"record-%02d" % i, timestamp_ms=1_700_000_000_000 + (i % 7) * 1000))
    max_timestamps_ms = [segment.max_timestamp_ms for segment in log.segments]
    log.close()
    path = os.path.join(log.directory, "00000000000000000000.timeindex")
    good = open(path, "rb").read()
    assert len(good) >= 24
    if damage == "delete":
        os.unlink(path)
    elif damage == "truncate":
        open(path, "r+b").truncate(len(good) - 5)
    elif damage == "zeros":
        open(path, "wb").write(b"\0" * len(good))
    elif damage == "garbage":
        open(path, "wb").write(np.random.default_rng(7).bytes(len(good)))
    else:  # a single zeroed entry: in order, and pointing inside the segment
        open(path, "wb").write(b"\0" * 12)
    reopened = open_log(**settings)
    assert [segment.max_timestamp_ms for segment in reopened.segments] == max_timestamps_ms
    assert reopened.offset_for_timestamp(1_700_000_000_000 + 6000) == 6
