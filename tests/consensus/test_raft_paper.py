"""The Raft core against the paper (§ = Raft paper, thesis § = Ongaro's thesis), as etcd names its tests."""

import random

import pytest

from distlog.consensus.log_store import MemoryStorage
from distlog.consensus.messages import (
    Entry,
    HardState,
    MsgApp,
    MsgAppResp,
    MsgPreVoteResp,
    MsgStartOver,
    MsgTimeoutNow,
    MsgVote,
    MsgVoteResp,
)
from distlog.consensus.raft import Config, NotLeaderError, RaftNode, Role
from tests.consensus.network import Network


def lone_node(storage=None, **config) -> RaftNode:
    """Node 1 of a 3-node cluster, driven by hand."""
    return RaftNode(Config(node_id=1, peers=(1, 2, 3), rng=random.Random(1), **config),
                    storage if storage is not None else MemoryStorage())


def storage_with(entries, term, commit, vote=None) -> MemoryStorage:
    storage = MemoryStorage()
    storage.append([Entry(t, base, last, data) for t, base, last, data in entries])
    storage.set_hard_state(HardState(term=term, vote=vote, commit=commit))
    return storage


def responses(rd, kind):
    return [m for m in rd.messages + rd.messages_after_persist if isinstance(m, kind)]


# ---- §5.2 leader election ---------------------------------------------------------------

def test_5_2_candidate_with_votes_from_a_majority_becomes_leader():
    net = Network(3)
    leader = net.elect(1)
    assert leader.term == 1
    assert [net.nodes[i].leader_id for i in (2, 3)] == [1, 1]


def test_5_2_candidate_without_a_majority_does_not_win():
    net = Network(3, pre_vote=False)
    net.isolate(1)
    net.nodes[1].campaign()
    net.stabilize()
    assert net.nodes[1].role is Role.CANDIDATE
    assert net.nodes[1].term == 1


def test_5_2_follower_grants_at_most_one_vote_per_term_and_persists_it_first():
    node = lone_node()
    node.step(MsgVote(frm=2, to=1, term=1, last_index=-1, last_term=0))
    node.step(MsgVote(frm=3, to=1, term=1, last_index=-1, last_term=0))
    rd = node.ready()
    assert [(m.to, m.reject) for m in responses(rd, MsgVoteResp)] == [(2, False), (3, True)]
    assert rd.hard_state == HardState(term=1, vote=2, commit=-1)
    assert not rd.messages, "a vote is a promise: it may only leave after the hard state is persisted"


def test_5_2_restarted_follower_remembers_its_vote():
    storage = MemoryStorage()
    node = lone_node(storage)
    node.step(MsgVote(frm=2, to=1, term=1, last_index=-1, last_term=0))
    storage.set_hard_state(node.ready().hard_state)

    restarted = lone_node(storage)
    restarted.step(MsgVote(frm=3, to=1, term=1, last_index=-1, last_term=0))
    assert [m.reject for m in responses(restarted.ready(), MsgVoteResp)] == [True]


def test_5_2_election_timeouts_are_randomized_within_one_to_two_timeouts():
    timeouts = set()
    for seed in range(30):
        node = RaftNode(Config(node_id=1, peers=(1, 2, 3), rng=random.Random(seed)), MemoryStorage())
        ticks = 0
        while node.role is Role.FOLLOWER:
            node.tick()
            ticks += 1
        assert 10 <= ticks < 20
        timeouts.add(ticks)
    assert len(timeouts) >= 5


# ---- §5.3 log replication ---------------------------------------------------------------

def test_5_3_leader_assigns_record_offsets_and_replicates_the_batch():
    net = Network(3)
    leader = net.elect(1)
    entry = leader.propose(b"three records", 3)
    assert (entry.term, entry.base_offset, entry.last_offset) == (1, 1, 3), "offset 0 is the leader marker"
    net.stabilize()
    for i in net.ids:
        assert net.log(i) == [(1, 0, 0, b""), (1, 1, 3, b"three records")]
        assert net.applied[i][-1] == entry
    assert leader.high_watermark == 3
    assert [leader.match_index(i) for i in net.ids] == [3, 3, 3]


