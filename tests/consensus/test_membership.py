"""Membership changes (thesis §4): learners, single-server changes, removing the leader, restarts."""

import random

import pytest

from distlog.consensus.log_store import MemoryStorage
from distlog.consensus.membership import Membership, MembershipChangePendingError
from distlog.consensus.messages import (
    Entry,
    HardState,
    MsgApp,
    MsgPreVote,
    MsgStartOver,
    MsgVote,
    MsgVoteResp,
)
from distlog.consensus.raft import Config, NotLeaderError, RaftNode, Role
from distlog.consensus.sim import SimMemoryStorage
from tests.consensus.network import Network


def group_with_spare() -> Network:
    """Voters 1-3 with node 1 leading (its term-1 marker committed), node 4 outside the group."""
    net = Network(4, voters=(1, 2, 3))
    net.elect(1)
    return net


def reassign_3_to_4(net: Network) -> None:
    """The partition reassignment sequence: add 4 as a learner, promote it, remove 3."""
    leader = net.leader()
    leader.add_learner(4)
    net.stabilize()
    assert leader.match_index(4) == leader.last_index, "the learner caught up"
    leader.promote_learner(4)
    net.stabilize()
    leader.remove_member(3)
    net.stabilize()


# ---- thesis §4.2.1 learners ----------------------------------------------------------------

def test_thesis_4_2_1_learner_receives_the_log_and_the_commit_index():
    net = group_with_spare()
    leader = net.nodes[1]
    leader.add_learner(4)
    net.stabilize()
    entry = leader.propose("a", 2)
    net.stabilize()
    learner = net.nodes[4]
    assert net.log(4) == net.log(1)
    assert learner.high_watermark == leader.high_watermark == entry.last_offset
    assert net.applied[4][-1] == entry
    assert (learner.voters, learner.learners) == ((1, 2, 3), (4,)) == (leader.voters, leader.learners)
    assert leader.match_index(4) == entry.last_offset


def test_thesis_4_2_1_learner_is_not_counted_for_commit():
    net = group_with_spare()
    leader = net.nodes[1]
    leader.add_learner(4)
    net.stabilize()
    net.isolate(2)
    net.isolate(3)
    entry = leader.propose("a", 1)
    net.stabilize()
    assert leader.match_index(4) == entry.last_offset, "the learner holds it"
    assert leader.high_watermark < entry.last_offset, "leader + learner are 1 of 3 voters, not a majority"


def test_thesis_4_2_1_learner_never_campaigns_not_even_a_pre_vote():
    net = group_with_spare()
    net.nodes[1].add_learner(4)
    net.stabilize()
    net.isolate(4)
    sent_before = len(net.sent)
    net.tick(4, 100)
    net.nodes[4].campaign()
    net.stabilize()
    assert not [m for m in net.sent[sent_before:] if m.frm == 4 and isinstance(m, (MsgPreVote, MsgVote))]
    assert net.nodes[4].role is Role.FOLLOWER and net.nodes[4].term == 1


def test_thesis_4_2_1_learners_do_not_count_for_check_quorum():
    net = group_with_spare()
    leader = net.nodes[1]
    leader.add_learner(4)
    net.stabilize()
    net.cut(1, 2)
    net.cut(1, 3)  # the leader hears only the learner
    net.tick(1, 10)
    net.stabilize()
    net.tick(1, 10)
    assert leader.role is Role.FOLLOWER, "hearing a learner is not hearing a majority"


def test_thesis_4_2_1_learner_answers_a_vote_request_but_only_voters_are_counted():
    """A learner votes when asked: the candidate's log may already make it a voter, and if it
    refused, a group could have a majority of its voters up and elect nobody (etcd PR 10998)."""
    learner = RaftNode(Config(node_id=4, peers=(1, 2, 3), learners=(4,), rng=random.Random(4)), MemoryStorage())
    learner.step(MsgVote(frm=2, to=4, term=1, last_index=-1, last_term=0))
    assert [(m.to, m.reject) for m in learner.ready().messages_after_persist] == [(2, False)]

    candidate = RaftNode(Config(node_id=1, peers=(1, 2, 3), learners=(4,), rng=random.Random(1), pre_vote=False),
                         MemoryStorage())
    candidate.campaign()
    rd = candidate.ready()
    assert sorted(m.to for m in rd.messages_after_persist if isinstance(m, MsgVote)) == [2, 3], "no learner asked"
    candidate.advance(rd)
    candidate.step(MsgVoteResp(frm=4, to=1, term=1, reject=False))
    assert candidate.role is Role.CANDIDATE, "a learner's vote does not count"
    candidate.step(MsgVoteResp(frm=2, to=1, term=1, reject=False))
    assert candidate.role is Role.LEADER


# ---- thesis §4.1 one change at a time -------------------------------------------------------

