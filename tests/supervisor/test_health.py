"""health.cluster_health: from the brokers' Metadata answers to the report `distlog cluster health` prints."""

from distlog.supervisor.health import cluster_health, controller_of, unhealthy_summary


def entry(partition, leader, in_sync, replicas=(1, 2, 3), epoch=1):
    return {"partition": partition, "leader": leader, "leader_epoch": epoch, "replicas": list(replicas),
            "in_sync": list(in_sync), "high_watermark": 0, "log_end_offset": 0}


def answer(*partitions, controller_id=1, topic="orders", error_code=0):
    return {"brokers": [{"broker_id": i, "address": f"tcp://127.0.0.1:{9091 + i}"} for i in (1, 2, 3)],
            "controller_id": controller_id,
            "topics": [{"name": topic, "error_code": error_code, "error_message": "", "configs": {},
                        "partitions": list(partitions)}]}


def no_topics(controller_id=1):
    return {"brokers": [], "controller_id": controller_id, "topics": []}


def test_a_fresh_cluster_with_no_topics_is_healthy_once_every_broker_answers():
    health = cluster_health([1, 2, 3], {1: no_topics(), 2: no_topics(), 3: no_topics()})
    assert health == {
        "healthy": True, "unhealthy_reasons": [], "controller_id": 1, "all_brokers": [1, 2, 3],
        "brokers_down": [], "partitions_total": 0,
        "leaderless_count": 0, "leaderless_partitions": [],
        "under_replicated_count": 0, "under_replicated_partitions": [],
    }
    assert unhealthy_summary(health) == "healthy"


def test_a_broker_that_did_not_answer_is_down():
    health = cluster_health([1, 2, 3], {1: no_topics(), 2: None})
    assert health["brokers_down"] == [2, 3]
    assert health["unhealthy_reasons"] == ["brokers_down"] and not health["healthy"]
    assert unhealthy_summary(health) == "brokers 2, 3 down"


def test_each_partition_is_judged_by_its_leaders_own_answer():
    # Broker 1 leads partition 0 and counts a follower out; broker 2's stale copy of the report
    # still says in sync. Broker 2 leads partition 1 with everyone in sync.
    answers = {1: answer(entry(0, 1, [1, 2]), entry(1, 2, [2])),
               2: answer(entry(0, 1, [1, 2, 3]), entry(1, 2, [1, 2, 3])),
               3: answer(entry(0, 1, [1, 2, 3]), entry(1, 2, [1, 2, 3]))}
    health = cluster_health([1, 2, 3], answers)
    assert health["under_replicated_partitions"] == [{"topic": "orders", "partition": 0}]
    assert health["under_replicated_count"] == 1 and health["leaderless_count"] == 0
    assert health["partitions_total"] == 2
    assert health["unhealthy_reasons"] == ["under_replicated_partitions"]
    assert unhealthy_summary(health) == "1 partition under-replicated (orders/0)"


def test_a_partition_no_answering_broker_leads_is_leaderless():
    # Partition 0's leader 3 is down (the others still name it); nobody leads partition 1 yet.
    answers = {1: answer(entry(0, 3, [1, 2, 3]), entry(1, None, [])),
               2: answer(entry(0, 3, [1, 2, 3]), entry(1, None, [])),
               3: None}
    health = cluster_health([1, 2, 3], answers)
    assert health["leaderless_partitions"] == [{"topic": "orders", "partition": 0},
                                               {"topic": "orders", "partition": 1}]
    assert health["under_replicated_count"] == 0, "a leaderless partition has no leader to count"
    assert health["unhealthy_reasons"] == ["brokers_down", "leaderless_partitions"]


def test_a_deposed_leader_that_has_not_noticed_loses_to_the_higher_epoch():
    answers = {1: answer(entry(0, 1, [1], epoch=4)),
               2: answer(entry(0, 2, [1, 2, 3], epoch=5)),
               3: answer(entry(0, 2, [1, 2, 3], epoch=5))}
    assert cluster_health([1, 2, 3], answers)["healthy"]
    answers[1] = answer(entry(0, 1, [1], epoch=6))  # now broker 1 is the newer leader
    assert cluster_health([1, 2, 3], answers)["under_replicated_count"] == 1


def test_topics_a_broker_reports_an_error_for_are_left_out():
    answers = {1: answer(entry(0, 1, [1, 2, 3])),
               2: answer(topic="gone", error_code=3),
               3: answer(entry(0, 1, [1, 2, 3]))}
    health = cluster_health([1, 2, 3], answers)
    assert health["healthy"] and health["partitions_total"] == 1


def test_the_controller_is_the_majoritys_else_the_first_answers():
    assert controller_of({1: no_topics(2), 2: no_topics(3), 3: no_topics(3)}) == 3
    assert controller_of({1: no_topics(2), 2: no_topics(3)}) == 2
    assert controller_of({1: no_topics(-1), 2: no_topics(None), 3: no_topics(2)}) is None
    assert controller_of({}) is None


def test_no_known_controller_is_unhealthy():
    health = cluster_health([1, 2], {1: no_topics(None), 2: no_topics(-1)})
    assert health["controller_id"] is None
    assert health["unhealthy_reasons"] == ["no_controller"]
    assert unhealthy_summary(health) == "no controller is known"


def test_no_answer_at_all_is_unhealthy_even_with_no_broker_known():
    health = cluster_health([], {})
    assert health["unhealthy_reasons"] == ["no_broker_answered"] and not health["healthy"]
    assert unhealthy_summary(health) == "no broker answered"


def test_the_summary_names_a_few_partitions_and_counts_the_rest():
    answers = {1: answer(*(entry(p, 1, [1]) for p in range(8)))}
    health = cluster_health([1], answers)
    assert unhealthy_summary(health) == ("8 partitions under-replicated "
                                         "(orders/0, orders/1, orders/2, orders/3, orders/4 and 3 more)")
