"""The nemesis's disk faults on a stopped broker's data dir (chaos/disk_faults.py): a torn batch
that recovery cuts back to the previous batch boundary, damage that never touches the newest
segment, and a power cut that keeps exactly what was fsynced."""

import gc
import os
import random

import pytest

from distlog.chaos.disk_faults import corrupt_older_segment, cut_power, tear_batch
from distlog.log.config import LogConfig
from distlog.log.errors import CorruptDataError
from distlog.log.partition_log import PartitionLog
from distlog.log.scan import scan_batches
from distlog.log.synced import RECORD_SYNCED_ENV, recorded_synced_size
from tests.log.helpers import read_all, values_batch

SMALL_SEGMENTS = LogConfig(segment_bytes=400)  # two batches of write() below (165 bytes each) per segment


def partition_dir(data_dir, name="t-0"):
    return os.path.join(data_dir, "topics", name)


def write(directory, count, config=LogConfig()):
    """A closed log of `count` one-record batches (values value(0), value(1), ...)."""
    with PartitionLog.open(directory, config) as log:
        for i in range(count):
            log.append(values_batch(value(i)))


def value(i):
    return b"value-%04d" % i * 8


def batch_starts(path):
    """Byte position of every whole batch in a segment file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return [position for position, _ in scan_batches(fd, 0, os.fstat(fd).st_size, None, verify=True)]
    finally:
        os.close(fd)


def newest_segments(data_dir):
    """{path: bytes} of the newest segment of every partition."""
    out = {}
    for name in sorted(os.listdir(os.path.join(data_dir, "topics"))):
        directory = partition_dir(data_dir, name)
        newest = sorted(n for n in os.listdir(directory) if n.endswith(".log"))[-1]
        with open(os.path.join(directory, newest), "rb") as f:
            out[os.path.join(directory, newest)] = f.read()
    return out


def all_segments(data_dir):
    out = {}
    for root, _, names in os.walk(data_dir):
        for name in names:
            if name.endswith(".log"):
                with open(os.path.join(root, name), "rb") as f:
                    out[os.path.join(root, name)] = f.read()
    return out


# ---- tear_batch ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_tear_batch_ends_the_newest_segment_inside_its_last_batch_and_recovery_ends_the_log_before_it(tmp_path, seed):
    data_dir = str(tmp_path)
    for name in ("t-0", "t-1"):
        write(partition_dir(data_dir, name), 7, SMALL_SEGMENTS)
    done = tear_batch(data_dir, random.Random(seed))

    path = os.path.join(data_dir, done["file"])
    starts = batch_starts(path)  # the whole batches left
    last_start = done["batch_position"]
    assert last_start < os.path.getsize(path) < last_start + done["batch_bytes"], "the file must end mid-batch"
    assert os.path.getsize(path) == done["cut_at"] and done["bytes"] == done["size_bytes"] - done["cut_at"]
    assert last_start not in starts and (not starts or starts[-1] < last_start)
    with PartitionLog.open(os.path.dirname(path), SMALL_SEGMENTS) as log:
        assert log.log_end_offset == done["batch_offsets"][0] == 6, "recovery ends the log at the previous batch"
        assert os.path.getsize(path) == last_start, "the torn batch is cut off, nothing before it"
        assert log.damage is None, "a torn tail is a crash, not damage"
        assert [r.value for r in read_all(log)] == [value(i) for i in range(6)]


def test_tear_batch_leaves_a_partition_whose_newest_segment_is_empty_alone(tmp_path):
    data_dir = str(tmp_path)
    assert tear_batch(data_dir, random.Random(1)) == {}, "no topics dir"
    directory = partition_dir(data_dir, "t-0")
    PartitionLog.open(directory).close()  # one empty segment
    assert tear_batch(data_dir, random.Random(1)) == {}
    with PartitionLog.open(directory) as log:
        log.append(values_batch(b"x"))
        log.reset_to(1)  # the newest segment is empty; cutting the one before would be damage, not a torn write
    assert tear_batch(data_dir, random.Random(1)) == {}


@pytest.mark.parametrize("seed", range(6))
def test_tear_batch_never_tears_a_synced_batch_it_appends_a_torn_next_one_instead(tmp_path, recording, seed):
    """A replica fsyncs before it acknowledges, so a crash only tears unsynced bytes: a fully
    synced last batch stays whole, and the torn bytes are the start of a batch after it."""
    directory = partition_dir(str(tmp_path))
    with PartitionLog.open(directory, SMALL_SEGMENTS) as log:
        for i in range(7):
            log.append(values_batch(value(i)))
        log.flush()
    done = tear_batch(str(tmp_path), random.Random(seed))
    assert done["kind"] == "append" and done["cut_at"] == done["size_bytes"] + done["bytes"]
    assert 0 < done["bytes"] < done["batch_bytes"]
    with PartitionLog.open(directory, SMALL_SEGMENTS) as log:
        assert log.damage is None and log.log_end_offset == 7, "every synced record kept, the torn one cut"
        assert [r.value for r in read_all(log)] == [value(i) for i in range(7)]


@pytest.mark.parametrize("seed", range(6))
def test_tear_batch_cuts_an_unsynced_last_batch_no_lower_than_the_synced_size(tmp_path, recording, seed):
    directory = partition_dir(str(tmp_path))
    log = PartitionLog.open(directory, SMALL_SEGMENTS)
    for i in range(6):
        log.append(values_batch(value(i)))
    log.flush()
    log.append(values_batch(value(6)))  # in the page cache only
    path = log.segments[-1].log_path
    killed(log)
    synced = recorded_synced_size(path) or 0  # a segment rolled and never synced has no record
    done = tear_batch(str(tmp_path), random.Random(seed))
    assert done["kind"] == "cut" and synced <= done["cut_at"] < done["batch_position"] + done["batch_bytes"]
    with PartitionLog.open(directory, SMALL_SEGMENTS) as log:
        assert log.damage is None and log.log_end_offset == 6
        assert [r.value for r in read_all(log)] == [value(i) for i in range(6)]


# ---- corrupt_older_segment -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_corrupt_older_segment_changes_one_older_segment_and_never_the_newest(tmp_path, seed):
    data_dir = str(tmp_path)
    for name in ("t-0", "t-1", "t-2"):
        write(partition_dir(data_dir, name), 10, SMALL_SEGMENTS)
    before, newest = all_segments(data_dir), newest_segments(data_dir)
    done = corrupt_older_segment(data_dir, random.Random(seed))

    after = all_segments(data_dir)
    changed = [path for path in before if before[path] != after[path]]
    assert changed == [os.path.join(data_dir, done["file"])], "exactly the one file it names changed"
    assert changed[0] not in newest
    assert newest_segments(data_dir) == newest, "the newest segment of every partition is untouched"
    old, new = before[changed[0]], after[changed[0]]
    if done["kind"] == "bit-flip":
        assert len(old) == len(new) and old[done["position"]] ^ new[done["position"]] == 1 << done["bit"]
    else:
        assert new == old[:done["cut_at"]] and done["bytes"] == len(old) - len(new) > 0


@pytest.mark.parametrize("seed", range(12))
def test_the_damage_corrupt_older_segment_does_is_found_and_never_served(tmp_path, seed):
    data_dir = str(tmp_path)
    directory = partition_dir(data_dir)
    write(directory, 10, SMALL_SEGMENTS)
    done = corrupt_older_segment(data_dir, random.Random(seed))
    with PartitionLog.open(directory, SMALL_SEGMENTS) as log:
        if log.damage is None:  # open trusts closed segments: a flipped bit is found by a read or the scrub
            with pytest.raises(CorruptDataError):
                while log.scrub(1 << 20):
                    pass
        else:
            assert log.damage.offset < 10 <= log.damage.held_until, done
    # What is served is a prefix of what was written, however the damage was found.
    with PartitionLog.open(directory, SMALL_SEGMENTS) as log:
        values = []
        try:
            values = [r.value for r in read_all(log)]
        except CorruptDataError:
            pass
        assert values == [value(i) for i in range(len(values))]


def test_corrupt_older_segment_needs_a_partition_that_rolled(tmp_path):
    data_dir = str(tmp_path)
    write(partition_dir(data_dir), 3)  # one segment
    assert corrupt_older_segment(data_dir, random.Random(0)) == {}


# ---- cut_power -------------------------------------------------------------------------------


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setenv(RECORD_SYNCED_ENV, "1")


def killed(log):
    """Abandon a log as SIGKILL would: no flush, no index write; the fds close unwritten."""
    del log
    gc.collect()


def test_cut_power_truncates_every_segment_to_its_recorded_synced_size_and_recovery_opens_the_rest(
        tmp_path, recording):
    data_dir = str(tmp_path)
    log = PartitionLog.open(partition_dir(data_dir), SMALL_SEGMENTS)
    for i in range(7):
        log.append(values_batch(value(i)))
    log.flush()
    synced_end = log.log_end_offset
    log.append(values_batch(value(7)))  # written, not fsynced: the page cache holds it, a disk would not
    assert len(log.segments) > 1 and log.log_end_offset > synced_end
    paths = [s.log_path for s in log.segments]
    killed(log)
    recorded = {path: recorded_synced_size(path) or 0 for path in paths}
    before = {path: os.path.getsize(path) for path in paths}

    done = cut_power(data_dir)
    assert {path: os.path.getsize(path) for path in paths} == recorded
    assert done["bytes"] == sum(before.values()) - sum(recorded.values()) > 0
    assert {os.path.join(data_dir, f["file"]): (f["size_bytes"], f["synced_bytes"]) for f in done["files"]} == {
        path: (before[path], recorded[path]) for path in paths if before[path] != recorded[path]}
    with PartitionLog.open(partition_dir(data_dir), SMALL_SEGMENTS) as log:
        assert log.damage is None, "a power cut loses only a tail nothing was acknowledged for"
        assert log.log_end_offset == synced_end
        assert [r.value for r in read_all(log)] == [value(i) for i in range(synced_end)]
    assert cut_power(data_dir) == {}, "what survived a power cut was synced: a second cut takes nothing"


def test_cut_power_empties_a_segment_that_rolled_but_was_never_synced(tmp_path, recording):
    data_dir = str(tmp_path)
    log = PartitionLog.open(partition_dir(data_dir), SMALL_SEGMENTS)
    log.append(values_batch(b"a" * 150))
    log.flush()
    for _ in range(4):  # rolls: every closed segment is fsynced whole, the new active one not at all
        log.append(values_batch(b"b" * 150))
    active, synced_end = log.segments[-1].log_path, log.segments[-1].base_offset
    killed(log)
    assert recorded_synced_size(active) is None
    cut_power(data_dir)
    assert os.path.getsize(active) == 0
    with PartitionLog.open(partition_dir(data_dir), SMALL_SEGMENTS) as log:
        assert (log.log_end_offset, log.damage) == (synced_end, None)


def test_cut_power_leaves_indexes_state_files_and_quarantine_alone(tmp_path, recording):
    data_dir = str(tmp_path)
    write(partition_dir(data_dir), 9, SMALL_SEGMENTS)
    quarantined = os.path.join(partition_dir(data_dir), "quarantine", "x", "00000000000000000000.log")
    os.makedirs(os.path.dirname(quarantined))
    with open(quarantined, "wb") as f:
        f.write(b"kept for inspection")
    state = os.path.join(data_dir, "raft-state.json")
    with open(state, "w") as f:
        f.write("{}")
    others = {path: open(path, "rb").read() for path in [quarantined, state] + [
        os.path.join(partition_dir(data_dir), n) for n in os.listdir(partition_dir(data_dir)) if "index" in n]}
    cut_power(data_dir)
    assert {path: open(path, "rb").read() for path in others} == others


def test_cut_power_refuses_a_broker_that_never_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv(RECORD_SYNCED_ENV, raising=False)
    data_dir = str(tmp_path)
    write(partition_dir(data_dir), 3)
    with pytest.raises(ValueError, match=RECORD_SYNCED_ENV):
        cut_power(data_dir)
    assert os.path.getsize(os.path.join(partition_dir(data_dir), "00000000000000000000.log")) > 0
