"""PartitionStorage: Raft over real partition logs — stamped batches, restart, truncation, retention."""

import json
import os

import pytest

from distlog.consensus.log_store import MemoryStorage
from distlog.consensus.messages import Entry, HardState
from distlog.consensus.membership import Membership
from distlog.consensus.partition_storage import (
    LEADER_MARKER_KEY,
    MEMBERSHIP_KEY,
    PartitionStorage,
    leader_marker_batch,
    membership_batch,
    membership_in_batch,
    stamp_record_batch,
)
from distlog.consensus.raft import Config, RaftNode
from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.log.records import batch_records
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
    assert batch_records(RecordBatch(marker.data))[0].key == LEADER_MARKER_KEY
    assert RecordBatch(marker.data).is_control and not RecordBatch(batch.data).is_control
    stamped = RecordBatch(batch.data)
    stamped.verify()  # stamping base offset and term leaves the checksum valid
    assert (stamped.base_offset, stamped.leader_term, [r.value for r in batch_records(stamped)]) == (
        1, 1, [b"a", b"b", b"c"]
    )
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


def entries(count, term_of=lambda i: 1, key_of=lambda i: None, value=b"v" * 50):
    return [Entry(term_of(i), i, i, stamp_record_batch(
        build_batch([value], keys=None if key_of(i) is None else [key_of(i)]), i, term_of(i)))
        for i in range(count)]