def test_5_3_leader_stamps_base_offset_and_term_into_the_batch():
    stamped = []
    net = Network(3, stamp_batch=lambda data, base, term: stamped.append((base, term)) or (data, base, term))
    leader = net.elect(1)
    entry = leader.propose(b"x", 2)
    assert entry.data == (b"x", 1, 1) and stamped == [(1, 1)]


def test_5_3_follower_truncates_a_conflicting_uncommitted_tail():
    storage = storage_with([(1, 0, 0, "m"), (1, 1, 2, "a"), (2, 3, 4, "stale")], term=2, commit=0)
    node = lone_node(storage)
    node.step(MsgApp(frm=2, to=1, term=3, prev_index=2, prev_term=1,
                     entries=(Entry(3, 3, 3, "new"),), commit=0))
    rd = node.ready()
    assert rd.entries == (Entry(3, 3, 3, "new"),)
    storage.append(rd.entries)
    assert [e.data for e in storage.entries] == ["m", "a", "new"]
    assert [(m.index, m.reject) for m in responses(rd, MsgAppResp)] == [(3, False)]


def test_5_3_follower_never_truncates_below_its_commit_index():
    storage = storage_with([(1, 0, 0, "m"), (2, 1, 2, "committed")], term=2, commit=2)
    node = lone_node(storage)
    node.step(MsgApp(frm=2, to=1, term=3, prev_index=0, prev_term=1,
                     entries=(Entry(3, 1, 1, "other"),), commit=0))
    rd = node.ready()
    assert not rd.entries, "what is committed is identical on every leader: nothing to replace"
    assert [(m.index, m.reject) for m in responses(rd, MsgAppResp)] == [(2, False)]


def test_5_3_follower_rejects_an_append_that_does_not_follow_its_log():
    node = lone_node(storage_with([(1, 0, 0, "m")], term=1, commit=0))
    node.step(MsgApp(frm=2, to=1, term=1, prev_index=5, prev_term=1, entries=(), commit=0))
    (resp,) = responses(node.ready(), MsgAppResp)
    assert resp.reject and resp.index == 5 and (resp.hint_index, resp.hint_term) == (0, 1)


def test_5_3_fast_backtracking_skips_a_whole_conflicting_term_in_one_round_trip():
    common = [(1, i, i, f"c{i}") for i in range(10)]
    net = Network(3)
    net.storage[1] = storage_with(common + [(3, i, i, f"new{i}") for i in range(10, 30)], term=3, commit=9)
    net.storage[2] = storage_with(common + [(2, i, i, f"old{i}") for i in range(10, 50)], term=3, commit=9)
    net.storage[3] = storage_with(common, term=3, commit=9)
    for i in net.ids:
        net.start(i)
    net.elect(1)
    rejections = [m for m in net.sent if isinstance(m, MsgAppResp) and m.frm == 2 and m.reject]
    assert len(rejections) == 1
    assert net.log(2) == net.log(1)


# ---- §5.4 safety ------------------------------------------------------------------------

def test_5_4_1_voter_denies_a_candidate_whose_log_is_less_up_to_date():
    node = lone_node(storage_with([(1, 0, 0, "m"), (2, 1, 1, "x")], term=2, commit=0))
    node.step(MsgVote(frm=2, to=1, term=3, last_index=5, last_term=1))
    node.step(MsgVote(frm=3, to=1, term=3, last_index=1, last_term=2))
    assert [(m.to, m.reject) for m in responses(node.ready(), MsgVoteResp)] == [(2, True), (3, False)]


