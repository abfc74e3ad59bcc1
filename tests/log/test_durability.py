"""Durability and crash safety: what survives a power loss or a failing disk.

A power loss is modelled by recording, at every fsync, what it made durable: a file's bytes
(by inode) or a directory's entries (name -> inode). After the "crash" only that survives: a
file whose directory entry was never fsynced is gone, and a file never fsynced is empty.
A full disk is modelled by an os.pwrite/os.write that stops short and then raises ENOSPC.
"""

import errno
import os
import random
import stat

import pytest

from distlog.log.batch import HEADER_SIZE, iter_batches
from distlog.log.config import LogConfig
from distlog.log.errors import LogFlushFailedError
from distlog.log.partition_log import PartitionLog
from distlog.log.segment import Segment
from tests.log.helpers import read_all, values_batch


class PowerLoss:
    """Records what each fsync made durable and rebuilds a directory as a crash leaves it."""

    def __init__(self, monkeypatch):
        self.file_bytes = {}  # inode -> bytes as of its last fsync
        self.directory_entries = {}  # directory path -> {name: inode} as of its last fsync
        self.fsynced_inodes = []
        real_fsync = os.fsync

        def recording_fsync(fd):
            real_fsync(fd)
            status = os.fstat(fd)
            self.fsynced_inodes.append(status.st_ino)
            path = os.readlink(f"/proc/self/fd/{fd}")  # the fd may be write-only
            if stat.S_ISDIR(status.st_mode):
                self.directory_entries[path] = {
                    name: os.stat(os.path.join(path, name)).st_ino for name in os.listdir(path)
                }
            else:
                with open(path, "rb") as file:
                    self.file_bytes[status.st_ino] = file.read()

        monkeypatch.setattr(os, "fsync", recording_fsync)

    def crash_copy(self, directory, destination) -> None:
        """Write into destination the files of directory that a power loss now would leave."""
        os.makedirs(destination)
        for name, inode in self.directory_entries.get(os.path.realpath(directory), {}).items():
            with open(os.path.join(destination, name), "wb") as file:
                file.write(self.file_bytes.get(inode, b""))


def _open(directory, **settings):
    return PartitionLog.open(str(directory), LogConfig(**settings))


def test_an_acknowledged_write_to_a_new_log_survives_power_loss(tmp_path, monkeypatch):
    power = PowerLoss(monkeypatch)
    directory = tmp_path / "topic-0"
    with _open(directory) as log:
        log.append(values_batch(b"acked"))
        assert log.maybe_flush()  # flush.policy=always: this is what the broker does before the ack
        power.crash_copy(directory, tmp_path / "after")
    # the partition directory itself was created by open; its entry in the parent must be durable
    assert os.stat(tmp_path).st_ino in power.fsynced_inodes
    with _open(tmp_path / "after") as reopened:
        assert [record.value for record in read_all(reopened)] == [b"acked"]


class _FullDisk:
    """Writes to one fd stop after budget_bytes: one short write, then ENOSPC."""

    def __init__(self, monkeypatch, budget_bytes):
        self.fd = None
        self.budget_bytes = budget_bytes
        real_write, real_pwrite = os.write, os.pwrite

        def limit(fd, data):
            if fd != self.fd:
                return data
            if self.budget_bytes <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            data = memoryview(data)[: self.budget_bytes]
            self.budget_bytes -= len(data)
            return data

        monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, limit(fd, data)))
        monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real_pwrite(fd, limit(fd, data), offset))


def test_a_write_failing_on_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    directory = tmp_path / "p0"
    log = _open(directory)
    log.append(values_batch(b"before"))
    active = log.segments[-1]
    size_bytes = active.size_bytes
    disk = _FullDisk(monkeypatch, budget_bytes=HEADER_SIZE + 10)  # a header and a bit land
    disk.fd = active._fd
    with pytest.raises(OSError) as failure:
        log.append(values_batch(b"fails", b"too"))
    assert failure.value.errno == errno.ENOSPC
    assert (log.log_end_offset, active.size_bytes, os.path.getsize(active.log_path)) == (1, size_bytes, size_bytes)
    disk.fd = None  # space freed
    assert log.append(values_batch(b"after")) == (1, 1)
    log.flush()
    assert [record.value for record in read_all(log)] == [b"before", b"after"]
    log.close()
    with _open(directory) as reopened:
        assert [record.value for record in read_all(reopened)] == [b"before", b"after"]


