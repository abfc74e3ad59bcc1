"""The controller's pure core (distlog/broker/controller.py) over an in-memory cluster of
ReplicaManagers: images committed and applied on every controller, changes answered only once
committed, a lost controller's pending change failed retriably, a new controller building only
on what is committed, forwarded requests given up on when their controller goes."""

import pytest

from distlog.broker.controller import (
    METADATA_KEY,
    METADATA_TOPIC,
    Forwarded,
    ForwardedRequests,
    MetadataQuorum,
    PendingChange,
    metadata_log_config,
)
from distlog.broker.metadata import ClusterMetadata
from distlog.consensus.raft import Role
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import CreateTopicsRequest, CreateTopicsResponse
from tests.replication.harness import MemoryCluster

VOTERS = (1, 2, 3)
EVERYONE_HAS_IT = staticmethod(lambda version, now_s: True)


@pytest.fixture
def cluster(tmp_path):
    cluster = MemoryCluster(str(tmp_path))
    yield cluster
    cluster.close()


def quorums(cluster) -> dict:
    config = metadata_log_config({})
    replicas = {b: cluster.open_partition(b, METADATA_TOPIC, 0, VOTERS, config, campaign=b == 1) for b in VOTERS}
    return {b: MetadataQuorum(r, cluster.managers[b].propose) for b, r in replicas.items()}


def empty_image() -> ClusterMetadata:
    return ClusterMetadata(0, {b: f"tcp://127.0.0.1:{9091 + b}" for b in VOTERS}, {})


def pending(image, term, last_offset, deadline_s=1e9) -> PendingChange:
    response = CreateTopicsResponse([{"name": "t", "error_code": 0, "error_message": ""}])
    return PendingChange(b"client", 7, response, image.version, term, last_offset, deadline_s)


def test_a_change_is_answered_once_committed_and_every_controller_applies_it(cluster):
    quorum = quorums(cluster)
    cluster.run_until(lambda: cluster.leader_of(METADATA_KEY) == 1, what="broker 1 leading the metadata log")
    applied = empty_image()
    head = quorum[1].head(applied)
    assert head is applied, "a leader of a fully committed log builds on what it applied"
    image = head.with_topic_created("orders", 3, 3, {})
    term, last_offset = quorum[1].propose(image)
    quorum[1].wait(pending(image, term, last_offset))
    assert quorum[1].settle(0, EVERYONE_HAS_IT, cluster.clock.now_s) == [], "answered before it was committed"
    assert quorum[1].head(applied) is image, "the next change must build on the one in flight"
    cluster.run_until(lambda: all(q.replica.high_watermark > last_offset for q in quorum.values()), what="commit")
    for q in quorum.values():
        got = q.committed_image()
        assert got is not None and got.version == 1 and "orders" in got.topics
        assert q.committed_image() is None, "an image is handed over once"
    assert quorum[1].settle(0, EVERYONE_HAS_IT, cluster.clock.now_s) == [], "answered before the controller applied it"
    [(peer, cid, response)] = quorum[1].settle(1, EVERYONE_HAS_IT, cluster.clock.now_s)
    assert (peer, cid, response.topics[0]["error_code"]) == (b"client", 7, 0)


def test_a_lost_controllers_change_fails_retriably_and_the_new_one_builds_on_what_is_committed(cluster):
    quorum = quorums(cluster)
    cluster.run_until(lambda: cluster.leader_of(METADATA_KEY) == 1, what="broker 1 leading")
    committed = empty_image().with_topic_created("kept", 1, 3, {})
    quorum[1].propose(committed)
    cluster.run_until(lambda: all(q.replica.high_watermark >= 1 for q in quorum.values()), what="commit")
    applied = {b: q.committed_image() for b, q in quorum.items()}
    for other in (2, 3):  # broker 1 alone: what it proposes now can never be committed
        cluster.cut |= {(1, other), (other, 1)}
    doomed = committed.with_topic_created("doomed", 1, 3, {})
    term, last_offset = quorum[1].propose(doomed)
    quorum[1].wait(pending(doomed, term, last_offset))
    cluster.run_until(lambda: cluster.managers[1].groups[METADATA_KEY].node.role is not Role.LEADER,
                      what="the cut-off controller stepping down")
    [(_, _, response)] = quorum[1].settle(applied[1].version, EVERYONE_HAS_IT, cluster.clock.now_s)
    assert response.topics[0]["error_code"] == ErrorCode.NOT_CONTROLLER
    cluster.run_until(lambda: cluster.leader_of(METADATA_KEY) in (2, 3), what="a new controller")
    new = cluster.leader_of(METADATA_KEY)

    def ready():  # as the broker does every turn: apply what committed (only a leader marker), then look
        assert quorum[new].committed_image() is None
        return quorum[new].head(applied[new])

    cluster.run_until(lambda: ready() is not None, what="the new controller ready")
    head = ready()
    assert set(head.topics) == {"kept"} and head.version == doomed.version - 1
    replacement = head.with_topic_created("other", 1, 3, {})
    quorum[new].propose(replacement)
    cluster.cut.clear()
    cluster.run_until(lambda: all(q.replica.high_watermark == quorum[new].replica.high_watermark for q in quorum.values()),
                      what="broker 1 catching up")
    images = [q.committed_image() for q in quorum.values()]
    assert {frozenset(i.topics) for i in images if i is not None} == {frozenset({"kept", "other"})}


def test_a_change_not_committed_in_time_fails_with_a_timeout(cluster):
    quorum = quorums(cluster)
    cluster.run_until(lambda: cluster.leader_of(METADATA_KEY) == 1, what="broker 1 leading")
    cluster.down |= {2, 3}  # no majority, but broker 1 still leads until check-quorum says otherwise
    image = empty_image().with_topic_created("late", 1, 1, {})
    term, last_offset = quorum[1].propose(image)
    quorum[1].wait(pending(image, term, last_offset, deadline_s=cluster.clock.now_s + 0.1))
    cluster.clock.now_s += 0.2
    [(_, _, response)] = quorum[1].settle(0, EVERYONE_HAS_IT, cluster.clock.now_s)
    assert response.topics[0]["error_code"] == ErrorCode.REQUEST_TIMED_OUT


def test_a_forwarded_request_is_given_up_when_its_controller_is_no_longer_the_controller():
    forwarded = ForwardedRequests()
    request = CreateTopicsRequest(topics=[{"name": "t", "partitions": 1, "replication_factor": 1, "configs": {}}])
    forwarded.add(2, 41, Forwarded(b"a", 1, request, 2, deadline_s=100.0))
    forwarded.add(2, 42, Forwarded(b"b", 2, request, 2, deadline_s=10.0))
    assert forwarded.abandon(2, now_s=5.0) == []
    [(peer, cid, response)] = forwarded.abandon(2, now_s=11.0)
    assert (peer, cid, response.topics[0]["error_code"]) == (b"b", 2, ErrorCode.NOT_CONTROLLER)
    [(peer, _, response)] = forwarded.abandon(3, now_s=11.0)
    assert peer == b"a" and "stopped being the controller" in response.topics[0]["error_message"]
    assert forwarded.take(2, 41) is None and len(forwarded) == 0