def test_thesis_4_1_a_change_is_refused_while_another_is_not_committed():
    net = group_with_spare()
    leader = net.nodes[1]
    net.drop(lambda m: isinstance(m, MsgApp) and m.to in (2, 3))
    entry = leader.add_learner(4)
    net.stabilize()
    assert leader.membership_change_pending and leader.learners == (4,)
    with pytest.raises(MembershipChangePendingError, match="not committed yet") as err:
        leader.promote_learner(4)
    assert err.value.retry_after_offset == entry.last_offset
    with pytest.raises(MembershipChangePendingError):
        leader.remove_member(3)
    net.recover()
    net.tick_all(3)
    assert not leader.membership_change_pending
    leader.promote_learner(4)
    net.stabilize()
    assert all(net.nodes[i].voters == (1, 2, 3, 4) for i in net.ids)


def test_thesis_4_1_new_leader_takes_a_change_only_after_committing_an_entry_of_its_term():
    net = Network(4, voters=(1, 2, 3))
    net.drop(lambda m: isinstance(m, MsgApp))
    leader = net.elect(1)
    with pytest.raises(MembershipChangePendingError, match="no entry of its term 1"):
        leader.add_learner(4)
    assert leader.learners == () and not leader.membership_change_pending
    net.recover()
    net.tick_all(3)
    leader.add_learner(4)


def test_thesis_4_1_a_leader_that_skipped_its_marker_appends_it_for_a_change():
    net = Network(4, voters=(1, 2, 3), marker_only_when_needed=True)
    leader = net.elect(1)
    assert leader.last_index == -1, "an empty log gets no marker"
    with pytest.raises(MembershipChangePendingError):
        leader.add_learner(4)
    net.stabilize()
    assert leader.high_watermark == 0
    leader.add_learner(4)


def test_invalid_changes_are_refused_with_what_to_do():
    net = group_with_spare()
    leader = net.nodes[1]
    with pytest.raises(ValueError, match="add it with add_learner first"):
        leader.promote_learner(4)
    with pytest.raises(ValueError, match="already a voter"):
        leader.add_learner(2)
    with pytest.raises(ValueError, match="not a member"):
        leader.remove_member(4)
    with pytest.raises(ValueError, match="use add_learner"):
        leader.propose(Membership((1, 2, 3, 4)), 1)
    with pytest.raises(NotLeaderError):
        net.nodes[2].add_learner(4)
    with pytest.raises(ValueError, match="last voter"):
        Membership((1,)).without(1)


# ---- promote, then remove --------------------------------------------------------------------

def test_thesis_4_promote_then_remove_moves_the_group_to_the_new_voters():
    net = group_with_spare()
    leader = net.nodes[1]
    reassign_3_to_4(net)
    for i in (1, 2, 4):
        assert (net.nodes[i].voters, net.nodes[i].learners) == ((1, 2, 4), ())
    assert 3 not in leader.progress, "the leader stops replicating to a removed node"
    net.isolate(4)
    net.recover()
    net.cut(1, 4)
    net.cut(2, 4)
    entry = leader.propose("after", 1)
    net.stabilize()
    assert leader.high_watermark == entry.last_offset, "1 and 2 are a majority of voters (1, 2, 4)"
    net.cut(1, 2)
    second = leader.propose("alone", 1)
    net.stabilize()
    assert leader.high_watermark < second.last_offset, "1 alone is not (the old voters 1-4 are not used)"


# ---- thesis §4.2.2 removing the current leader -------------------------------------------------

def test_thesis_4_2_2_leader_replicates_its_removal_without_counting_itself_then_steps_down():
    net = Network(3)
    leader = net.elect(1)
    net.cut(1, 3)
    entry = leader.remove_member(1)
    net.stabilize()
    assert leader.role is Role.LEADER and leader.voters == (2, 3)
    assert leader.high_watermark < entry.last_offset, "1 and 2 hold it: a majority of 1-3, not of 2-3"
    net.recover()
    net.tick_all(3)
    assert leader.role is Role.FOLLOWER and leader.high_watermark >= entry.last_offset
    new_leader = net.leader()
    assert new_leader is not None and new_leader.node_id in (2, 3) and new_leader.term == 2, \
        "the stepped-down leader hands over with MsgTimeoutNow"
    net.tick_all(50)
    assert leader.role is Role.FOLLOWER and net.leader() is new_leader and new_leader.term == 2


# ---- thesis §4.2.3 disruptive servers -----------------------------------------------------------