def test_after_a_failed_fsync_no_later_flush_claims_success(tmp_path, monkeypatch):
    # Linux reports a writeback error to one fsync and then marks the pages clean: a retry
    # "succeeds" although the data never reached the disk, and its acks would be lies.
    real_fsync = os.fsync
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_once(fd):
        if failures:
            raise failures.pop()
        real_fsync(fd)

    log = _open(tmp_path / "p0")
    log.append(values_batch(b"lost?"))
    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(OSError):
        log.maybe_flush()
    log.append(values_batch(b"next"))
    for flush in (log.maybe_flush, log.flush, log.close):
        with pytest.raises(LogFlushFailedError, match="reopen") as failure:
            flush()
        assert failure.value.errno == errno.EIO  # the broker fails the acks of any OSError
    with _open(tmp_path / "p0") as reopened:
        assert [record.value for record in read_all(reopened)] == [b"lost?", b"next"]  # this disk did keep them


def test_a_rolled_segment_is_whole_on_disk_before_the_next_one_exists(tmp_path, monkeypatch):
    # Open trusts a closed segment's indexes and crc-scans only the last segment, so a closed
    # segment must never be half durable: its .log and indexes are fsynced at the roll.
    power = PowerLoss(monkeypatch)
    directory = tmp_path / "p0"
    log = _open(directory, segment_bytes=1000, index_interval_bytes=0, flush_policy="never")
    while len(log.segments) < 2:
        log.append(values_batch(b"v" * 50, timestamp_ms=1_700_000_000_000 - log.log_end_offset))
    closed = log.segments[0]
    power.crash_copy(directory, tmp_path / "after")  # power lost right after the roll
    for path in (closed.log_path, closed.offset_index.path, closed.time_index.path):
        with open(path, "rb") as live, open(tmp_path / "after" / os.path.basename(path), "rb") as crashed:
            assert crashed.read() == live.read(), path
    log.close()


