"""Cluster membership on real processes under the supervisor: add a 4th broker, move every
replica (the controller quorum's included) off broker 1 under a steady acks=all producer,
decommission broker 1; nothing acknowledged is lost or duplicated, no partition stays without
a leader for longer than an election timeout, and the next `cluster up` leaves broker 1 out."""

import json
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from distlog.broker.launcher import restart_broker, start_brokers, stop_brokers
from distlog.client import Admin
from distlog.client.probe import set_fault_rules
from distlog.supervisor import cluster_file
from tests.integration.replication_helpers import (
    SteadyProducer,
    assert_every_ack_exactly_once,
    assert_replicas_identical,
    describe,
    leader_of,
    read_everything,
    sigkill,
)
from tests.supervisor.helpers import REPO_ROOT, processes_using, run_cli, wait_for

pytestmark = pytest.mark.integration

TOPIC = "moving"
PARTITIONS = 3
# An election takes 0.5-0.9 s of silence (replica.RaftSettings); the watcher sees leaders
# through Metadata answers, which trail a change by up to one leader report.
LEADERLESS_MAX_S = 1.0


def distlog(*args, timeout_s=120):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO_ROOT)


class LeaderWatch:
    """A thread asking one broker for the topic's leaders every 50 ms; the longest stretch
    each partition had none."""

    def __init__(self, address: str):
        self.address = address
        self.longest = [0.0] * PARTITIONS
        self._since = [None] * PARTITIONS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                partitions = describe(self.address, TOPIC)["partitions"]
            except Exception:
                partitions = None
            now = time.monotonic()
            for p in range(PARTITIONS):
                leader = partitions[p]["leader"] if partitions else None
                if leader is None:
                    self._since[p] = self._since[p] or now
                    self.longest[p] = max(self.longest[p], now - self._since[p])
                else:
                    self._since[p] = None
            self._stop.wait(0.05)  # the watcher's sampling interval

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def test_add_a_broker_move_everything_off_broker_1_and_decommission_it_under_load(cluster_dir):
    result = run_cli("up", "--detach", "-n", "3", "--data-dir", cluster_dir, timeout_s=90)
    assert result.returncode == 0, result.stderr
    addresses = lambda: ",".join(b["address"] for b in cluster_file.load(cluster_dir)["brokers"])  # noqa: E731
    with Admin(addresses()) as admin:
        admin.create_topic(TOPIC, partitions=PARTITIONS, replication_factor=3)

    result = run_cli("add-broker", "--data-dir", cluster_dir)
    assert result.returncode == 0, result.stderr
    assert "broker 4 joined" in result.stderr
    record = cluster_file.load(cluster_dir)
    assert [b["id"] for b in record["brokers"]] == [1, 2, 3, 4]
    assert len({b["metrics_port"] for b in record["brokers"]}) == 4, "the new broker serves metrics on its own port"
    watched = next(b["address"] for b in record["brokers"] if b["id"] == 2)
    unknown = run_cli("decommission", "9", "--data-dir", cluster_dir)
    assert unknown.returncode == 1 and "no broker 9 in this cluster" in unknown.stderr

    with SteadyProducer(addresses(), TOPIC, rate_per_s=150, max_records=6000) as producer, \
            LeaderWatch(watched) as watch:
        wait_for(lambda: len(producer.acked) >= 100, 20, "writes flowing before the move")
        result = run_cli("decommission", "1", "--data-dir", cluster_dir, timeout_s=180)
        assert result.returncode == 0, result.stderr
        moved_at = time.monotonic()
        wait_for(lambda: producer.acked_after(moved_at) >= 100, 20, "writes flowing after the move")
    print(f"longest leaderless stretch per partition: {watch.longest} s")
    assert max(watch.longest) <= LEADERLESS_MAX_S, f"leaderless for {watch.longest} s"
    assert "will not be started again" in result.stderr

    record = cluster_file.load(cluster_dir)
    assert [b["id"] for b in record["brokers"]] == [2, 3, 4] and record["decommissioned"] == [1]
    description = json.loads(distlog("topic", "describe", TOPIC, "--json", "--bootstrap", addresses()).stdout)
    for partition in description["partitions"]:
        assert 1 not in partition["replicas"] and partition["target_replicas"] is None, partition
        assert sorted(partition["replicas"]) == [2, 3, 4]
    with Admin(addresses()) as admin:
        cluster = admin.describe_cluster()
        assert sorted(cluster["brokers"]) == [2, 3, 4] and cluster["controller"] in (2, 3, 4)

    records = read_everything(addresses(), TOPIC, PARTITIONS, expected=len(producer.acked))
    assert len(producer.acked) >= 300
    assert_every_ack_exactly_once(producer.acked, records)

    # Down and up again: broker 1 stays out, and the three that are left serve the data.
    assert run_cli("down", "--data-dir", cluster_dir).returncode == 0
    brokers = [SimpleNamespace(data_dir=b["data_dir"]) for b in record["brokers"]]
    assert_replicas_identical(brokers, TOPIC, PARTITIONS)
    result = run_cli("up", "--detach", "--data-dir", cluster_dir, timeout_s=90)
    assert result.returncode == 0, result.stderr
    assert [b["id"] for b in cluster_file.load(cluster_dir)["brokers"]] == [2, 3, 4]
    again = read_everything(addresses(), TOPIC, PARTITIONS, expected=len(producer.acked))
    assert_every_ack_exactly_once(producer.acked, again)
    assert not processes_using(os.path.join(str(cluster_dir), "broker-1") + " "), "broker 1 was started again"