def test_retention_never_removes_an_entry_above_the_offset_it_is_given(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, retention_bytes=1)  # retention would take every closed segment
    storage = open_storage(tmp_path / "p", config)
    storage.append(entries(8, term_of=lambda i: 1 + i // 3))
    storage.sync()
    assert len(storage.log.segments) > 2
    assert storage.apply_retention(upto_offset=-1, now_ms=0) == 0
    for upto in (2, 5):
        storage.apply_retention(upto_offset=upto, now_ms=0)
        start = storage.log_start_offset
        assert 0 < start <= upto + 1, "only segments wholly at or below upto go"
        assert [e.base_offset for e in storage.entries_from(start, 10)] == list(range(start, 8))
        assert storage.start_term == 1 + (start - 1) // 3


def test_retention_bounded_by_applied_leaves_a_lagging_node_its_entries_to_apply(tmp_path, open_storage):
    """Issue #9: retention past `applied` left ready() nothing to apply below the log start."""
    config = LogConfig(segment_bytes=200, retention_bytes=1)
    storage = open_storage(tmp_path / "p", config)
    storage.append(entries(8))
    storage.set_hard_state(HardState(term=1, vote=None, commit=7))
    storage.sync()
    node = RaftNode(Config(node_id=1, peers=(1, 2, 3), applied_offset=2), storage)
    storage.apply_retention(upto_offset=min(node.commit, node.applied), now_ms=0)
    assert storage.log_start_offset <= 3
    rd = node.ready()
    assert [e.base_offset for e in rd.committed_entries] == [3, 4, 5, 6, 7]
    node.advance(rd)
    assert not node.has_ready()


def test_retention_past_applied_is_a_clear_error_not_a_spinning_ready():
    storage = MemoryStorage()
    storage.append([Entry(1, i, i) for i in range(6)])
    storage.set_hard_state(HardState(term=1, vote=None, commit=5))
    node = RaftNode(Config(node_id=1, peers=(1, 2, 3), applied_offset=1), storage)
    storage.compact(3)  # unbounded retention: removes 2 and 3, which were never applied
    with pytest.raises(RuntimeError, match="before they were applied"):
        node.ready()


def test_compaction_rewrites_only_segments_at_or_below_the_offset_it_is_given(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, cleanup_policy="compact")
    storage = open_storage(tmp_path / "p", config)
    storage.append(entries(8, key_of=lambda i: b"k"))  # one key: each record supersedes the last
    storage.sync()
    closed_end = storage.log.segments[-1].base_offset - 1
    assert closed_end >= 4
    before = {e.base_offset: bytes(e.data) for e in storage.entries_from(0, 10)}
    storage.compact(upto_offset=3, now_ms=0)
    after = {e.base_offset: RecordBatch(e.data) for e in storage.entries_from(0, 10)}
    upto = max(s.next_offset - 1 for s in storage.log.segments if s.next_offset - 1 <= 3)
    assert all(after[i].record_count == 0 for i in range(upto)), "superseded within the bound: removed"
    assert after[upto].record_count == 1
    assert all(bytes(after[i].buffer) == before[i] for i in range(upto + 1, 8)), "above the bound: untouched"
    storage.compact(upto_offset=closed_end, now_ms=0)
    assert RecordBatch(storage.entries_from(upto, 1)[0].data).record_count == 0


def count_fsyncs(monkeypatch):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    return calls


@pytest.mark.parametrize("flush_policy", ["always", "never", "interval:60000"])
def test_append_never_fsyncs_and_sync_always_does_whatever_the_flush_policy(tmp_path, open_storage,
                                                                           monkeypatch, flush_policy):
    """Issue #9: append called maybe_flush, so under 'never' or an interval a follower acked
    entries only its page cache held, and under 'always' it paid one fsync per append."""
    storage = open_storage(tmp_path / "p", LogConfig(flush_policy=flush_policy))
    fsyncs = count_fsyncs(monkeypatch)
    for batch in entries(3):
        storage.append([batch])
    assert fsyncs == [], "append leaves the fsync to sync()"
    storage.sync()
    assert len(fsyncs) == 1, "one fsync for the three appends (group commit)"
    assert all(not segment.dirty for segment in storage.log.segments)


def read_state_file(storage):
    with open(storage.state_path) as f:
        return json.load(f)


def test_a_term_or_vote_change_reaches_the_disk_at_sync(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.set_hard_state(HardState(term=3, vote=2, commit=-1))
    assert not os.path.exists(storage.state_path)
    storage.sync()
    assert (read_state_file(storage)["term"], read_state_file(storage)["vote"]) == (3, 2)
    storage.set_hard_state(HardState(term=3, vote=2, commit=5))
    storage.sync()
    assert read_state_file(storage)["commit"] == -1, "a commit-only change waits for the next write"


def test_a_start_over_not_yet_synced_is_finished_on_reopen(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append(entries(3))
    storage.sync()
    storage.reset(100, 5)
    assert read_state_file(storage)["pending_start"] == {"op": "reset", "offset": 100, "term": 5, "membership": None}
    reopened = open_storage(tmp_path / "p")  # a crash here, before sync(): the reopen finishes it
    assert read_state_file(reopened)["pending_start"] is None
    assert (reopened.log_start_offset, reopened.start_term, reopened.last_index) == (100, 5, 99)
    storage.sync()
    assert read_state_file(storage)["pending_start"] is None


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
        storage.apply_retention(upto_offset=7, now_ms=0)
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
    assert storage.apply_retention(upto_offset=7, now_ms=10**12) == 0
    assert storage.log_start_offset == 0


# ---- membership entries ------------------------------------------------------------------


def membership_entry(offset, membership, term=1) -> Entry:
    return Entry(term, offset, offset, membership_batch(offset, term, membership))


def plain_entry(offset, term=1) -> Entry:
    return Entry(term, offset, offset, stamp_record_batch(build_batch([b"v" * 50]), offset, term))


ADDED = Membership((1, 2, 3), (4,))
PROMOTED = Membership((1, 2, 3, 4))


def test_a_membership_batch_is_recognised_and_nothing_else_is():
    assert membership_in_batch(membership_batch(7, 2, ADDED)) == ADDED
    assert membership_in_batch(leader_marker_batch(7, 2)) is None
    assert membership_in_batch(build_batch([b"x"], keys=[MEMBERSHIP_KEY])) is None, "only a control batch counts"


def test_membership_entries_survive_a_reopen_and_are_recorded_before_the_log_takes_them(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append([plain_entry(0), membership_entry(1, ADDED)])
    assert read_state_file(storage)["memberships"] == [[1, [1, 2, 3], [4]]], "recorded ahead, before any sync"
    storage.append([plain_entry(2), membership_entry(3, PROMOTED)])
    storage.sync()
    storage.log.close()
    reopened = open_storage(tmp_path / "p")
    assert [(e.last_offset, membership_in_batch(e.data)) for e in reopened.membership_entries()] == [(1, ADDED), (3, PROMOTED)]


def test_a_membership_entry_the_crash_cut_off_does_not_come_back(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append([plain_entry(0)])
    storage.sync()
    [segment] = storage.log.segments
    durable_bytes = os.path.getsize(segment.log_path)
    storage.append([membership_entry(1, ADDED)])  # recorded in the state, never fsynced in the log
    storage.log.close()
    with open(segment.log_path, "r+b") as f:  # power loss: the unsynced batch is gone
        f.truncate(durable_bytes)
    reopened = open_storage(tmp_path / "p")
    assert reopened.last_index == 0
    assert reopened.membership_entries() == []


def test_a_membership_entry_replaced_by_a_truncation_is_forgotten(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append([plain_entry(0), membership_entry(1, ADDED)])
    storage.append([plain_entry(1, term=2)])  # a new leader's entry replaces it
    assert storage.membership_entries() == []
    storage.sync()
    storage.log.close()
    assert open_storage(tmp_path / "p").membership_entries() == []


def test_retention_past_membership_entries_moves_the_base_membership_even_across_a_crash(tmp_path, open_storage):
    config = LogConfig(segment_bytes=200, retention_bytes=1)
    storage = open_storage(tmp_path / "p", config)
    storage.append([plain_entry(0), membership_entry(1, ADDED), membership_entry(2, PROMOTED)]
                   + [plain_entry(i) for i in range(3, 9)])
    storage.sync()
    boundary = storage.log.segments[-2].next_offset
    assert boundary > 2, "retention removes both membership entries"
    storage.log.delete_segments_before = crash
    with pytest.raises(Crash):
        storage.apply_retention(upto_offset=8, now_ms=0)
    storage.log.close()
    reopened = open_storage(tmp_path / "p", config)
    assert reopened.log_start_offset == boundary
    assert reopened.base_membership == PROMOTED and reopened.membership_entries() == []


def test_a_start_over_records_the_membership_below_the_new_start(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append([plain_entry(0), membership_entry(1, ADDED)])
    storage.reset(100, 5, PROMOTED)
    storage.sync()
    storage.log.close()
    reopened = open_storage(tmp_path / "p")
    assert reopened.base_membership == PROMOTED and reopened.membership_entries() == []


def test_a_node_reopened_over_its_storage_has_the_membership_of_its_log_not_its_bootstrap(tmp_path, open_storage):
    storage = open_storage(tmp_path / "p")
    storage.append([plain_entry(0), membership_entry(1, ADDED), membership_entry(2, PROMOTED)])
    storage.sync()
    storage.log.close()
    node = RaftNode(Config(node_id=4, peers=(1, 2, 3), stamp_batch=stamp_record_batch, leader_marker=leader_marker_batch,
                           membership_entry=membership_batch, read_membership=membership_in_batch),
                    open_storage(tmp_path / "p"))
    assert node.voters == (1, 2, 3, 4) and node.learners == ()
