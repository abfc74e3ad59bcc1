"""The page cache a segment keeps: fsynced bytes before its hot tail are dropped, nothing else.

Dropping is advisory (fadvise DONTNEED), so what matters is where it is allowed: only below what
an fsync has already made durable, and never the newest HOT_TAIL_BYTES that tail readers want."""

import os

from distlog.log import segment as segment_module
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.log.batch import iter_batches
from tests.log.helpers import read_all, values_batch

HOT = 64 * 1024
STEP = 16 * 1024


def test_only_fsynced_bytes_before_the_hot_tail_leave_the_page_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(segment_module, "HOT_TAIL_BYTES", HOT)
    monkeypatch.setattr(segment_module, "_CACHE_DROP_STEP_BYTES", STEP)
    synced_size = {}  # fd -> file size at its last fsync
    drops = []  # (offset, length, file size fsynced at the time)
    real_fsync, real_fadvise = os.fsync, os.posix_fadvise

    def recording_fsync(fd):
        real_fsync(fd)
        synced_size[fd] = os.fstat(fd).st_size

    def recording_fadvise(fd, offset, length, advice):
        assert advice == os.POSIX_FADV_DONTNEED
        drops.append((offset, length, synced_size.get(fd, 0)))
        real_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "posix_fadvise", recording_fadvise)
    log = PartitionLog.open(str(tmp_path / "p"), LogConfig(flush_policy="always"))
    values = [bytes([i % 251]) * 3000 for i in range(200)]  # ~600 KB in batches of two records
    for i in range(0, len(values), 2):
        log.append(values_batch(values[i], values[i + 1]))
        log.flush()  # as the broker's group commit does after each turn's writes
    assert drops, "nothing was dropped from the page cache"
    end = 0
    for offset, length, fsynced in drops:
        assert offset == end, "the dropped ranges are not contiguous from the start"
        end = offset + length
        assert end <= fsynced - HOT, "bytes of the hot tail or not yet fsynced were dropped"
        assert length >= STEP
    assert end >= log.segments[-1].size_bytes - HOT - 4 * STEP, "the cold part was not dropped"
    assert [r.value for r in read_all(log)] == values  # dropping never loses a byte
    log.close()


def test_a_log_that_is_never_fsynced_drops_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(segment_module, "HOT_TAIL_BYTES", HOT)
    monkeypatch.setattr(segment_module, "_CACHE_DROP_STEP_BYTES", STEP)
    drops = []
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: drops.append(args))
    log = PartitionLog.open(str(tmp_path / "p"), LogConfig(flush_policy="never"))
    for i in range(100):
        log.append(values_batch(b"x" * 5000))
        log.maybe_flush(0)
    assert drops == [] and len(read_all(log)) == 100
    log.close()


def _rss_file_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:"))


def test_reading_a_whole_log_keeps_only_the_latest_read_of_each_segment_mapped(tmp_path):
    """A broker that served 500 MB of reads measured 540 MB RSS, all of it segment pages it had
    mapped, and fadvise cannot drop mapped pages. Reads now hand the previous read's pages back."""
    log = PartitionLog.open(str(tmp_path / "p"), LogConfig(flush_policy="never", segment_bytes=256 * 1024 * 1024))
    value = bytes(range(256)) * 4  # 1 KiB
    for _ in range(64):
        log.append(values_batch(*[value] * 1000))  # ~1 MB batches, 64 MB in one segment
    before_kb = _rss_file_kb()
    first = log.read(0, 1 << 20)
    first_copy = bytes(first)
    offset, read_bytes = 0, 0
    while offset < log.log_end_offset:
        view = log.read(offset, 1 << 20)
        read_bytes += len(view)
        offset = list(iter_batches(view))[-1].last_offset + 1
    assert read_bytes > 60 * 1024 * 1024
    grown_kb = _rss_file_kb() - before_kb
    assert grown_kb < 8 * 1024, f"reading 64 MB left {grown_kb} KiB of the segment mapped"
    assert bytes(first) == first_copy, "a view handed out earlier still reads the same bytes"
    log.close()
