"""The replication layer without sockets: ReplicaManagers over real partition logs, in memory.

Elections, commit, failover, the isolated leader, retries across a failover, planned hand-off,
preferred leaders, in-sync replicas, heartbeat coalescing; after each, every replica's committed
range is byte-identical.
"""

import os
import time

import pytest

from distlog.consensus.raft import Role
from distlog.log.errors import CorruptDataError
from distlog.log.batch import peek_header
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.protocol.errors import ErrorCode
from distlog.replication import manager as manager_module
from distlog.replication.acks import PendingProduce, ProduceWaiters, WaitingPartition
from distlog.replication.producer_state import ProducerBatchInfo
from distlog.replication.wire import PeerFrame, RaftWireError, decode_frame, encode_frame
from tests.replication.harness import MemoryCluster

KEY = ("t", 0)


@pytest.fixture
def cluster(tmp_path):
    cluster = MemoryCluster(str(tmp_path))
    yield cluster
    cluster.close()


def committed_bytes(replica) -> bytes:
    """Every batch below the high watermark, as stored."""
    out, offset = [], replica.log_start_offset
    while offset < replica.high_watermark:
        view = replica.read(offset, 1 << 20)
        if not len(view):
            break
        out.append(bytes(view))
        position = 0
        while position < len(view):
            header = peek_header(view, position)
            offset = header.last_offset + 1
            position += header.batch_length
    return b"".join(out)


def assert_identical(replicas):
    assert min(r.high_watermark for r in replicas.values()) > 0
    views = [committed_bytes(r) for r in replicas.values()]
    shortest = min(len(v) for v in views)
    assert len({v[:shortest] for v in views}) == 1, "replicas differ in their committed range"


def propose(cluster, broker, value: bytes, **batch_fields):
    manager = cluster.managers[broker]
    return manager.propose(manager.groups[KEY], build_batch([value], **batch_fields))


def test_the_preferred_replica_leads_a_new_group_and_a_write_is_committed_on_all_three(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1, what="broker 1 leading")
    [appended] = propose(cluster, 1, b"hello")
    assert (appended.base_offset, appended.last_offset) == (0, 0), "a new partition's first record is at offset 0"
    cluster.run_until(lambda: all(r.high_watermark == 1 for r in replicas.values()), what="commit everywhere")
    assert_identical(replicas)
    leader, epoch, isr, hw, leo = cluster.managers[2].leader_info(KEY)
    assert (leader, epoch, hw) == (1, replicas[1].leader_epoch, 1)


def test_a_follower_acks_only_after_its_write_was_synced(cluster, monkeypatch):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    synced = []
    follower = replicas[2]
    real_sync = follower.storage.sync
    monkeypatch.setattr(follower.storage, "sync", lambda: (synced.append(follower.log.log_end_offset), real_sync()))
    sent_acks = []
    real_queue = cluster.managers[2]._queue

    def watching_queue(key, messages):
        for m in messages:
            if type(m).__name__ == "MsgAppResp" and not m.reject and m.index >= 0:
                sent_acks.append((m.index, list(synced)))
        real_queue(key, messages)

    monkeypatch.setattr(cluster.managers[2], "_queue", watching_queue)
    propose(cluster, 1, b"x")
    cluster.run_until(lambda: replicas[1].high_watermark == 1)
    acks = [(index, s) for index, s in sent_acks if index >= 0]
    assert acks, "the follower never acknowledged"
    for index, synced_ends in acks:
        assert synced_ends and max(synced_ends) > index, f"ack of {index} sent before a sync covered it"