def cut(a, b) -> None:
    """Drop every frame between brokers a and b, both ways, on the real transport."""
    set_fault_rules(a.address, {"drop_to": [f"broker-{b.broker_id}"], "drop_from": [f"broker-{b.broker_id}"]}, timeout_s=5)
    set_fault_rules(b.address, {"drop_to": [f"broker-{a.broker_id}"], "drop_from": [f"broker-{a.broker_id}"]}, timeout_s=5)


def moved(address, topic, target) -> bool:
    """Whether the broker at `address` reports partition 0 as living on `target`, no move pending."""
    try:
        partition = describe(address, topic)["partitions"][0]
    except Exception:  # the broker is busy electing or restarting: ask again
        return False
    return partition["target_replicas"] is None and partition["replicas"] == target


@pytest.fixture
def four_brokers(tmp_path):
    brokers = start_brokers(4, str(tmp_path))
    try:
        yield brokers
    finally:
        stop_brokers(brokers)


def test_a_move_survives_sigkill_of_a_follower_and_of_the_leader_mid_move_and_replicas_end_identical(four_brokers):
    brokers = four_brokers
    topic = "killed-mid-move"
    with Admin(brokers[0].address) as admin:
        admin.create_topic(topic, partitions=1, replication_factor=3)
    replicas = wait_for(lambda: describe(brokers[0].address, topic)["partitions"][0]["replicas"], 10, "the topic")
    leader = wait_for(lambda: leader_of(brokers, topic, 0), 15, "a leader")
    by_id = {b.broker_id: b for b in brokers}
    follower = next(b for b in replicas if b != leader)
    spare = next(b for b in by_id if b not in replicas)
    target = [b for b in replicas if b != leader] + [spare]  # the leader leaves
    with SteadyProducer(brokers[0].address, topic, partition=0, rate_per_s=200) as producer:
        wait_for(lambda: len(producer.acked) >= 100, 20, "writes before the faults")
        sigkill(by_id[follower])
        # Cut the spare off from the leader: the move gets as far as a learner that cannot
        # catch up, so the leader dies in the middle of it.
        cut(by_id[leader], by_id[spare])
        with Admin(",".join(b.address for b in brokers if b.broker_id != follower)) as admin:
            admin.reassign_partition(topic, 0, target)
        wait_for(lambda: "add_learner" in open(by_id[leader].log_path).read(), 20, "the spare added as a learner")
        sigkill(by_id[leader])
        killed_at = time.monotonic()
        set_fault_rules(by_id[spare].address, {}, timeout_s=5)
        restart_broker(by_id[follower])
        restart_broker(by_id[leader])
        wait_for(lambda: moved(by_id[spare].address, topic, target), 60, "the move finished")
        wait_for(lambda: producer.acked_after(killed_at) >= 200, 30, "writes acknowledged after the kills")
    live = by_id[spare].address
    records = read_everything(live, topic, 1, expected=len(producer.acked))
    assert_every_ack_exactly_once(producer.acked, records)
    stop_brokers(brokers)
    holders = [b for b in brokers if b.broker_id in target]
    assert_replicas_identical(holders, topic, 1)
    assert not os.path.exists(os.path.join(by_id[leader].data_dir, "topics", f"{topic}-0")), \
        "the broker that left still holds its replica"
