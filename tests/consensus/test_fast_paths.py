"""The driver's fast paths into the Raft core do exactly what step() would, or refuse.

heartbeat_from_leader and heartbeat_response_from handle a coalesced "nothing new" heartbeat
(and its answer) without a Ready; take_messages hands out the sends a Ready would carry before
persisting. Each is compared with the slow path on a copy of the same node.
"""

import copy

from distlog.consensus.messages import MsgHeartbeat, MsgHeartbeatResp
from tests.consensus.network import Network


def settled(size=3):
    net = Network(size)
    net.elect(1)
    net.nodes[1].propose(b"x", 1)
    net.stabilize()
    return net


def observable(node):
    return (node.role, node.term, node.vote, node.commit, node.leader_id, node._election_elapsed,
            {p: (pr.match, pr.next, pr.state, pr.paused, pr.recent_active) for p, pr in node.progress.items()})


def test_a_nothing_new_heartbeat_does_what_step_does():
    net = settled()
    follower = net.nodes[2]
    net.tick(2, 3)
    slow = copy.deepcopy(follower)
    assert follower.heartbeat_from_leader(1, follower.term, follower.commit)
    slow.step(MsgHeartbeat(1, 2, slow.term, slow.commit))
    ready = slow.ready()
    assert [type(m) for m in ready.messages_after_persist] == [MsgHeartbeatResp]
    assert ready.messages_after_persist[0].term == follower.term
    slow.advance(ready)
    assert observable(follower) == observable(slow)
    assert not follower.has_ready(), "the fast path left something for a Ready"


def test_the_heartbeat_fast_path_refuses_what_it_cannot_do_alone():
    net = settled()
    follower = net.nodes[2]
    before = observable(follower)
    assert not follower.heartbeat_from_leader(3, follower.term, follower.commit), "not its leader"
    assert not follower.heartbeat_from_leader(1, follower.term + 1, follower.commit), "a newer term"
    assert observable(follower) == before, "a refusal changed the node"
    net.drop(lambda m: m.frm == 2 or m.to == 3)  # follower 2 takes the entry; nobody commits it
    net.nodes[1].propose(b"y", 1)
    net.stabilize()
    assert follower.last_index > follower.commit
    assert not follower.heartbeat_from_leader(1, follower.term, follower.last_index), "a commit to advance"
    assert not net.nodes[1].heartbeat_from_leader(2, net.nodes[1].term, 0), "a leader is no follower"


def test_a_nothing_new_heartbeat_response_does_what_step_does():
    net = settled()
    leader = net.nodes[1]
    for pr in leader.progress.values():
        pr.recent_active = False
    slow = copy.deepcopy(leader)
    assert leader.heartbeat_response_from(2, leader.term)
    slow.step(MsgHeartbeatResp(2, 1, slow.term))
    assert not slow.has_ready(), "an idle follower's answer needs no sending"
    assert observable(leader) == observable(slow)


def test_the_response_fast_path_refuses_a_follower_that_needs_entries():
    net = settled()
    leader = net.nodes[1]
    net.isolate(3)
    leader.propose(b"more", 1)
    net.stabilize()
    assert leader.match_index(3) < leader.last_index
    assert not leader.heartbeat_response_from(3, leader.term), "follower 3 needs an append"
    assert not leader.heartbeat_response_from(2, leader.term + 1), "a newer term"


def test_take_messages_hands_out_what_ready_would_send_first():
    net = settled()
    leader = net.nodes[1]
    leader.tick()
    leader.tick()  # a heartbeat round
    slow = copy.deepcopy(leader)
    taken = leader.take_messages()
    assert taken and all(isinstance(m, MsgHeartbeat) for m in taken)
    assert list(slow.ready().messages) == taken
    assert not leader.has_ready()
