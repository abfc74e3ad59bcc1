"""Repair (raft.py, "Repair"; FAST '18): a node that lost entries it may have acknowledged
does not vote until it holds them again, and its leader refetches them to it."""

from distlog.consensus.messages import MsgAppResp, MsgHeartbeat, MsgPreVote, MsgStartOver, MsgVote
from distlog.consensus.raft import Role
from tests.consensus.network import Network


def damage(net, node_id, from_offset):
    """Crash node_id and cut its stored log at from_offset, as recovery quarantining damage
    does: it then knows the last offset it held (repair_until), and restarts repairing."""
    net.crash(node_id)
    storage = net.storage[node_id]
    held = storage.last_index
    kept = [e for e in storage.entries if e.last_offset < from_offset]
    storage._entries, storage._last_offsets = kept, [e.last_offset for e in kept]  # MemoryStorage's own lists
    storage.repair_until = held
    return net.start(node_id)


def test_a_damaged_node_refuses_the_vote_that_would_elect_a_leader_without_a_committed_entry():
    """The FAST '18 scenario: an entry committed on 1 and 2 only (3 was cut off); 2 loses it
    to damage and 1 goes down. 2's vote would elect 3, which lacks it."""
    net = Network(3)
    leader = net.elect(1)
    net.isolate(3)
    entry = leader.propose("committed on 1 and 2", 1)
    net.stabilize()
    assert leader.high_watermark >= entry.last_offset  # committed by 1 and 2
    net.crash(1)
    net.recover()
    repairing = damage(net, 2, entry.base_offset)
    assert repairing.repair_until == entry.last_offset
    net.nodes[3].campaign()
    net.stabilize()
    net.tick_all(30)
    assert net.leader() is None, "a leader was elected without the committed entry"
    refusals = [m for m in net.sent if isinstance(m, (MsgPreVote, MsgVote)) and m.to == 2]
    assert refusals, "node 3 never asked node 2"
    # Node 1 comes back: it holds the entry, wins, and repairs node 2, which then votes again.
    net.start(1)
    net.tick_all(30)
    assert net.leader() is net.nodes[1]
    assert net.log(2) == net.log(1)
    assert net.nodes[2].repair_until is None


def test_a_repairing_node_never_campaigns():
    net = Network(3)
    net.elect(1)
    net.nodes[1].propose("x", 2)
    net.stabilize()
    repairing = damage(net, 2, 0)
    net.crash(1)
    net.crash(3)
    for _ in range(50):
        repairing.tick()
    assert repairing.role is Role.FOLLOWER and not any(
        isinstance(m, (MsgPreVote, MsgVote)) and m.frm == 2 for m in repairing.take_messages())


def test_an_idle_leader_refetches_what_a_follower_lost_from_heartbeats_alone():
    net = Network(3)
    leader = net.elect(1)
    for i in range(5):
        leader.propose(f"r{i}", 2)
    net.stabilize()
    damage(net, 3, 4)  # the leader's match for 3 stays at the old end: it would send nothing
    net.tick_all(6)  # heartbeats only; no proposal
    assert net.log(3) == net.log(1)
    assert net.nodes[3].repair_until is None
    assert any(isinstance(m, MsgHeartbeat) and m.to == 3 for m in net.sent)
    assert any(isinstance(m, MsgAppResp) and m.frm == 3 and m.reject for m in net.sent)


def test_a_stale_rejection_never_raises_a_match_and_below_the_log_start_leads_to_a_start_over():
    """Seed 1607 of the damage-model simulator: a late rejection hinting below the leader's
    log start lowered the match to the log start - 1, above the follower's real match, and
    the leader then probed there forever instead of sending a MsgStartOver."""
    net = Network(3)
    leader = net.elect(1)
    net.crash(3)
    for i in range(10):
        leader.propose(f"r{i}", 2)
    net.stabilize()
    net.storage[1].compact(12)  # the leader's log now starts at 13
    progress = leader.progress[3]
    progress.match, progress.next = 2, 3
    leader.step(MsgAppResp(frm=3, to=1, term=leader.term, index=2, reject=True, hint_index=1,
                           hint_term=leader.term))
    assert leader.progress[3].match == 1  # lowered to the hint below the log start, not raised to 12
    net.start(3)
    net.stabilize()
    net.tick_all(4)
    assert any(isinstance(m, MsgStartOver) and m.to == 3 for m in net.sent)
    assert net.log(3) == net.log(1)
