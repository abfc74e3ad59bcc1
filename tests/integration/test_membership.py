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

from distlog.client import Admin
from distlog.supervisor import cluster_file
from tests.integration.replication_helpers import (
    SteadyProducer,
    assert_every_ack_exactly_once,
    assert_replicas_identical,
    describe,
    read_everything,
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