def test_5_4_2_leader_does_not_commit_an_earlier_term_entry_by_counting_replicas():
    net = Network(3)
    net.storage[1] = storage_with([(1, 0, 0, "m"), (2, 1, 1, "term 2")], term=2, commit=0)
    for i in (2, 3):
        net.storage[i] = storage_with([(1, 0, 0, "m")], term=2, commit=0)
    for i in net.ids:
        net.start(i)
    net.drop(lambda m: isinstance(m, MsgApp))  # only the votes get through
    leader = net.elect(1)
    assert leader.term == 3 and leader.last_index == 2  # the term-3 marker sits at offset 2

    leader.step(MsgAppResp(frm=2, to=1, term=3, index=1))  # node 2 now holds the term-2 entry
    net.stabilize()
    assert leader.high_watermark == 0, "a majority holds offset 1, but it is from term 2 (Figure 8)"

    leader.step(MsgAppResp(frm=2, to=1, term=3, index=2))
    net.stabilize()
    assert leader.high_watermark == 2, "committing the term-3 marker commits the term-2 entry with it"


def test_5_4_leader_counts_itself_only_once_its_entries_are_persisted():
    storage = MemoryStorage()
    node = RaftNode(Config(node_id=1, peers=(1,), rng=random.Random(1)), storage)
    node.campaign()
    rd = node.ready()
    assert node.role is Role.LEADER and rd.entries and not rd.committed_entries
    storage.append(rd.entries)
    node.advance(rd)
    assert [e.last_offset for e in node.ready().committed_entries] == [0]


def test_a_node_that_does_not_deliver_committed_entries_still_advances_applied_without_reading_them():
    """A broker's partition is its own state machine: reading each committed batch back was a
    tenth of a follower's time, so it asks not to be handed them."""

    class UnreadableStorage(MemoryStorage):
        reads_allowed = True

        def entries_from(self, base_offset, max_count):
            assert self.reads_allowed, "committed entries were read back from storage"
            return super().entries_from(base_offset, max_count)

    storage = UnreadableStorage()
    node = RaftNode(Config(node_id=1, peers=(1,), rng=random.Random(1), deliver_committed_entries=False), storage)
    node.campaign()
    rd = node.ready()
    storage.append(rd.entries)
    node.advance(rd)
    node.propose(b"x", 3)
    rd = node.ready()
    storage.append(rd.entries)
    node.advance(rd)
    storage.reads_allowed = False
    rd = node.ready()
    assert rd.committed_entries == () and rd.applied_to == node.commit == 3
    node.advance(rd)
    assert node.applied == 3 and not node.has_ready()


# ---- §5 restart from persisted state ------------------------------------------------------

def test_5_restarted_cluster_keeps_its_committed_log_and_replays_it():
    net = Network(3)
    leader = net.elect(1)
    leader.propose("a", 2)
    net.stabilize()
    before = {i: net.log(i) for i in net.ids}
    for i in net.ids:
        net.crash(i)
        net.applied[i].clear()
    for i in net.ids:
        net.start(i)
    assert net.nodes[2].term == 1 and net.nodes[2].high_watermark == 2
    net.elect(2)
    assert all(net.log(i)[:2] == before[i] for i in net.ids)
    assert [e.data for e in net.applied[3]][:2] == [b"", "a"]


# ---- thesis §9.6 pre-vote, §6.2 check-quorum, §3.10 leadership transfer ---------------------

def test_thesis_9_6_partitioned_node_rejoining_does_not_disrupt_the_leader():
    net = Network(3)
    net.elect(1)
    net.isolate(3)
    net.tick(3, 100)
    net.stabilize()
    assert net.nodes[3].term == 1, "pre-vote keeps a cut-off node from inflating its term"
    net.recover()
    net.tick_all(30)
    assert net.leader() is net.nodes[1] and net.nodes[1].term == 1


def test_thesis_9_6_without_pre_vote_a_partitioned_node_inflates_its_term():
    net = Network(3, pre_vote=False)
    net.elect(1)
    net.isolate(3)
    net.tick(3, 100)
    net.stabilize()
    assert net.nodes[3].term > 1


