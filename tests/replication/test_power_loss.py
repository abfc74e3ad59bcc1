"""A power cut on every replica at once (chaos/disk_faults.cut_power after a simulated SIGKILL):
with the default, every committed (acks=all) write survives, even under flush.policy=never; with
the explicitly unsafe unsafe.skip.raft.fsync=true, committed writes can be lost. The second half
is the chaos control run in miniature: proof that the power cut takes back what was not fsynced."""

import gc
import os

import pytest

from distlog.chaos.disk_faults import cut_power
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.log.synced import RECORD_SYNCED_ENV
from tests.replication.harness import MemoryCluster
from tests.replication.test_replica_manager import committed_bytes

KEY = ("t", 0)
VOTERS = (1, 2, 3)
SAFE = LogConfig.from_dict({"flush.policy": "never"})  # flush.policy alone does not touch Raft entries
UNSAFE = LogConfig.from_dict({"flush.policy": "never", "unsafe.skip.raft.fsync": "true"})


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.setenv(RECORD_SYNCED_ENV, "1")  # before any segment is opened
    cluster = MemoryCluster(str(tmp_path))
    yield cluster
    cluster.close()


def power_cut_everywhere(cluster) -> dict:
    """SIGKILL every broker (no flush, no close: the groups are dropped as they are), then cut
    each one's power: every file keeps only what its fsyncs made durable."""
    for broker_id, manager in cluster.managers.items():
        cluster.down.add(broker_id)
        for key in list(manager.groups):
            manager.remove(key)
    gc.collect()  # the dropped logs' fds close unwritten, as the kernel closes a killed process's
    return {b: cut_power(os.path.join(cluster.root, f"broker-{b}")) for b in VOTERS}


def commit_values(cluster, config, count):
    """Propose `count` values on the leader and wait until they are committed (acks=all holds);
    returns them."""
    replicas = cluster.create("t", config=config)
    cluster.run_until(lambda: cluster.leader_of(KEY) == 1, what="broker 1 leading")
    manager = cluster.managers[1]
    values = [b"acked-%03d" % i for i in range(count)]
    appended = [manager.propose(manager.groups[KEY], build_batch([v]))[-1] for v in values]
    last = appended[-1].last_offset
    cluster.run_until(lambda: replicas[1].high_watermark > last, what="the writes committed")
    return values


def restart_all(cluster, config):
    replicas = {b: cluster.restart(b, "t", 0, VOTERS, config) for b in VOTERS}
    cluster.run_until(lambda: cluster.leader_of(KEY) is not None, what="a leader after the power cut")
    leader = replicas[cluster.leader_of(KEY)]
    cluster.run_until(lambda: leader.high_watermark >= leader.log.log_end_offset, what="the survivors committed")
    return leader


def test_with_the_default_every_committed_write_survives_a_power_cut_of_every_replica(cluster):
    values = commit_values(cluster, SAFE, 20)
    power_cut_everywhere(cluster)
    leader = restart_all(cluster, SAFE)
    stored = committed_bytes(leader)
    lost = [v for v in values if v not in stored]
    assert not lost, f"{len(lost)} committed writes are gone after the power cut, e.g. {lost[:3]}"


def test_with_unsafe_skip_raft_fsync_a_power_cut_of_every_replica_takes_committed_writes_back(cluster):
    values = commit_values(cluster, UNSAFE, 20)
    cuts = power_cut_everywhere(cluster)
    assert all(cuts[b]["bytes"] > 0 for b in VOTERS), "every replica held committed entries it never fsynced"
    leader = restart_all(cluster, UNSAFE)
    stored = committed_bytes(leader)
    assert [v for v in values if v not in stored], "the unsafe mode acknowledged only what was fsynced"
