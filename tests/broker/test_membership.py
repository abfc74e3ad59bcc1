"""Cluster membership in the metadata: registration, reassignment targets, decommission, and
what a broker derives from them (membership.py). Pure: no sockets."""

import pytest

from distlog.broker.controller import METADATA_KEY
from distlog.broker.membership import (
    PendingMembershipFacts,
    controller_voters,
    hosted_partitions,
    peer_addresses,
    reassignment_targets,
    retired,
)
from distlog.broker.metadata import ClusterMetadata
from distlog.protocol.errors import DistlogError, ErrorCode


def cluster(brokers=4):
    return ClusterMetadata(0, {i: f"tcp://127.0.0.1:{9000 + i}" for i in range(1, brokers + 1)}, {})


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, event, **fields):
        self.lines.append((event, fields))


def test_a_reassignment_records_a_target_and_every_broker_of_either_list_hosts_the_partition():
    image = cluster().with_topic_created("t", 1, 3, {})
    replicas = image.topics["t"].replicas[0]
    spare = next(b for b in (1, 2, 3, 4) if b not in replicas)
    target = [replicas[1], replicas[2], spare]
    moved = image.with_reassignment("t", 0, target)
    assert moved.version == image.version + 1
    assert moved.topics["t"].replicas[0] == replicas, "replicas change only when the move is done"
    assert moved.topics["t"].targets == {0: target}
    assert all(("t", 0) in hosted_partitions(moved, b) for b in (1, 2, 3, 4))
    assert reassignment_targets(moved) == {("t", 0): target}
    assert image.topics["t"].targets == {}, "the earlier image is never changed"


def test_the_move_completes_only_for_the_target_under_way_and_keeps_its_order():
    image = cluster().with_topic_created("t", 1, 3, {}).with_reassignment("t", 0, [4, 2, 3])
    assert image.with_reassignment_completed("t", 0, [1, 2, 3]) is image, "not the target: nothing changes"
    done = image.with_reassignment_completed("t", 0, [2, 3, 4])  # voters come sorted
    assert done.topics["t"].replicas[0] == [4, 2, 3] and done.topics["t"].targets == {}
    assert done.with_reassignment_completed("t", 0, [2, 3, 4]) is done, "a repeated report changes nothing"
    assert ("t", 0) not in hosted_partitions(done, 1)


def test_one_move_at_a_time_per_partition_and_asking_for_what_it_has_changes_nothing():
    image = cluster().with_topic_created("t", 1, 3, {})
    current = image.topics["t"].replicas[0]
    assert image.with_reassignment("t", 0, current) is image
    spare = next(b for b in (1, 2, 3, 4) if b not in current)
    moving = image.with_reassignment("t", 0, [spare, *current[1:]])
    with pytest.raises(DistlogError) as caught:
        moving.with_reassignment("t", 0, current)
    assert "already moving" in caught.value.message and caught.value.code == ErrorCode.REASSIGNMENT_IN_PROGRESS
    # The same move asked again (a retry after NOT_CONTROLLER) is the move under way: no error.
    assert moving.with_reassignment("t", 0, [spare, *current[1:]]) is moving


@pytest.mark.parametrize("replicas, fragment", [
    ([], "at least one replica"),
    ([1, 1, 2], "twice"),
    ([1, 2, 9], "cannot take replicas"),
])
def test_a_bad_replica_list_is_refused_with_a_reason(replicas, fragment):
    image = cluster().with_topic_created("t", 1, 1, {})
    with pytest.raises(DistlogError) as caught:
        image.with_reassignment("t", 0, replicas)
    assert fragment in caught.value.message


def test_reassigning_a_missing_partition_names_the_range():
    image = cluster().with_topic_created("t", 2, 1, {})
    with pytest.raises(DistlogError) as caught:
        image.with_reassignment("t", 5, [1])
    assert caught.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and "0..1" in caught.value.message


def test_decommission_moves_every_replica_off_the_broker_to_the_least_loaded_and_the_controllers_too():
    image = cluster().with_topic_created("t", 4, 3, {})
    out = image.with_broker_decommissioned(1, [1, 2, 3])
    assert out.decommissioned == [1]
    for p, replicas in enumerate(out.topics["t"].replicas):
        target = out.topics["t"].targets.get(p, replicas)
        assert 1 not in target and len(target) == 3 and len(set(target)) == 3
        if 1 in replicas:  # the replacement takes broker 1's place, so a preferred leader 1 is replaced in place
            assert target == [b if b != 1 else target[replicas.index(1)] for b in replicas]
    assert out.controllers == [1, 2, 3] and out.controller_target == [4, 2, 3]
    assert reassignment_targets(out)[METADATA_KEY] == [4, 2, 3]
    assert 1 not in out.active_brokers
    with pytest.raises(DistlogError) as caught:
        out.with_topic_created("u", 1, 4, {})
    assert caught.value.code == ErrorCode.INVALID_REPLICATION_FACTOR, "a decommissioned broker takes no new replica"