def test_thesis_6_2_check_quorum_leader_that_cannot_hear_a_majority_steps_down():
    net = Network(3)
    net.elect(1)
    net.isolate(1)
    net.tick_all(40)
    assert net.nodes[1].role is not Role.LEADER
    with pytest.raises(NotLeaderError):
        net.nodes[1].propose("lost", 1)
    assert net.leader() is not None and net.leader().term > 1


def test_thesis_6_2_followers_ignore_vote_requests_while_they_hear_a_leader():
    net = Network(3, pre_vote=False)
    net.elect(1)
    node = net.nodes[2]
    node.step(MsgVote(frm=3, to=2, term=5, last_index=100, last_term=4))
    assert node.term == 1 and not node.has_ready()


def test_thesis_3_10_leadership_transfer():
    net = Network(3)
    leader = net.elect(1)
    leader.propose("a", 1)
    net.stabilize()
    leader.transfer_leadership(2)
    net.stabilize()
    assert net.leader() is net.nodes[2] and net.nodes[2].term == 2
    with pytest.raises(NotLeaderError) as err:
        net.nodes[1].propose("b", 1)
    assert err.value.leader_id == 2
    assert any(isinstance(m, MsgTimeoutNow) for m in net.sent)


def test_thesis_3_10_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout():
    net = Network(3)
    leader = net.elect(1)
    net.isolate(3)
    leader.transfer_leadership(3)
    net.stabilize()
    with pytest.raises(NotLeaderError):
        leader.propose("held back during the transfer", 1)
    net.tick_all(10)
    assert leader.role is Role.LEADER
    leader.propose("accepted again", 1)


# ---- §7 analog: retention removed what a follower needs ---------------------------------------

def test_7_follower_behind_the_leaders_log_start_starts_over_from_it():
    net = Network(3)
    leader = net.elect(1)
    net.crash(3)
    for i in range(6):
        leader.propose(f"r{i}", 2)
    net.stabilize()
    net.storage[1].compact(8)
    net.start(3)
    net.tick_all(4)
    assert any(isinstance(m, MsgStartOver) and m.to == 3 for m in net.sent)
    assert net.storage[3].log_start_offset == 9
    assert net.log(3) == net.log(1)
    assert net.nodes[3].high_watermark == leader.high_watermark == 12


# ---- regressions found by the simulator ----------------------------------------------------

def test_regression_divergent_follower_at_the_leaders_log_start_is_told_to_start_over():
    """Seed 29 (first simulator version): the leader kept probing at its log start forever.

    The follower's entry just below the leader's log start conflicts, so the only way forward
    is MsgStartOver; the leader used to compute the same `next` again from the hint.
    """
    committed = [(1, 0, 0, "m"), (1, 1, 1, "a")]
    leader_log = committed + [(3, 2, 2, "m3"), (3, 3, 3, "b"), (3, 4, 4, "c")]
    net = Network(3)
    net.storage[1] = storage_with(leader_log, term=3, commit=4)
    net.storage[1].compact(2)
    net.storage[2] = storage_with(leader_log, term=3, commit=4)
    net.storage[3] = storage_with(committed + [(2, 2, 2, "x"), (2, 3, 3, "y")], term=2, commit=1)
    for i in net.ids:
        net.start(i)
    net.elect(1)
    net.tick_all(4)
    assert net.log(3) == net.log(1)
    assert net.storage[3].log_start_offset == 3


def test_regression_candidate_gets_a_whole_election_timeout_after_winning_the_pre_vote():
    """Seed 3765 of 2000..11999 livelocked: a node that won the pre-vote after 8 ticks kept
    counting from 8 as a candidate, timed out before slow vote replies came back, and
    started over, again and again."""
    node = lone_node()
    while node.role is Role.FOLLOWER:
        node.tick()
    for _ in range(8):
        node.tick()
    node.step(MsgPreVoteResp(frm=2, to=1, term=1, reject=False))
    assert node.role is Role.CANDIDATE and node.term == 1
    ticks = 0
    while node.role is Role.CANDIDATE and node.term == 1:
        node.tick()
        ticks += 1
    assert ticks >= 10


