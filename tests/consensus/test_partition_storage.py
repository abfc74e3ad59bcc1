"""PartitionStorage: Raft over real partition logs — stamped batches, restart, truncation, retention."""

import pytest

from distlog.consensus.messages import Entry, HardState
from distlog.consensus.partition_storage import (
    LEADER_MARKER_KEY,
    PartitionStorage,
    leader_marker_batch,
    stamp_record_batch,
)
from distlog.log.batch import RecordBatch, build_batch
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from tests.consensus.network import Network


@pytest.fixture
def open_storage():
    """Opens PartitionStorage over a directory; closes every log it opened at teardown."""
    opened = []

    def open_(directory, config=LogConfig()):
        opened.append(PartitionStorage(PartitionLog.open(str(directory), config)))
        return opened[-1]

    yield open_
    for storage in opened:
        storage.log.close()


def cluster(tmp_path, open_storage):
    return Network(3, make_storage=lambda i: open_storage(tmp_path / f"p{i}"),
                   stamp_batch=stamp_record_batch, leader_marker=leader_marker_batch)


def test_replicated_batches_are_byte_identical_and_stamped_with_offsets_and_term(tmp_path, open_storage):
    net = cluster(tmp_path, open_storage)
    leader = net.elect(1)
    entry = leader.propose(build_batch([b"a", b"b", b"c"], timestamps_ms=[1, 2, 3]), 3)
    net.stabilize()
    assert (entry.base_offset, entry.last_offset) == (1, 3)
    logs = [bytes(net.storage[i].log.read(0, 1 << 20)) for i in net.ids]
    assert logs[0] == logs[1] == logs[2]
    (marker, batch) = net.storage[2].entries_from(0, 10)
    assert RecordBatch(marker.data).records()[0].key == LEADER_MARKER_KEY
    assert RecordBatch(marker.data).is_control and not RecordBatch(batch.data).is_control
    stamped = RecordBatch(batch.data)
    stamped.verify()  # stamping base offset and term leaves the checksum valid
    assert (stamped.base_offset, stamped.leader_term, [r.value for r in stamped.records()]) == (1, 1, [b"a", b"b", b"c"])
    assert net.nodes[3].high_watermark == 3


def test_restart_recovers_term_vote_and_log_from_disk(tmp_path, open_storage):
    net = cluster(tmp_path, open_storage)
    leader = net.elect(1)
    leader.propose(build_batch([b"x"]), 1)
    net.stabilize()
    for i in net.ids:
        net.storage[i].close()
        net.storage[i] = open_storage(tmp_path / f"p{i}")
        net.start(i)
    node = net.nodes[2]
    assert (node.term, node.vote, node.last_index, node.high_watermark) == (1, 1, 1, 1)
    net.elect(3)
    assert net.nodes[3].term == 2


def test_append_truncates_a_conflicting_tail(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    batches = [Entry(1, i, i, stamp_record_batch(build_batch([b"%d" % i]), i, 1)) for i in range(4)]
    storage.append(batches)
    replacement = Entry(2, 2, 3, stamp_record_batch(build_batch([b"new", b"new"]), 2, 2))
    storage.append([replacement])
    assert storage.last_index == 3
    assert [(e.term, e.base_offset, e.last_offset) for e in storage.entries_from(0, 10)] == [
        (1, 0, 0), (1, 1, 1), (2, 2, 3)]
    assert storage.span_at(3) == (2, 2, 3)


def test_hard_state_and_start_over_survive_a_reopen(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.set_hard_state(HardState(term=4, vote=2, commit=-1))
    storage.reset(100, 3)
    storage.log.close()
    reopened = open_storage(tmp_path / "p")
    assert reopened.hard_state() == HardState(term=4, vote=2, commit=-1)
    assert (reopened.log_start_offset, reopened.start_term, reopened.last_index) == (100, 3, 99)


def test_retention_never_removes_entries_above_the_high_watermark(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, retention_bytes=1)
    storage = open_storage(tmp_path / "p", config)
    storage.append([Entry(1 + i // 3, i, i, stamp_record_batch(build_batch([b"v" * 50]), i, 1 + i // 3))
                    for i in range(8)])
    assert len(storage.log.segments) > 2
    assert storage.apply_retention(high_watermark=0, now_ms=0) == 0
    assert storage.log_start_offset == 0
    assert storage.apply_retention(high_watermark=7, now_ms=0) > 0
    start = storage.log_start_offset
    assert start > 0 and storage.start_term == 1 + (start - 1) // 3


def test_a_log_start_moved_behind_its_back_is_refused(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, retention_bytes=1)
    storage = open_storage(tmp_path / "p", config)
    storage.append([Entry(1, i, i, stamp_record_batch(build_batch([b"v" * 50]), i, 1)) for i in range(6)])
    storage.log.apply_retention(now_ms=0)
    with pytest.raises(RuntimeError, match="apply_retention"):
        storage.start_term


class Crash(Exception):
    """Stands for the process dying at this point."""


def crash(*_args, **_kwargs):
    raise Crash()


def test_a_crash_between_recording_and_doing_retention_is_finished_on_reopen(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, retention_bytes=1)
    storage = open_storage(tmp_path / "p", config)
    storage.append([Entry(1 + i // 3, i, i, stamp_record_batch(build_batch([b"v" * 50]), i, 1 + i // 3))
                    for i in range(8)])
    boundary = storage.log.segments[-2].next_offset  # retention keeps only the active segment
    storage.log.delete_segments_before = crash  # the state file says "moving", the log is untouched
    with pytest.raises(Crash):
        storage.apply_retention(high_watermark=7, now_ms=0)
    assert storage.log.log_start_offset == 0
    storage.log.close()
    reopened = open_storage(tmp_path / "p", config)
    assert reopened.log_start_offset == boundary
    assert reopened.start_term == 1 + (boundary - 1) // 3
    assert reopened.entries_from(boundary, 10)[0].base_offset == boundary


def test_a_crash_part_way_through_a_start_over_is_finished_on_reopen(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append([Entry(1, i, i, stamp_record_batch(build_batch([b"v"]), i, 1)) for i in range(3)])
    real_reset_to = storage.log.reset_to

    def reset_then_crash(offset):
        real_reset_to(offset)
        raise Crash()  # the log moved; the state file still says "pending"

    storage.log.reset_to = reset_then_crash
    with pytest.raises(Crash):
        storage.reset(100, 5)
    storage.log.close()
    reopened = open_storage(tmp_path / "p")
    assert (reopened.log_start_offset, reopened.start_term, reopened.last_index) == (100, 5, 99)


def test_raft_retention_leaves_a_compacted_topic_to_compaction(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, retention_bytes=1, cleanup_policy="compact")
    storage = open_storage(tmp_path / "p", config)
    storage.append([Entry(1, i, i, stamp_record_batch(build_batch([b"v" * 50], keys=[b"k%d" % i]), i, 1))
                    for i in range(8)])
    assert len(storage.log.segments) > 2
    assert storage.apply_retention(high_watermark=7, now_ms=10**12) == 0
    assert storage.log_start_offset == 0