def test_a_decommissioned_broker_is_retired_once_nothing_is_left_on_it():
    image = cluster().with_topic_created("t", 1, 3, {}).with_broker_decommissioned(1, [1, 2, 3])
    assert not retired(image, 1) and 1 in peer_addresses(image, {})
    target = image.topics["t"].targets.get(0)
    if target is not None:
        image = image.with_reassignment_completed("t", 0, target)
    image = image.with_controllers_completed([2, 3, 4])
    assert image.controllers == [4, 2, 3] and controller_voters(image, {}) == (4, 2, 3)
    assert retired(image, 1)
    assert 1 not in peer_addresses(image, {1: "tcp://127.0.0.1:9001"}), "retired: nobody's peer, even if configured"
    # Asked again (an Admin retry after NOT_CONTROLLER, as a chaos run saw): nothing changes, no error.
    assert image.with_broker_decommissioned(1, [1, 2, 3]) is image
    with pytest.raises(DistlogError):
        image.with_broker_decommissioned(9, [1, 2, 3])  # never a broker here


def test_the_only_replica_cannot_be_decommissioned_away_without_another_broker():
    image = cluster(brokers=1).with_topic_created("t", 1, 1, {})
    with pytest.raises(DistlogError) as caught:
        image.with_broker_decommissioned(1, [1])
    assert "add a broker first" in caught.value.message


def test_a_decommissioned_id_never_registers_again_and_registration_is_idempotent():
    image = cluster(brokers=3)
    joined = image.with_broker_registered(4, "tcp://127.0.0.1:9004")
    assert joined.brokers[4] == "tcp://127.0.0.1:9004" and joined.version == 1
    assert joined.with_broker_registered(4, "tcp://127.0.0.1:9004") is joined
    gone = joined.with_topic_created("t", 1, 1, {}).with_broker_decommissioned(4, [1, 2, 3])
    with pytest.raises(DistlogError):
        gone.with_broker_registered(4, "tcp://127.0.0.1:9004")
    facts, log = PendingMembershipFacts(), Log()
    facts.register(4, "tcp://127.0.0.1:9999")
    assert facts.fold(gone, log) is gone and log.lines[0][0] == "registration_refused"


def test_pending_facts_fold_into_one_image_and_are_then_forgotten():
    image = cluster(brokers=3).with_topic_created("t", 1, 3, {})
    image = image.with_broker_registered(4, "tcp://127.0.0.1:9004").with_reassignment("t", 0, [2, 3, 4])
    facts = PendingMembershipFacts()
    facts.register(5, "tcp://127.0.0.1:9005")
    facts.reassignment_completed(("t", 0), [2, 3, 4])
    folded = facts.fold(image, Log())
    assert folded.version == image.version + 2 and 5 in folded.brokers and folded.topics["t"].replicas[0] == [2, 3, 4]
    assert not facts and facts.fold(folded, Log()) is folded


def test_the_new_fields_survive_the_wire_form_and_old_images_still_load():
    image = cluster().with_topic_created("t", 2, 3, {}).with_broker_decommissioned(1, [1, 2, 3])
    assert ClusterMetadata.from_wire(image.to_wire()) == image
    old = image.to_wire()
    for name in ("controllers", "controller_target", "decommissioned"):
        del old[name]
    for topic in old["topics"]:
        for partition in topic["partitions"]:
            del partition["target_replicas"]
    loaded = ClusterMetadata.from_wire(old)
    assert loaded.decommissioned == [] and loaded.topics["t"].targets == {}


def test_moving_the_controller_quorum_starts_from_the_bootstrap_quorum_when_none_is_recorded():
    image = cluster()
    moving = image.with_controllers_reassigned([2, 3, 4], bootstrap_controllers=[1, 2, 3])
    assert moving.controllers == [1, 2, 3] and moving.controller_target == [2, 3, 4]
    assert reassignment_targets(moving)[METADATA_KEY] == [2, 3, 4]
    assert image.with_controllers_reassigned([1, 2, 3], bootstrap_controllers=[1, 2, 3]) is image
    with pytest.raises(DistlogError) as caught:
        moving.with_controllers_reassigned([1, 2, 3], bootstrap_controllers=[1, 2, 3])
    assert "already moving" in caught.value.message
