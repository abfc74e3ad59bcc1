"""`distlog topic verify`: every replica's files scanned read-only, committed ranges compared."""

import json
import os

import pytest
from click.testing import CliRunner

from distlog.cli import main
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.log.verify import verify_topic
from tests.log.helpers import values_batch

SETTINGS = LogConfig(segment_bytes=400, index_interval_bytes=1)


def _replica(data_dir, topic, values, commit):
    directory = os.path.join(data_dir, "topics", f"{topic}-0")
    log = PartitionLog.open(directory, SETTINGS)
    for i, value in enumerate(values):
        log.append(values_batch(value, b"x" * 20), leader_term=1 + i // 10)
    log.close()
    with open(os.path.join(data_dir, "raft-state.json"), "w") as f:
        json.dump({f"{topic}-0": {"term": 2, "vote": 1, "commit": commit}}, f)
    return directory


@pytest.fixture
def cluster(tmp_path):
    """A cluster dir whose cluster.json lists three brokers, each holding a replica of t-0."""
    brokers = []
    for broker_id in (1, 2, 3):
        data_dir = str(tmp_path / f"broker-{broker_id}")
        _replica(data_dir, "t", [b"v%02d" % i for i in range(20)], commit=39)
        brokers.append({"id": broker_id, "address": f"tcp://127.0.0.1:{9000 + broker_id}", "data_dir": data_dir})
    with open(tmp_path / "cluster.json", "w") as f:
        json.dump({"cluster_id": "c", "brokers": brokers, "supervisor": {}}, f)
    return tmp_path, brokers


def _verify_cli(cluster_dir, *args):
    return CliRunner().invoke(main, ["topic", "verify", "t", "--data-dir", str(cluster_dir), *args])


def _segment(data_dir, which):
    directory = os.path.join(data_dir, "topics", "t-0")
    return os.path.join(directory, sorted(n for n in os.listdir(directory) if n.endswith(".log"))[which])


def test_identical_sound_replicas_verify_clean(cluster):
    cluster_dir, _ = cluster
    result = _verify_cli(cluster_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.count(" ok") == 3
    report = json.loads(_verify_cli(cluster_dir, "--json").stdout)
    assert report["ok"] and report["partitions"][0]["replicas"][0]["batches"] == 20


def test_a_flipped_bit_is_reported_with_its_offset_and_exits_1(cluster):
    cluster_dir, brokers = cluster
    path = _segment(brokers[1]["data_dir"], 2)
    data = bytearray(open(path, "rb").read())
    data[100] ^= 0x01
    open(path, "wb").write(bytes(data))
    result = _verify_cli(cluster_dir, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    problems = report["partitions"][0]["replicas"][1]["problems"]
    first_batch = int(os.path.basename(path)[:20])  # byte 100 lies in the segment's first batch
    assert [p["offset"] for p in problems] == [first_batch] and "crc32c mismatch" in problems[0]["problem"]
    assert not report["partitions"][0]["replicas"][0]["problems"]


def test_replicas_that_differ_in_their_committed_range_are_reported(tmp_path):
    dirs = {}
    for broker_id in (1, 2):
        data_dir = str(tmp_path / f"b{broker_id}")
        values = [b"v%02d" % i for i in range(20)]
        if broker_id == 2:
            values[7] = b"other"
        _replica(data_dir, "t", values, commit=13)
        dirs[broker_id] = data_dir
    # Past the commit index the brokers recorded, a difference is an uncommitted tail.
    [report] = verify_topic(dirs, "t")
    assert report["ok"], report
    # A running cluster's high watermark says more is committed (brokers record it lazily).
    [report] = verify_topic(dirs, "t", high_watermarks={0: 39})
    assert not report["ok"]
    assert report["divergence"] and "at offset 14" in report["divergence"][0]


def test_a_missing_topic_is_a_clear_error(cluster):
    cluster_dir, _ = cluster
    result = CliRunner().invoke(main, ["topic", "verify", "nosuch", "--data-dir", str(cluster_dir)])
    assert result.exit_code == 1
    assert "no broker" in result.output and "nosuch" in result.output
