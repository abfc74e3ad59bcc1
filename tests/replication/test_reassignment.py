"""Reassignment: the pure step function, and whole moves between in-memory ReplicaManagers over
real partition logs while writes keep flowing (each ends byte-identical on the new replicas)."""

import pytest

from distlog.consensus.raft import Role
from distlog.log.batch_builder import build_batch
from distlog.replication.reassignment import ADD_LEARNER, DONE, PROMOTE, REMOVE, TRANSFER, WAIT, Step, next_step
from tests.replication.harness import MemoryCluster
from tests.replication.test_replica_manager import KEY, assert_identical, committed_bytes


# ---- the step function -------------------------------------------------------------------


def test_a_move_adds_the_new_broker_as_a_learner_first():
    assert next_step(1, (1, 2, 3), (), False, {2: 9, 3: 9}, 9, [2, 3, 4]) == Step(ADD_LEARNER, 4)


def test_nothing_happens_while_the_last_membership_entry_is_uncommitted():
    assert next_step(1, (1, 2, 3), (4,), True, {4: 9}, 9, [2, 3, 4]) == Step(WAIT)


def test_a_learner_is_promoted_only_once_it_holds_everything_committed():
    assert next_step(1, (1, 2, 3), (4,), False, {4: 8}, 9, [2, 3, 4]) == Step(WAIT, 4)
    assert next_step(1, (1, 2, 3), (4,), False, {4: 9}, 9, [2, 3, 4]) == Step(PROMOTE, 4)


def test_old_voters_leave_only_after_every_target_broker_votes():
    assert next_step(2, (1, 2, 3, 4), (), False, {}, 9, [2, 3, 4]) == Step(REMOVE, 1)
    assert next_step(2, (2, 3, 4), (), False, {}, 9, [2, 3, 4]) == Step(DONE)


def test_a_leaving_leader_hands_leadership_to_a_caught_up_target_voter_first():
    assert next_step(1, (1, 2, 3, 4), (), False, {2: 5, 3: 9, 4: 9}, 9, [2, 3, 4]) == Step(TRANSFER, 3)
    assert next_step(1, (1, 2, 3, 4), (), False, {2: 5, 3: 5, 4: 5}, 9, [2, 3, 4]) == Step(WAIT)


def test_a_learner_the_target_no_longer_wants_is_removed():
    assert next_step(1, (1, 2, 3), (4,), False, {4: 9}, 9, [1, 2, 3]) == Step(REMOVE, 4)


# ---- whole moves ---------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    cluster = MemoryCluster(str(tmp_path), broker_ids=(1, 2, 3, 4))
    yield cluster
    cluster.close()


def move(cluster, replicas, target, writes: list, max_seconds=30.0):
    """Drive the reassignment on every broker each turn (only the leader acts), writing one
    record per turn through whoever leads; returns the simulated seconds without a leader."""
    leaderless_turns = [0]
    done = []

    def step():
        for manager in cluster.managers.values():
            done.extend(manager.drive_reassignments({KEY: target}))
        leader = cluster.leader_of(KEY)
        if leader is None:
            leaderless_turns[0] += 1
            return bool(done)
        manager = cluster.managers[leader]
        value = b"w%d" % len(writes)
        try:
            manager.propose(manager.groups[KEY], build_batch([value]))
            writes.append(value)
        except Exception:
            pass  # handing over: the next turn writes through the new leader
        return bool(done)

    cluster.run_until(step, max_seconds=max_seconds, what=f"the move to {target}")
    return done, leaderless_turns[0]


def test_a_partition_moves_from_1_2_3_to_2_3_4_under_writes_and_ends_identical(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1, what="broker 1 leading")
    replicas[4] = cluster.open_partition(4, "t", 0, (1, 2, 3))  # bootstrap without itself: a learner-to-be
    assert replicas[4].node.voters == (1, 2, 3)
    writes = []
    done, leaderless_turns = move(cluster, replicas, [2, 3, 4], writes)
    assert done and done[0] == (KEY, [2, 3, 4])
    new_leader = cluster.leader_of(KEY)
    assert new_leader in (2, 3, 4), "the leaving broker handed leadership on"
    assert leaderless_turns <= 8, "the group was leaderless for longer than an election timeout"
    for b in (2, 3, 4):
        assert replicas[b].node.voters == (2, 3, 4) and replicas[b].node.learners == ()
    # What was acknowledged (committed) lives on every new replica, byte for byte.
    cluster.run_until(lambda: len({replicas[b].high_watermark for b in (2, 3, 4)}) == 1, what="commit everywhere")
    assert_identical({b: replicas[b] for b in (2, 3, 4)})
    data = committed_bytes(replicas[4])
    committed_writes = [w for w in writes if w in data]
    assert len(committed_writes) >= len(writes) - 5, "writes went missing during the move"
    # Broker 1 is out: the group commits without it.
    cluster.crash(1)
    manager = cluster.managers[new_leader]
    manager.propose(manager.groups[KEY], build_batch([b"after"]))
    cluster.run_until(lambda: all(b"after" in committed_bytes(replicas[b]) for b in (2, 3, 4)),
                      what="a commit without broker 1")


def test_a_new_replica_remembers_its_membership_across_a_restart(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    replicas[4] = cluster.open_partition(4, "t", 0, (1, 2, 3))
    move(cluster, replicas, [2, 3, 4], [])
    cluster.crash(4)
    # Reopened with the same (stale) bootstrap: the membership comes from its log, not from it.
    replicas[4] = cluster.restart(4, "t", 0, (1, 2, 3))
    assert replicas[4].node.voters == (2, 3, 4)


def test_a_removed_broker_cannot_disrupt_the_group(cluster):
    replicas = cluster.create("t")
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    replicas[4] = cluster.open_partition(4, "t", 0, (1, 2, 3))
    move(cluster, replicas, [2, 3, 4], [])
    leader = cluster.leader_of(KEY)
    term = replicas[leader].node.term
    # Broker 1 no longer hears the group. Whatever it believes (it may never have received
    # the entry removing it), it times out and pre-votes in vain: no term moves.
    cluster.cut |= {(b, 1) for b in (2, 3, 4)}
    cluster.run(5.0)
    assert cluster.leader_of(KEY) == leader and replicas[leader].node.term == term
    assert replicas[1].node.role is not Role.LEADER


def test_a_single_replica_partition_moves_to_another_broker(cluster):
    replicas = {1: cluster.open_partition(1, "t", 0, (1,), campaign=True)}
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1)
    manager = cluster.managers[1]
    for i in range(3):
        manager.propose(manager.groups[KEY], build_batch([b"old%d" % i]))
    replicas[4] = cluster.open_partition(4, "t", 0, (1,))
    done, _ = move(cluster, replicas, [4], [])
    assert done[0] == (KEY, [4])
    assert cluster.leader_of(KEY) == 4 or replicas[4].node.voters == (4,)
    cluster.run_until(lambda: cluster.leader_of(KEY) == 4, what="broker 4 leading its partition")
    data = committed_bytes(replicas[4])
    assert all(b"old%d" % i in data for i in range(3))