def test_regression_leader_pipelines_small_appends_to_a_follower_in_replicate_state():
    """Seeds with one entry per append failed liveness: one append per round trip was slower
    than the clients. In REPLICATE the leader now keeps up to max_in_flight_msgs in flight."""
    net = Network(3, max_entries_per_msg=1, max_in_flight_msgs=4)
    leader = net.elect(1)
    net.drop(lambda m: isinstance(m, MsgAppResp))
    sent_before = len(net.sent)
    for i in range(6):
        leader.propose(i, 1)
    net.stabilize()
    appends_to_2 = [m for m in net.sent[sent_before:] if isinstance(m, MsgApp) and m.to == 2]
    assert len(appends_to_2) == 4, "flow control caps the appends in flight"
    net.recover()
    net.tick_all(10)
    assert net.log(2) == net.log(1)


def test_appends_carry_at_most_max_bytes_per_msg_and_a_bigger_entry_goes_alone():
    """What a leader queues for a slow follower is bounded in bytes, not only in entries: a
    follower that fell behind is caught up in appends of at most max_bytes_per_msg."""
    net = Network(3, max_bytes_per_msg=250)
    leader = net.elect(1)
    net.drop(lambda m: m.to == 2)
    for data in (b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 1000, b"e" * 100, b"f" * 100):
        leader.propose(data, 1)
    net.stabilize()
    net.recover()
    sent_before = len(net.sent)
    net.tick_all(10)
    assert net.log(2) == net.log(1)
    carried = [[bytes(e.data)[:1] for e in m.entries] for m in net.sent[sent_before:]
               if isinstance(m, MsgApp) and m.to == 2 and m.entries]
    assert [b"a", b"b"] in carried and [b"d"] in carried and [b"e", b"f"] in carried, carried
    assert not any(len(c) > 2 for c in carried), f"an append carried more than 250 bytes: {carried}"


# ---- the Ready protocol --------------------------------------------------------------------

def test_ready_must_be_advanced_before_more_input():
    node = lone_node()
    node.tick()
    node.ready()
    with pytest.raises(RuntimeError, match="advance"):
        node.tick()


def test_follower_refuses_proposals_and_names_the_leader():
    net = Network(3)
    net.elect(1)
    with pytest.raises(NotLeaderError) as err:
        net.nodes[3].propose("x", 1)
    assert err.value.leader_id == 1
    assert "try node 1" in str(err.value)


def test_regression_an_append_from_an_older_term_is_not_answered_as_an_ack():
    """Review of issue #9: a follower answered a late append of an older term with
    MsgAppResp(its term, its last index, ok). When the sender then won exactly that term, it
    counted the reply as a match and committed offsets 1-2, which only it held."""
    a = lone_node(storage_with([(1, 0, 0, "m"), (3, 1, 1, "a")], term=4, commit=0), pre_vote=False)
    b = RaftNode(Config(node_id=2, peers=(1, 2, 3), rng=random.Random(2), pre_vote=False),
                 storage_with([(1, 0, 0, "m"), (2, 1, 1, "b"), (2, 2, 2, "b")], term=4, commit=0))
    a.campaign()
    rd = a.ready()
    a.advance(rd)
    (vote,) = [m for m in responses(rd, MsgVote) if m.to == 2]
    assert vote.term == 5
    b.step(vote)  # A's log (last term 3) is more up to date: B grants, now in term 5
    b.step(MsgApp(frm=1, to=2, term=3, prev_index=0, prev_term=1, entries=(Entry(3, 1, 1, "a"),), commit=0))
    rd = b.ready()
    b.advance(rd)
    (granted,) = responses(rd, MsgVoteResp)
    (late_reply,) = responses(rd, MsgAppResp)
    a.step(granted)
    assert a.role is Role.LEADER and a.term == 5 == late_reply.term
    a.advance(a.ready())  # the term-5 marker at offset 2 is persisted: A counts itself up to 2
    a.step(late_reply)
    assert a.match_index(2) < 1, "B holds none of A's offsets 1-2"
    assert a.high_watermark == 0