def test_thesis_4_2_3_removed_node_that_keeps_campaigning_raises_no_term_and_causes_no_election():
    net = Network(3)
    leader = net.elect(1)
    leader.remove_member(3)
    net.stabilize()
    removed = net.nodes[3]
    assert removed.voters == (1, 2, 3), "it never hears of its removal, so it thinks it still votes"
    sent_before = len(net.sent)
    for _ in range(10):
        removed.campaign()
        net.tick_all(10)
    assert [m for m in net.sent[sent_before:] if m.frm == 3 and isinstance(m, MsgPreVote)], "it did campaign"
    assert net.leader() is leader and (leader.term, net.nodes[2].term, removed.term) == (1, 1, 1)
    assert net.nodes[2].leader_id == 1
    # Had it campaigned without pre-vote, at a higher term and claiming a longer log: the
    # voters hear their leader, so its requests are ignored (leader lease).
    for voter in (1, 2):
        net.nodes[voter].step(MsgVote(frm=3, to=voter, term=7, last_index=100, last_term=6))
    net.stabilize()
    assert (leader.role, leader.term, net.nodes[2].term) == (Role.LEADER, 1, 1)


# ---- truncation and restart -----------------------------------------------------------------------

def test_truncated_uncommitted_change_reverts_the_membership():
    storage = MemoryStorage()
    storage.append([Entry(1, 0, 0, "marker")])
    storage.set_hard_state(HardState(term=1, vote=None, commit=0))
    node = RaftNode(Config(node_id=1, peers=(1, 2, 3), rng=random.Random(1)), storage)
    node.step(MsgApp(frm=2, to=1, term=1, prev_index=0, prev_term=1,
                     entries=(Entry(1, 1, 1, Membership((2, 3), (4,))),), commit=0))
    assert node.membership == Membership((2, 3), (4,)) and node.membership_change_pending
    node.advance(node.ready())
    node.tick()
    for _ in range(40):
        node.tick()
    assert node.role is Role.FOLLOWER, "removed (in its own log), it does not campaign"
    node.step(MsgApp(frm=3, to=1, term=2, prev_index=0, prev_term=1, entries=(Entry(2, 1, 1, "x"),), commit=0))
    assert node.membership == Membership((1, 2, 3)) and not node.membership_change_pending
    node.advance(node.ready())
    node.tick()
    for _ in range(40):
        node.tick()
    assert node.role is not Role.FOLLOWER, "a voter again, it campaigns"


def test_new_leader_truncating_an_uncommitted_change_reverts_it_on_the_old_leader():
    net = group_with_spare()
    net.cut(1, 2)
    net.cut(1, 3)
    net.nodes[1].add_learner(4)  # reaches the learner only: it cannot be committed
    net.stabilize()
    assert net.nodes[1].learners == (4,) and net.nodes[2].learners == ()
    net.tick_all(40)  # 1 steps down (check-quorum); 2 and 3 elect a leader without the change
    new_leader = net.leader()
    assert new_leader.node_id in (2, 3) and new_leader.term > 1
    net.recover()
    net.tick_all(5)
    old_leader = net.nodes[1]
    assert old_leader.leader_id == new_leader.node_id and net.log(1) == net.log(new_leader.node_id)
    assert old_leader.membership == Membership((1, 2, 3)) and not old_leader.membership_change_pending
    assert 4 not in new_leader.progress


def test_restart_recovers_the_membership_from_the_log():
    net = group_with_spare()
    reassign_3_to_4(net)
    for i in net.ids:
        net.crash(i)
    for i in net.ids:
        net.start(i)
    for i in (1, 2, 4):
        assert net.nodes[i].membership == Membership((1, 2, 4))
    net.elect(2)
    assert 4 in net.nodes[2].progress and 3 not in net.nodes[2].progress


def test_restart_after_a_crash_that_drops_an_unsynced_change_reverts_it():
    storage = SimMemoryStorage()
    storage.append([Entry(1, 0, 0, "marker")])
    storage.set_hard_state(HardState(term=1, vote=1, commit=0))
    storage.sync()
    storage.append([Entry(1, 1, 1, Membership((1, 2, 3), (4,)))])
    config = Config(node_id=2, peers=(1, 2, 3), rng=random.Random(2))
    assert RaftNode(config, storage).learners == (4,)
    storage.crash(random.Random(0))
    assert RaftNode(config, storage).membership == Membership((1, 2, 3))


def test_retention_and_start_over_carry_the_membership_below_the_log_start():
    net = group_with_spare()
    leader = net.nodes[1]
    net.crash(2)
    reassign_3_to_4(net)  # committed by 1, 3 and 4 while 2 is down
    for i in range(4):
        leader.propose(f"r{i}", 1)
    net.stabilize()
    last = leader.last_index
    net.storage[1].compact(last - 1)
    assert net.storage[1].base_membership == Membership((1, 2, 4))
    net.start(2)
    net.tick_all(4)
    assert any(isinstance(m, MsgStartOver) and m.to == 2 for m in net.sent)
    assert net.storage[2].log_start_offset == last and net.storage[2].base_membership == Membership((1, 2, 4))
    assert net.nodes[2].membership == Membership((1, 2, 4))
    net.crash(2)
    assert net.start(2).membership == Membership((1, 2, 4))
