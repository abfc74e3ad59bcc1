"""The broker's metrics without a broker: the state the loop takes, rendered as a scrape shows it."""

from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from distlog.broker.metrics import BrokerMetrics, take_state
from distlog.log.batch import count_records
from distlog.log.batch_builder import build_batch
from distlog.broker.groups.records import CommittedOffset


def samples(metrics: BrokerMetrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def replica(hw: int, leader: bool, voters=(1, 2, 3)):
    return SimpleNamespace(high_watermark=hw, is_leader=leader, voters=list(voters))


def test_gauges_lag_and_raft_counters_come_from_the_state_the_loop_took():
    replicas = {("orders", 0): replica(100, True), ("orders", 1): replica(40, False), ("logs", 0): replica(7, True)}
    in_sync = {("orders", 0): [1, 2, 3], ("logs", 0): [1]}
    offsets = [{"billing": {("orders", 0): CommittedOffset(90, "", 0), ("orders", 1): CommittedOffset(40, "", 0),
                            ("elsewhere", 0): CommittedOffset(5, "", 0)}}]
    metrics = BrokerMetrics()
    metrics.set_state(take_state(replicas, in_sync.__getitem__, {("bad", 0): "disk"},
                                 {"leader_elections": 3, "term_changes": 5}, offsets))
    got = samples(metrics)
    assert got[("distlog_partitions", ())] == 3
    assert got[("distlog_partition_leaders", ())] == 2
    assert got[("distlog_under_replicated_partitions", ())] == 1  # logs-0: one of three in sync
    assert got[("distlog_offline_partitions", ())] == 1
    assert got[("distlog_raft_leader_elections_total", ())] == 3
    assert got[("distlog_raft_term_changes_total", ())] == 5
    assert got[("distlog_partition_high_watermark", (("partition", "0"), ("topic", "orders")))] == 100
    assert ("distlog_partition_high_watermark", (("partition", "1"), ("topic", "orders"))) not in got  # a follower
    billing = lambda topic, p: (("group", "billing"), ("partition", str(p)), ("topic", topic))  # noqa: E731
    assert got[("distlog_consumer_group_committed_offset", billing("elsewhere", 0))] == 5
    assert got[("distlog_consumer_group_lag", billing("orders", 0))] == 10
    assert got[("distlog_consumer_group_lag", billing("orders", 1))] == 0  # from a follower's high watermark
    assert ("distlog_consumer_group_lag", billing("elsewhere", 0)) not in got  # no replica here to know it


def test_a_deleted_group_and_a_moved_partition_vanish_from_the_next_scrape():
    metrics = BrokerMetrics()
    metrics.set_state(take_state({("t", 0): replica(5, True, voters=[1])}, lambda key: [1], {},
                                 {"leader_elections": 1, "term_changes": 1}, [{"g": {("t", 0): CommittedOffset(2, "", 0)}}]))
    assert ("distlog_consumer_group_lag", (("group", "g"), ("partition", "0"), ("topic", "t"))) in samples(metrics)
    metrics.set_state(take_state({}, lambda key: [], {}, {"leader_elections": 1, "term_changes": 1}, []))
    got = samples(metrics)
    labelled = ("distlog_consumer_group_committed_offset", "distlog_consumer_group_lag", "distlog_partition_high_watermark")
    assert not [key for key in got if key[0] in labelled]
    assert got[("distlog_partitions", ())] == 0


def test_fetched_counts_bytes_and_the_records_of_whole_batches():
    batches = build_batch([b"a", b"b", b"c"]) + build_batch([b"d"])
    assert count_records(batches) == 4
    assert count_records(batches + build_batch([b"e", b"f"])[:30]) == 4, "a batch a fetch cut off is not counted"
    metrics = BrokerMetrics()
    metrics.fetched("t", batches)
    got = samples(metrics)
    assert got[("distlog_fetched_records_total", (("topic", "t"),))] == 4
    assert got[("distlog_fetched_bytes_total", (("topic", "t"),))] == len(batches)
