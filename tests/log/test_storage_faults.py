"""Storage faults on real file systems: a disk that fills up (a 1 MiB tmpfs) and a read-only
mount. A failed call leaves the log exactly as it was and frees every descriptor; every
failure is a named error that says what to do."""

import errno
import os
import subprocess

import pytest

from distlog.client import Admin, DistlogError, ErrorCode
from distlog.log.config import LogConfig
from distlog.log.errors import ReadOnlyLogError, StorageError
from distlog.log.partition_log import PartitionLog
from tests.broker.helpers import running_brokers
from tests.log.helpers import FakeClock, read_all, values_batch

pytestmark = pytest.mark.timeout(60)

PAGE_BYTES = 4096  # tmpfs hands out space a page at a time


def _mount(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *arguments], capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a fresh 1 MiB tmpfs, unmounted after the test whatever happens."""
    path = tmp_path / "disk"
    path.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"these tests mount a tmpfs, which needs root (CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)  # something still open: detach it


def fill_disk(disk, free_pages=0):
    """Fill the file system of `disk` but for `free_pages` pages; returns the filler's path
    (remove it to free the space)."""
    path = os.path.join(disk, "filler")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY)
    try:
        chunk = b"\0" * PAGE_BYTES
        while True:
            try:
                os.write(fd, chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        os.ftruncate(fd, max(os.fstat(fd).st_size // PAGE_BYTES - free_pages, 0) * PAGE_BYTES)
    finally:
        os.close(fd)
    return path


def files_of(directory) -> dict:
    """name -> bytes of every file in directory."""
    contents = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as file:
            contents[name] = file.read()
    return contents


def open_log(directory, **settings) -> PartitionLog:
    return PartitionLog.open(str(directory), LogConfig(**settings), clock_ms=FakeClock())


def open_fds() -> set:
    return set(os.listdir("/proc/self/fd"))


# segment.bytes of 10 KB and batches of ~3 KB: the append below rolls three times, and with an
# index entry after every batch the active segment has entries that only the roll persists.
ROLLING = dict(segment_bytes=10_000, index_interval_bytes=1)


@pytest.mark.parametrize("free_pages", [0, 1, 2, 3, 4])
def test_an_append_across_rolls_that_fills_the_disk_leaves_the_log_byte_identical(small_disk, free_pages):
    directory = small_disk / "p0"
    log = open_log(directory, **ROLLING)
    try:
        for i in range(4):
            log.append(values_batch(b"before-%d" % i + b"x" * 2000))
        before_records = read_all(log)  # a consumer has mapped the active segment
        before = (log.log_start_offset, log.log_end_offset, [s.base_offset for s in log.segments], files_of(directory))
        filler = fill_disk(small_disk, free_pages)
        rolling = b"".join(values_batch(b"new-%d" % i + b"y" * 3000) for i in range(8))
        with pytest.raises(StorageError, match="free disk space") as failure:
            log.append(rolling)
        assert failure.value.errno == errno.ENOSPC
        after = (log.log_start_offset, log.log_end_offset, [s.base_offset for s in log.segments], files_of(directory))
        assert after == before, "a failed append changed the log"
        assert read_all(log) == before_records

        os.unlink(filler)
        assert log.append(rolling) == (4, 11)
        assert [r.value[:5] for r in read_all(log)] == [b"befor"] * 4 + [b"new-%d" % i for i in range(8)]
    finally:
        log.close()
    with open_log(directory, **ROLLING) as reopened:
        assert [r.value[:5] for r in read_all(reopened)] == [b"befor"] * 4 + [b"new-%d" % i for i in range(8)]


def test_close_on_a_full_disk_frees_every_descriptor_and_still_raises(small_disk):
    fds_before = open_fds()
    log = open_log(small_disk / "p0", **ROLLING)
    for i in range(6):  # two closed segments and an active one whose index entries are not on disk yet
        log.append(values_batch(b"r-%d" % i + b"x" * 3000))
    assert len(log.segments) >= 2
    fill_disk(small_disk)
    with pytest.raises(StorageError, match="free disk space") as failure:
        log.close()
    assert failure.value.errno == errno.ENOSPC
    assert open_fds() == fds_before, "close left a descriptor open"
    log.close()  # closed already: nothing more to do, nothing raised


@pytest.fixture
def read_only_log(small_disk):
    """A log with two segments, a torn tail and a lost index, on a tmpfs remounted read-only."""
    directory = small_disk / "p0"
    with open_log(directory, **ROLLING) as log:
        for i in range(6):
            log.append(values_batch(b"r-%d" % i + b"x" * 3000))
        active = log.segments[-1]
        assert len(log.segments) >= 2
    with open(active.log_path, "ab") as torn:
        torn.write(values_batch(b"torn")[:40])  # a crash mid-write
    os.unlink(log.segments[0].offset_index.path)  # recovery must rebuild it
    remounted = _mount("-o", "remount,ro", str(small_disk))
    assert remounted.returncode == 0, remounted.stderr
    try:
        yield directory
    finally:
        _mount("-o", "remount,rw", str(small_disk))


def test_a_log_on_a_read_only_mount_opens_read_only_and_serves_its_sound_prefix(read_only_log):
    files_before = files_of(read_only_log)
    fds_before = open_fds()
    log = open_log(read_only_log, **ROLLING)
    try:
        assert log.read_only
        assert (log.log_start_offset, log.log_end_offset) == (0, 6)
        assert [r.value[:3] for r in read_all(log)] == [b"r-%d" % i for i in range(6)]
        assert log.offset_for_timestamp(0) == 0
    finally:
        log.close()
    assert open_fds() == fds_before
    assert files_of(read_only_log) == files_before, "a read-only open changed a file"


@pytest.mark.parametrize("mutation", [
    lambda log: log.append(values_batch(b"no")),
    lambda log: log.truncate_to(1),
    lambda log: log.reset_to(0),
    lambda log: log.apply_retention(),
    lambda log: log.delete_segments_before(3),
    lambda log: log.compact(),
])
def test_every_write_to_a_read_only_log_says_it_is_read_only_and_why(read_only_log, mutation):
    with open_log(read_only_log, **ROLLING, cleanup_policy="compact") as log:
        with pytest.raises(ReadOnlyLogError, match="read-only") as failure:
            mutation(log)
        assert failure.value.errno == errno.EROFS
        assert "Read-only file system" in str(failure.value)
        assert isinstance(failure.value, OSError)  # callers that handle OSError handle it
        assert log.log_end_offset == 6


def test_create_topics_on_a_full_disk_answers_storage_error_saying_what_to_do(small_disk):
    with running_brokers(str(small_disk), 1) as (brokers, _):
        address = brokers[0].config.listen
        with Admin(address, request_timeout_s=10) as admin:
            admin.create_topic("warm")
            fill_disk(small_disk)
            for attempt in range(2):  # the change that hit the full disk, then one after it
                with pytest.raises(DistlogError) as failure:
                    # its metadata image takes more than a page, so writing it needs space
                    admin.create_topic(f"big-{attempt}", partitions=500)
                assert failure.value.code == ErrorCode.STORAGE_ERROR, failure.value
                assert "free disk space" in failure.value.message


def test_an_atomic_file_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(small_disk):
    """metadata.json and raft-state.json are written this way; a half-written temporary left
    behind kept the disk full."""
    from distlog.durable import write_file_atomically

    target = small_disk / "state.json"
    write_file_atomically(target, b"old")
    with pytest.raises(OSError):
        write_file_atomically(target, b"x" * (2 * 1024 * 1024))  # twice the disk
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["state.json"]
