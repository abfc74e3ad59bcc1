"""The synced-size record (distlog/log/synced.py): with DISTLOG_RECORD_SYNCED=1 every fsync of a
segment leaves its size in a sidecar, and only an fsync does; without it nothing is written."""

import gc
import os

import pytest

from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.log.synced import RECORD_SYNCED_ENV, recorded_synced_size
from tests.log.helpers import values_batch


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setenv(RECORD_SYNCED_ENV, "1")


def sizes(log):
    """(file size, recorded synced size) of every segment, oldest first."""
    return [(os.path.getsize(s.log_path), recorded_synced_size(s.log_path)) for s in log.segments]


def test_a_flush_records_the_size_it_made_durable_and_an_append_alone_does_not(tmp_path, recording):
    log = PartitionLog.open(str(tmp_path / "p"))
    try:
        assert sizes(log) == [(0, None)], "a new segment was never synced"
        log.append(values_batch(b"a"))
        log.flush()
        [(synced, recorded)] = sizes(log)
        assert recorded == synced > 0
        log.append(values_batch(b"b"))
        [(size, recorded)] = sizes(log)
        assert (size > synced, recorded) == (True, synced), "an append without fsync must not count as synced"
        assert log.maybe_flush()
        assert sizes(log) == [(size, size)]
    finally:
        log.close()


def test_a_roll_records_the_closing_segment_whole_and_truncation_records_the_shorter_file(tmp_path, recording):
    log = PartitionLog.open(str(tmp_path / "p"), LogConfig(segment_bytes=300))  # 2 batches each
    try:
        for i in range(6):
            log.append(values_batch(b"v%d" % i * 20))
        closed = sizes(log)[:-1]
        assert len(closed) >= 2 and all(size == recorded for size, recorded in closed), closed
        assert sizes(log)[-1][1] is None, "the active segment took appends but was not flushed since it rolled"
        log.flush()
        before = sizes(log)[-1][0]
        log.truncate_to(log.segments[-1].base_offset + 1)  # drops the active segment's last batch
        size, recorded = sizes(log)[-1]
        assert size == recorded < before
    finally:
        log.close()


def test_deleted_segments_take_their_records_with_them_and_a_new_file_of_the_same_name_starts_unrecorded(
        tmp_path, recording):
    directory = tmp_path / "p"
    log = PartitionLog.open(str(directory), LogConfig(segment_bytes=200))
    try:
        for i in range(6):
            log.append(values_batch(b"v%d" % i * 20))
        log.flush()
        log.reset_to(0)  # deletes every segment and creates 0000...0.log anew
        assert sizes(log) == [(0, None)]
        assert sorted(os.listdir(directory)) == sorted(
            n for n in os.listdir(directory) if not n.endswith(".synced")), "no record outlives its segment"
    finally:
        log.close()


def test_a_reopened_log_accepts_its_records_and_removes_those_whose_segment_is_gone(tmp_path, recording):
    directory = tmp_path / "p"
    log = PartitionLog.open(str(directory))
    log.append(values_batch(b"a"))
    log.close()
    assert "00000000000000000000.log.synced" in os.listdir(directory)
    orphan = directory / "00000000000000000099.log.synced"
    orphan.write_bytes(b"\0" * 8)  # as a quarantine leaves the record of a segment it moved away
    log = PartitionLog.open(str(directory))
    try:
        assert log.log_end_offset == 1
        assert not orphan.exists()
    finally:
        log.close()


def test_a_killed_process_leaves_the_record_of_its_last_fsync(tmp_path, recording):
    """What cut_power relies on: the sidecar as it was after the last fsync, whatever came after."""
    log = PartitionLog.open(str(tmp_path / "p"))
    log.append(values_batch(b"a"))
    log.flush()
    [(synced, _)] = sizes(log)
    log.append(values_batch(b"b"))
    path = log.segments[-1].log_path
    del log  # no close: a SIGKILL runs no flush; the fds close unwritten
    gc.collect()
    assert os.path.getsize(path) > synced
    assert recorded_synced_size(path) == synced


def test_without_the_variable_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv(RECORD_SYNCED_ENV, raising=False)
    directory = tmp_path / "p"
    log = PartitionLog.open(str(directory), LogConfig(segment_bytes=200))
    try:
        for i in range(4):
            log.append(values_batch(b"v%d" % i * 20))
        log.flush()
        assert not [name for name in os.listdir(directory) if name.endswith(".synced")]
    finally:
        log.close()
