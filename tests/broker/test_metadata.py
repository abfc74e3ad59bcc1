"""Cluster metadata: topic validation, replica placement, persistence."""

import pytest

from distlog.broker.metadata import ClusterMetadata, place_replicas
from distlog.protocol.errors import DistlogError, ErrorCode


def cluster(brokers=3):
    return ClusterMetadata(0, {i: f"tcp://127.0.0.1:{9000 + i}" for i in range(1, brokers + 1)}, {})


def test_creating_a_topic_bumps_the_version_and_spreads_partitions():
    created = cluster().with_topic_created("orders", 6, 1, {})
    assert created.version == 1
    leaders = [r[0] for r in created.topics["orders"].replicas]
    assert sorted(leaders) == [1, 1, 2, 2, 3, 3]


def test_placement_puts_each_replica_on_a_different_broker():
    for replicas in place_replicas("t", 10, 3, [1, 2, 3]):
        assert sorted(replicas) == [1, 2, 3]


@pytest.mark.parametrize(
    "name, partitions, rf, configs, code",
    [
        ("bad name", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("..", 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("x" * 250, 1, 1, {}, ErrorCode.INVALID_TOPIC),
        ("t", 0, 1, {}, ErrorCode.INVALID_PARTITIONS),
        ("t", 1, 0, {}, ErrorCode.INVALID_REPLICATION_FACTOR),
        ("t", 1, 4, {}, ErrorCode.INVALID_REPLICATION_FACTOR),  # more replicas than brokers
        ("t", 1, 1, {"retention.ms": "soon"}, ErrorCode.INVALID_CONFIG),
        ("t", 1, 1, {"no.such.key": "1"}, ErrorCode.INVALID_CONFIG),
    ],
)
def test_invalid_topic_requests_get_the_right_code(name, partitions, rf, configs, code):
    with pytest.raises(DistlogError) as info:
        cluster().with_topic_created(name, partitions, rf, configs)
    assert info.value.code == code


def test_duplicate_and_missing_topics():
    metadata = cluster().with_topic_created("t", 1, 1, {})
    with pytest.raises(DistlogError) as info:
        metadata.with_topic_created("t", 1, 1, {})
    assert info.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
    deleted = metadata.with_topic_deleted("t")
    assert "t" not in deleted.topics and deleted.version == 2
    with pytest.raises(DistlogError) as info:
        deleted.with_topic_deleted("t")
    assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_metadata_survives_save_and_load(tmp_path):
    metadata = cluster().with_topic_created("t", 4, 1, {"retention.ms": "1000"})
    path = str(tmp_path / "metadata.json")
    metadata.save(path)
    loaded = ClusterMetadata.load(path)
    assert loaded.to_wire() == metadata.to_wire()
    assert ClusterMetadata.load(str(tmp_path / "missing.json")) is None


def test_altering_configs_sets_some_keys_returns_others_to_defaults_and_validates_the_result():
    base = cluster().with_topic_created("t", 2, 1, {"retention.ms": "1000", "segment.bytes": "4096"})
    altered = base.with_configs_altered("t", {"retention.ms": "5000", "cleanup.policy": "compact"}, ["segment.bytes"])
    assert altered.version == base.version + 1
    assert altered.topics["t"].configs == {"retention.ms": "5000", "cleanup.policy": "compact"}
    assert altered.topics["t"].replicas == base.topics["t"].replicas
    assert base.topics["t"].configs == {"retention.ms": "1000", "segment.bytes": "4096"}  # a new version, not an edit
    with pytest.raises(DistlogError) as bad:
        base.with_configs_altered("t", {"segment.bytes": "-1"}, [])
    assert bad.value.code == ErrorCode.INVALID_CONFIG
    with pytest.raises(DistlogError) as missing:
        base.with_configs_altered("nope", {}, [])
    assert missing.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_adding_partitions_keeps_the_old_ones_and_places_the_new_as_creation_would():
    base = cluster().with_topic_created("t", 2, 3, {})
    grown = base.with_partitions_added("t", 5)
    assert grown.topics["t"].replicas[:2] == base.topics["t"].replicas
    assert grown.topics["t"].replicas == cluster().with_topic_created("t", 5, 3, {}).topics["t"].replicas
    assert all(len(set(r)) == 3 for r in grown.topics["t"].replicas)
    for count in (2, 1):
        with pytest.raises(DistlogError) as refused:
            base.with_partitions_added("t", count)
        assert refused.value.code == ErrorCode.INVALID_PARTITIONS and "only grows" in refused.value.message