def test_truncating_a_mapped_segment_survives_a_short_write(tmp_path, monkeypatch):
    # A write to a regular file may write less than asked (a signal, a nearly full disk).
    real_write = os.write
    short_writes = [1]

    def short_once(fd, data):
        if short_writes and os.readlink(f"/proc/self/fd/{fd}").endswith(".log.tmp"):
            short_writes.pop()
            data = memoryview(data)[: len(data) // 2]
        return real_write(fd, data)

    directory = tmp_path / "p0"
    log = _open(directory)
    for i in range(10):
        log.append(values_batch(b"record-%d" % i))
    assert len(read_all(log)) == 10  # maps the file, so truncation copies the kept prefix
    monkeypatch.setattr(os, "write", short_once)
    log.truncate_to(6)
    assert not short_writes
    assert [record.value for record in read_all(log)] == [b"record-%d" % i for i in range(6)]
    log.close()
    with _open(directory) as reopened:
        assert reopened.log_end_offset == 6


def test_a_retention_deletion_is_durable_when_it_returns(tmp_path, monkeypatch):
    # Raft's storage records the new log start (and the term below it) in its own fsynced
    # file right after retention; a deletion undone by a power loss would contradict it.
    power = PowerLoss(monkeypatch)
    directory = tmp_path / "p0"
    log = _open(directory, segment_bytes=300, retention_bytes=300)
    for i in range(12):
        log.append(values_batch(b"record-%02d" % i))
    log.flush()
    assert log.apply_retention() > 0
    power.crash_copy(directory, tmp_path / "after")
    with _open(tmp_path / "after") as reopened:
        assert reopened.log_start_offset == log.log_start_offset
    log.close()


def test_a_failed_fsync_at_a_roll_also_fails_every_later_flush(tmp_path, monkeypatch):
    real_fsync = os.fsync
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_once(fd):
        if failures:
            raise failures.pop()
        real_fsync(fd)

    log = _open(tmp_path / "p0", segment_bytes=300)
    log.append(values_batch(b"x" * 200))
    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(OSError):
        log.append(values_batch(b"y" * 200))  # rolls: fsyncs the closing segment, which fails
    with pytest.raises(LogFlushFailedError):
        log.flush()
    with pytest.raises(LogFlushFailedError):
        log.close()


def test_a_truncation_that_fails_on_a_full_disk_changes_nothing(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def full_disk_for_copies(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".log.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    log = _open(tmp_path / "p0")
    for i in range(10):
        log.append(values_batch(b"record-%d" % i))
    before = read_all(log)  # maps the file, so truncation copies the kept prefix
    monkeypatch.setattr(os, "fsync", full_disk_for_copies)
    with pytest.raises(OSError):
        log.truncate_to(6)
    assert [name for name in os.listdir(log.directory) if name.endswith(".tmp")] == []  # no copy fills the disk
    assert (log.log_end_offset, read_all(log)) == (10, before)
    monkeypatch.setattr(os, "fsync", real_fsync)
    log.truncate_to(6)
    assert log.log_end_offset == 6
    log.close()


def test_a_truncation_whose_index_rewrite_fails_still_truncates_consistently(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def full_disk_for_indexes(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("index.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    directory = tmp_path / "p0"
    log = _open(directory, segment_bytes=2000, index_interval_bytes=0)
    for i in range(10):
        log.append(values_batch(b"record-%d" % i))
    log.close()
    log = _open(directory, segment_bytes=2000, index_interval_bytes=0)  # indexes are on disk now
    monkeypatch.setattr(os, "fsync", full_disk_for_indexes)
    log.truncate_to(6)  # an index is a hint: failing to rewrite it must not fail or skew the truncation
    assert [name for name in os.listdir(directory) if name.endswith(".tmp")] == []
    assert log.log_end_offset == 6
    assert [record.value for record in read_all(log, max_bytes=1)] == [b"record-%d" % i for i in range(6)]
    monkeypatch.setattr(os, "fsync", real_fsync)
    while len(log.segments) < 2:  # a roll persists the first segment's indexes
        log.append(values_batch(b"more"))
    log.close()
    with _open(directory, segment_bytes=2000, index_interval_bytes=0) as reopened:
        assert [record.value for record in read_all(reopened, max_bytes=1)][:7] == [
            b"record-0", b"record-1", b"record-2", b"record-3", b"record-4", b"record-5", b"more"]


def test_a_log_reopens_on_a_disk_too_full_to_rewrite_its_indexes(tmp_path, monkeypatch):
    directory = tmp_path / "p0"
    with _open(directory, index_interval_bytes=0) as log:
        for i in range(10):
            log.append(values_batch(b"record-%d" % i))
    real_fsync = os.fsync

    def full_disk_for_indexes(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("index.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk_for_indexes)
    with _open(directory, index_interval_bytes=0) as reopened:  # recovery rebuilds the last segment's indexes
        assert len(read_all(reopened, max_bytes=1)) == 10
    assert [name for name in os.listdir(directory) if name.endswith(".tmp")] == []


@pytest.mark.parametrize("mapped", [False, True])
def test_a_truncation_is_durable_when_it_returns(tmp_path, monkeypatch, mapped):
    # A follower truncates a conflicting tail, then appends the new leader's entries at those
    # offsets; a truncation a power loss could undo could leave old-term entries after new ones.
    power = PowerLoss(monkeypatch)
    directory = tmp_path / "p0"
    log = _open(directory, segment_bytes=400)
    for i in range(12):
        log.append(values_batch(b"term-1-%02d" % i), leader_term=1)
    log.flush()
    assert len(log.segments) >= 3
    if mapped:
        read_all(log)  # truncation then swaps in a copy instead of cutting the file
    log.truncate_to(5)
    power.crash_copy(directory, tmp_path / "after")
    with _open(tmp_path / "after", segment_bytes=400) as reopened:
        assert reopened.log_end_offset == 5
    log.close()


def test_a_reset_killed_part_way_keeps_the_log_start(tmp_path, monkeypatch):
    # Raft's storage records the log start beside the log and rewrites it only after the reset.
    directory = tmp_path / "p0"
    log = _open(directory, segment_bytes=300)
    for i in range(12):
        log.append(values_batch(b"record-%02d" % i))
    log.flush()
    assert len(log.segments) >= 3
    real_delete_files = Segment.delete_files
    deletions = []

    def killed_after_one(segment):
        if deletions:
            raise KeyboardInterrupt("SIGKILL")  # nothing after this point happens
        deletions.append(segment)
        real_delete_files(segment)

    monkeypatch.setattr(Segment, "delete_files", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        log.reset_to(500)
    with _open(directory, segment_bytes=300) as reopened:  # a SIGKILL keeps every finished syscall
        assert reopened.log_start_offset == 0
        assert [record.offset for record in read_all(reopened)] == list(range(reopened.log_end_offset))


@pytest.mark.parametrize("seed", range(40))
def test_random_operations_then_power_loss_keep_every_acked_record(tmp_path, monkeypatch, seed):
    """Appends, rolls, flushes, truncations and retention in a seeded random order; a power
    loss at a random step keeps every record acked (flushed) and not since truncated or
    deleted, with no hole and terms never going down."""
    rng = random.Random(seed)
    power = PowerLoss(monkeypatch)
    directory = tmp_path / "p0"
    settings = dict(segment_bytes=rng.choice([250, 400, 1000]), index_interval_bytes=rng.choice([0, 100, 4096]),
                    retention_bytes=rng.choice([-1, 600]))
    log = _open(directory, **settings)
    acked = {}  # offset -> value of every record a flush made durable
    term = 1
    for step in range(rng.randint(1, 60)):
        action = rng.random()
        if action < 0.6:
            values = [b"s%d-%d-%d" % (seed, step, i) for i in range(rng.randint(1, 3))]
            log.append(values_batch(*values), leader_term=term)
        elif action < 0.8:
            log.flush()
            acked = {record.offset: record.value for record in read_all(log)}
        elif action < 0.9 and log.log_end_offset > log.log_start_offset:
            boundaries = sorted({batch.base_offset for batch in _batches(log)})
            cut = rng.choice(boundaries)
            log.truncate_to(cut)
            term += 1  # a follower truncates for a new leader
            acked = {offset: value for offset, value in acked.items() if offset < cut}
        else:
            log.apply_retention()
            acked = {offset: value for offset, value in acked.items() if offset >= log.log_start_offset}
    power.crash_copy(directory, tmp_path / "after")
    log.close()
    with _open(tmp_path / "after", **settings) as reopened:
        records = read_all(reopened)  # every batch crc-verified
        assert [record.offset for record in records] == list(range(reopened.log_start_offset, reopened.log_end_offset))
        survived = {record.offset: record.value for record in records}
        assert {offset: survived.get(offset) for offset in acked} == acked
        terms = [batch.leader_term for batch in _batches(reopened)]
        assert terms == sorted(terms)


def _batches(log):
    return list(iter_batches(log.read(log.log_start_offset, 1 << 30))) + [
        batch for segment in log.segments[1:] for batch in iter_batches(log.read(segment.base_offset, 1 << 30))
    ]


def test_an_append_of_several_batches_that_fails_part_way_appends_none(tmp_path, monkeypatch):
    # The caller is told the append failed; it must not find part of it in the log (a
    # producer's retry would duplicate it).
    directory = tmp_path / "p0"
    log = _open(directory, segment_bytes=300)
    log.append(values_batch(b"before"))
    real_create = Segment.create
    disk = _FullDisk(monkeypatch, budget_bytes=10)

    def full_disk_in_the_new_segment(*args, **kwargs):
        segment = real_create(*args, **kwargs)
        disk.fd = segment._fd
        return segment

    monkeypatch.setattr(Segment, "create", full_disk_in_the_new_segment)
    two_batches = values_batch(b"fits" * 10) + values_batch(b"rolls" * 30)
    with pytest.raises(OSError):
        log.append(two_batches)  # the first batch lands in the active segment, the second rolls
    assert (log.log_end_offset, [record.value for record in read_all(log)]) == (1, [b"before"])
    disk.fd = None
    assert log.append(values_batch(b"after")) == (1, 1)
    log.close()
    with _open(directory, segment_bytes=300) as reopened:
        assert [record.value for record in read_all(reopened)] == [b"before", b"after"]