def test_a_killed_leader_is_replaced_and_every_committed_write_survives(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    for i in range(5):
        propose(cluster, 1, b"v%d" % i)
    cluster.run_until(lambda: all(r.high_watermark == 5 for r in replicas.values()))
    cluster.crash(1)
    cluster.run_until(lambda: cluster.leader_of(KEY) in (2, 3), what="a new leader")
    new = cluster.leader_of(KEY)
    propose(cluster, new, b"after")
    cluster.run_until(lambda: all(replicas[b].high_watermark >= 7 for b in (2, 3)))  # + the marker
    replicas[1] = cluster.restart(1, "t", 0, (1, 2, 3))
    cluster.run_until(lambda: replicas[1].high_watermark == replicas[new].high_watermark, what="catch-up")
    assert_identical(replicas)
    values = committed_bytes(replicas[1])
    for i in range(5):
        assert b"v%d" % i in values


def test_an_isolated_leader_commits_nothing_steps_down_and_truncates_its_tail(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    propose(cluster, 1, b"committed")
    cluster.run_until(lambda: all(r.high_watermark == 1 for r in replicas.values()))
    for other in (2, 3):
        cluster.cut |= {(1, other), (other, 1)}
    [doomed] = propose(cluster, 1, b"never-committed")
    cluster.run(0.2)
    assert replicas[1].high_watermark == 1, "the isolated leader committed without a majority"
    cluster.run_until(lambda: replicas[1].node.role is not Role.LEADER, what="check-quorum stepping down")
    cluster.run_until(lambda: any(replicas[b].node.role is Role.LEADER for b in (2, 3)), what="majority leader")
    majority_leader = next(b for b in (2, 3) if replicas[b].node.role is Role.LEADER)
    propose(cluster, majority_leader, b"majority")
    cluster.run_until(lambda: replicas[majority_leader].high_watermark >= 3)
    cluster.cut.clear()
    cluster.run_until(lambda: replicas[1].high_watermark == replicas[majority_leader].high_watermark)
    assert replicas[1].node.term_at(doomed.last_offset) != doomed.term, "the old leader kept its uncommitted tail"
    assert b"never-committed" not in committed_bytes(replicas[1])
    assert_identical(replicas)


def test_an_idempotent_retry_after_a_failover_is_answered_not_written_twice(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    batch = build_batch([b"once"], producer_id=42, producer_epoch=0, base_sequence=0)
    [first] = cluster.managers[1].propose(replicas[1], batch)
    cluster.run_until(lambda: all(r.high_watermark == 1 for r in replicas.values()))
    cluster.crash(1)  # the ack never reached the producer
    cluster.run_until(lambda: cluster.leader_of(KEY) in (2, 3))
    new = cluster.leader_of(KEY)
    [again] = cluster.managers[new].propose(replicas[new], batch)
    assert isinstance(again, ProducerBatchInfo) and again.base_offset == first.base_offset
    cluster.run(0.5)
    assert committed_bytes(replicas[new]).count(b"once") == 1


def test_acks_all_waits_for_the_commit_and_fails_retriably_when_leadership_is_lost(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    waiters = ProduceWaiters()
    groups = cluster.managers[1].groups
    [entry] = propose(cluster, 1, b"a")
    result = {"error_code": 0, "error_message": "", "base_offset": entry.base_offset}
    waiters.add(PendingProduce(b"p", 1, -1, [result], [WaitingPartition(result, KEY, entry.term, entry.last_offset)],
                               deadline_s=1e18))
    assert waiters.settle(groups, {KEY}, {}, 0) == [], "answered before anything was replicated"
    cluster.run_until(lambda: replicas[1].high_watermark == 1)
    [(_, _, [settled])] = waiters.settle(groups, {KEY}, {}, 0)
    assert settled["error_code"] == 0 and settled["base_offset"] == 0

    for other in (2, 3):
        cluster.cut |= {(1, other), (other, 1)}
    [entry] = propose(cluster, 1, b"b")
    result = {"error_code": 0, "error_message": "", "base_offset": entry.base_offset}
    waiters.add(PendingProduce(b"p", 2, -1, [result], [WaitingPartition(result, KEY, entry.term, entry.last_offset)],
                               deadline_s=1e18))
    cluster.run_until(lambda: replicas[1].node.role is not Role.LEADER)
    [(_, _, [failed])] = waiters.settle(groups, {KEY}, {}, 0)
    assert failed["error_code"] == ErrorCode.NOT_LEADER


def test_a_stopping_broker_hands_its_leadership_to_a_caught_up_follower(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    propose(cluster, 1, b"x")
    cluster.managers[1].begin_shutdown()
    cluster.run_until(lambda: not cluster.managers[1].leads_anything_replicated(), max_seconds=2,
                      what="the hand-off")
    cluster.run_until(lambda: cluster.leader_of(KEY) in (2, 3), max_seconds=2)
    cluster.run_until(lambda: all(r.high_watermark >= 1 for r in replicas.values()), max_seconds=2,
                      what="the write committed across the hand-off")


def test_the_preferred_leader_takes_leadership_back_after_it_returns(cluster, monkeypatch):
    monkeypatch.setattr(manager_module, "PREFERRED_LEADER_DELAY_S", 1.0)
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    cluster.crash(1)
    cluster.run_until(lambda: cluster.leader_of(KEY) in (2, 3))
    replicas[1] = cluster.restart(1, "t", 0, (1, 2, 3))
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1, max_seconds=10, what="preferred leader restored")


def test_a_dead_follower_drops_out_of_the_in_sync_replicas(cluster, monkeypatch):
    monkeypatch.setattr(manager_module, "REPLICA_LAG_TIME_MAX_S", 1.0)
    cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    cluster.run(0.5)
    assert cluster.managers[1].in_sync_replicas(KEY) == [1, 2, 3]
    cluster.crash(3)
    for i in range(10):
        propose(cluster, 1, b"%d" % i)
        cluster.run(0.2)
    assert cluster.managers[1].in_sync_replicas(KEY) == [1, 2]
    assert cluster.managers[2].leader_info(KEY)[2] == [1, 2], "peers learn the ISR from the leader's report"


def test_idle_groups_heartbeat_with_ids_only(cluster):
    for partition in range(20):
        for b in (1, 2, 3):
            cluster.open_partition(b, "t", partition, (1, 2, 3), campaign=b == 1)
    cluster.run_until(lambda: all(cluster.managers[1].groups[("t", p)].node.role is Role.LEADER for p in range(20)))
    cluster.run(1.5)
    frames = []
    real_deliver = cluster.deliver

    def capture():
        frames.extend(decode_frame(s, r, body, [bytes(e) for e in entries]) for s, r, body, entries in cluster.queue)
        real_deliver()

    cluster.deliver = capture
    cluster.run(manager_module.HEARTBEAT_FULL_EVERY_S)
    from_leader = [f for f in frames if f.sender == 1]
    same = sum(len(f.heartbeats_same) for f in from_leader)
    full = sum(len(f.heartbeats) for f in from_leader)
    assert same > 0 and same > 3 * full, f"idle heartbeats are not coalesced ({same} by id, {full} in full)"


def test_a_frame_survives_the_wire_and_garbage_is_refused():
    from distlog.consensus.messages import Entry, MsgApp, MsgVote
    frame = PeerFrame(1, 7)
    frame.messages.append((("a", 0), MsgApp(1, 2, 3, 4, 2, (Entry(3, 5, 6, b"batch"),), 4)))
    frame.messages.append((("b", 1), MsgVote(1, 2, 3, 9, 2)))
    frame.heartbeats.append((("a", 1), 3, 10))
    frame.heartbeats_same.append(("b", 2))
    frame.leaders.append((("a", 0), 3, (1, 2), 5, 7))
    body, data = encode_frame(frame)
    decoded = decode_frame(1, 2, body, data)
    assert decoded.messages == frame.messages and decoded.heartbeats == frame.heartbeats
    assert decoded.heartbeats_same == frame.heartbeats_same and decoded.incarnation == 7
    assert decoded.leaders == [(("a", 0), 3, [1, 2], 5, 7)]
    for garbage in (b"", b"\xc1", body[:-3]):
        with pytest.raises(RaftWireError):
            decode_frame(1, 2, garbage, data)
    with pytest.raises(RaftWireError):
        decode_frame(1, 2, body, [])  # an entry naming a frame that is not there


def test_a_follower_behind_the_leaders_log_start_starts_over_from_it(cluster):
    config = LogConfig(segment_bytes=4096, retention_bytes=8192)
    replicas = cluster.create("t", config=config)
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    cluster.crash(3)
    for i in range(200):
        propose(cluster, 1, b"%04d" % i + b"x" * 100)
        if i % 20 == 19:
            cluster.run(0.1)
    cluster.run_until(lambda: replicas[1].high_watermark == 200)
    for b in (1, 2):
        replicas[b].run_housekeeping(int(time.time() * 1000))
    assert replicas[1].log_start_offset > 0, "retention removed nothing: the test proves nothing"
    replicas[3] = cluster.restart(3, "t", 0, (1, 2, 3), config)
    cluster.run_until(lambda: replicas[3].high_watermark == replicas[1].high_watermark, what="the start-over")
    assert replicas[3].log_start_offset == replicas[1].log_start_offset
    assert_identical(replicas)
    propose(cluster, 1, b"after")
    cluster.run_until(lambda: all(r.high_watermark == replicas[1].log_end_offset for r in replicas.values()))
    assert_identical(replicas)


def test_a_replica_makes_what_its_log_holds_durable_before_it_can_acknowledge_any_of_it(tmp_path, monkeypatch):
    import os as os_module
    from distlog.log.partition_log import PartitionLog
    from distlog.replication.replica import PartitionReplica
    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig())
    log.append(build_batch([b"written, never fsynced"]), assign_offsets=True, leader_term=1)
    log._segments[-1]._close_fd()  # what a SIGKILL leaves: bytes in the page cache, no fsync
    reopened = PartitionLog.open(str(tmp_path / "t-0"), LogConfig())
    fsynced = []
    real_fsync = os_module.fsync
    monkeypatch.setattr(os_module, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    replica = PartitionReplica("t", 0, reopened, 1, (1, 2, 3))
    assert reopened._segments[-1]._fd in fsynced, "the recovered tail was not fsynced before the replica came up"
    replica.close()


# ---- the idempotent producers' table across a failover -----------------------------------------

def _idempotent(value: bytes, producer_id: int, sequence: int):
    return build_batch([value], producer_id=producer_id, producer_epoch=0, base_sequence=sequence)


def test_a_retry_after_a_failover_is_recognised_however_much_was_written_since(cluster, monkeypatch):
    """16 producers flooding 1 MB batches outgrew the new leader's 64 MiB tail scan: a producer
    whose last batch lay further back was unknown there, so its retry of that batch would have
    been written again (or refused OUT_OF_ORDER, failing its sends for good). The followers keep
    the table as they write, so the scan no longer bounds what a new leader knows."""
    from distlog.replication import replica as replica_module

    monkeypatch.setattr(replica_module, "PRODUCER_STATE_SCAN_BYTES", 1024)  # a few batches
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    retried = _idempotent(b"retried", producer_id=7, sequence=0)
    [first] = cluster.managers[1].propose(replicas[1], retried)
    for i in range(300):  # ~50 KB: far more than the scan reads (and one index interval), from others
        cluster.managers[1].propose(replicas[1], _idempotent(b"other-%d" % i + b"." * 100, producer_id=100 + i,
                                                             sequence=0))
    cluster.run_until(lambda: all(r.high_watermark == 301 for r in replicas.values()))
    cluster.crash(1)  # producer 7's acknowledgement never arrived
    cluster.run_until(lambda: cluster.leader_of(KEY) in (2, 3), what="a new leader")
    new = cluster.leader_of(KEY)
    [again] = cluster.managers[new].propose(replicas[new], retried)
    assert isinstance(again, ProducerBatchInfo) and again.base_offset == first.base_offset
    [next_one] = cluster.managers[new].propose(replicas[new], _idempotent(b"next", producer_id=7, sequence=1))
    assert not isinstance(next_one, ProducerBatchInfo), "the producer's next batch is new"
    cluster.run(0.5)
    assert committed_bytes(replicas[new]).count(b"retried") == 1


def test_a_follower_forgets_what_a_truncated_tail_told_it_of_its_producers(tmp_path):
    """An uncommitted batch a follower wrote and then had replaced must not answer a retry as a
    duplicate: its offsets hold another batch now, and the retry would be acknowledged unwritten."""
    cluster = MemoryCluster(str(tmp_path), broker_ids=(1, 2, 3, 4, 5))
    voters = (1, 2, 3, 4, 5)
    replicas = cluster.create("t", voters=voters)
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    propose(cluster, 1, b"committed")
    cluster.run_until(lambda: all(r.high_watermark == 1 for r in replicas.values()))
    # Only broker 2 gets producer 7's batch: it stays uncommitted, on 1 and 2.
    cluster.cut |= {(1, b) for b in (3, 4, 5)}
    cluster.managers[1].propose(replicas[1], _idempotent(b"doomed", producer_id=7, sequence=0))
    cluster.run_until(lambda: replicas[2].log_end_offset == 2, what="the batch on broker 2")
    assert replicas[2].producers.check(ProducerBatchInfo(7, 0, 0, 0, -1, -1)) is not None, "2 knows the batch"
    cluster.crash(1)
    cluster.cut = {(2, b) for b in voters} | {(b, 2) for b in voters}
    cluster.run_until(lambda: cluster.leader_of(KEY) in (3, 4, 5), what="a leader of 3, 4 and 5")
    leader = cluster.leader_of(KEY)
    propose(cluster, leader, b"replacement")
    cluster.run_until(lambda: replicas[leader].high_watermark >= 3, what="the replacement committed")
    cluster.cut.clear()
    cluster.run_until(lambda: replicas[2].high_watermark == replicas[leader].high_watermark, what="2 catching up")
    assert b"doomed" not in committed_bytes(replicas[2])
    assert replicas[2].producers.check(ProducerBatchInfo(7, 0, 0, 0, -1, -1)) is None, \
        "broker 2 still takes the replaced batch for written"
    del replicas[1]
    assert_identical(replicas)
    cluster.close()


def test_a_leader_that_steps_down_forgets_the_batches_it_proposed_and_lost(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    propose(cluster, 1, b"committed")
    cluster.run_until(lambda: all(r.high_watermark == 1 for r in replicas.values()))
    for other in (2, 3):
        cluster.cut |= {(1, other), (other, 1)}
    cluster.managers[1].propose(replicas[1], _idempotent(b"doomed", producer_id=7, sequence=0))
    cluster.run_until(lambda: replicas[1].node.role is not Role.LEADER, what="check-quorum stepping down")
    cluster.run_until(lambda: cluster.leader_of(KEY) in (2, 3), what="a majority leader")
    leader = cluster.leader_of(KEY)
    propose(cluster, leader, b"majority")
    cluster.run_until(lambda: replicas[leader].high_watermark >= 3)
    cluster.cut.clear()
    cluster.run_until(lambda: replicas[1].high_watermark == replicas[leader].high_watermark, what="1 catching up")
    assert b"doomed" not in committed_bytes(replicas[1])
    assert replicas[1].producers.check(ProducerBatchInfo(7, 0, 0, 0, -1, -1)) is None
    assert_identical(replicas)


def test_damage_a_follower_write_reads_is_repaired_not_taken_for_a_failed_disk(cluster, monkeypatch):
    """A write can read the log (a truncation finds the batch it cuts at, a closed segment's
    batches crc-checked). Damage found there took the partition offline for good as "writing its
    Raft log failed", so it stayed under-replicated (chaos soak runs ended so). Damage found by
    any read goes to repair."""
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    propose(cluster, 1, b"first")
    cluster.run_until(lambda: all(r.high_watermark == 1 for r in replicas.values()))
    damage = CorruptDataError(replicas[3].log.directory, 0, 0, "crc32c mismatch")

    def append_reading_damage(entries):
        raise damage

    monkeypatch.setattr(replicas[3].storage, "append", append_reading_damage)
    propose(cluster, 1, b"second")
    cluster.run_until(lambda: KEY in cluster.managers[3].damaged or KEY in cluster.managers[3].failed,
                      what="the damage found")
    assert KEY not in cluster.managers[3].failed, cluster.managers[3].failed
    damaged_replica, error = cluster.managers[3].take_damaged()[KEY]
    assert damaged_replica is replicas[3] and error is damage
    cluster.run_until(lambda: all(replicas[b].high_watermark == 2 for b in (1, 2)), what="the others go on")
