"""The topic / produce / consume commands, driven as a user would, against real brokers."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def cli(bootstrap, *args, input_text=None):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args, "--bootstrap", bootstrap],
                          input=input_text, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bootstrap(three_brokers):
    return ",".join(b.address for b in three_brokers)


def test_create_produce_consume_describe_delete(bootstrap):
    created = cli(bootstrap, "topic", "create", "clicks", "--partitions", "3", "--config", "retention.ms=3600000")
    assert created.returncode == 0, created.stderr
    assert "created topic 'clicks'" in created.stderr

    lines = "".join(f"user-{i % 3}:click {i}\n" for i in range(30))
    produced = cli(bootstrap, "produce", "clicks", "--key-separator", ":", input_text=lines)
    assert produced.returncode == 0, produced.stderr
    assert "produced 30 record(s)" in produced.stderr

    consumed = cli(bootstrap, "consume", "clicks", "--from-beginning", "--max-records", "30", "--timeout", "10", "--format", "json")
    assert consumed.returncode == 0, consumed.stderr
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(r["value"] for r in records) == sorted(f"click {i}" for i in range(30))
    assert set(records[0]) == {"topic", "partition", "offset", "key", "value", "headers", "timestamp"}
    partitions_by_key = {}
    for r in records:
        partitions_by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(p) == 1 for p in partitions_by_key.values()), "one key, one partition"

    described = cli(bootstrap, "topic", "describe", "clicks", "--json")
    assert described.returncode == 0, described.stderr
    description = json.loads(described.stdout)
    assert description["name"] == "clicks"
    assert [p["partition"] for p in description["partitions"]] == [0, 1, 2]
    for p in description["partitions"]:
        assert set(p) >= {"partition", "leader", "replicas", "in_sync", "log_start_offset", "high_watermark"}
    assert sum(p["high_watermark"] for p in description["partitions"]) == 30
    table = cli(bootstrap, "topic", "describe", "clicks")
    assert "HIGH-WATERMARK" in table.stdout and "retention.ms=3600000" in table.stdout

    assert "clicks" in cli(bootstrap, "topic", "list").stdout.split()
    assert cli(bootstrap, "topic", "delete", "clicks").returncode == 0
    assert "clicks" not in cli(bootstrap, "topic", "list").stdout.split()


def test_one_partition_from_an_offset_in_plain_format(bootstrap):
    assert cli(bootstrap, "topic", "create", "plain").returncode == 0
    assert cli(bootstrap, "produce", "plain", "--acks", "1", input_text="zero\none\ntwo\nthree\n").returncode == 0
    consumed = cli(bootstrap, "consume", "plain", "--partition", "0", "--offset", "2", "--timeout", "2")
    assert consumed.stdout.splitlines() == ["two", "three"]


def test_failures_exit_1_with_a_message_and_usage_errors_exit_2(bootstrap):
    missing = cli(bootstrap, "produce", "no-such-topic", input_text="x\n")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr and "distlog topic create" in missing.stderr
    assert cli(bootstrap, "topic", "describe", "no-such-topic").returncode == 1
    duplicate = cli(bootstrap, "topic", "create", "dup")
    assert duplicate.returncode == 0
    again = cli(bootstrap, "topic", "create", "dup")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert cli(bootstrap, "consume", "dup", "--offset", "3").returncode == 2
    assert cli(bootstrap, "topic", "create", "x", "--partitions", "0").returncode == 2
    assert cli(bootstrap, "topic", "create", "x", "--config", "nonsense").returncode == 2
    bad_config = cli(bootstrap, "topic", "create", "x", "--config", "cleanup.policy=shred")
    assert bad_config.returncode == 1 and "cleanup.policy" in bad_config.stderr
    too_many = cli(bootstrap, "topic", "create", "x", "--replication-factor", "5")
    assert too_many.returncode == 1 and "needs 1..3 (the number of brokers)" in too_many.stderr
    assert too_many.stderr.count("(") == 1, "one hint, not a second generic one"
    missing_topic = cli(bootstrap, "topic", "describe", "no-such-topic")
    assert missing_topic.stderr.count("(") == 1 and "distlog topic create no-such-topic" in missing_topic.stderr


def test_no_cluster_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "distlog.cli", "topic", "list", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "no cluster in" in result.stderr and "distlog cluster up" in result.stderr


def test_topic_list_json_and_describe_without_a_name_cover_every_topic(bootstrap):
    assert cli(bootstrap, "topic", "create", "wide", "--partitions", "4", "--replication-factor", "3").returncode == 0
    assert cli(bootstrap, "topic", "create", "thin").returncode == 0
    listed = cli(bootstrap, "topic", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    topics = {t["name"]: t for t in json.loads(listed.stdout)}
    assert topics["wide"] == {"name": "wide", "partitions": 4, "replication_factor": 3}
    assert topics["thin"] == {"name": "thin", "partitions": 1, "replication_factor": 1}
    every = cli(bootstrap, "topic", "describe", "--json")
    assert every.returncode == 0, every.stderr
    described = {d["name"]: d for d in json.loads(every.stdout)}
    assert set(described) == set(topics) and len(described["wide"]["partitions"]) == 4
    table = cli(bootstrap, "topic", "describe")
    assert table.returncode == 0 and "wide" in table.stdout and "thin" in table.stdout
    assert table.stdout.count("HIGH-WATERMARK") == len(topics)


def test_alter_config_reaches_the_open_logs_and_add_partitions_grows_a_live_topic(bootstrap):
    from distlog.client import Producer
    from distlog.protocol.errors import DistlogError, ErrorCode

    assert cli(bootstrap, "topic", "create", "grown", "--partitions", "2", "--replication-factor", "3",
               "--config", "retention.ms=3600000").returncode == 0
    altered = cli(bootstrap, "topic", "alter-config", "grown", "--set", "max.message.bytes=2000",
                  "--delete", "retention.ms")
    assert altered.returncode == 0, altered.stderr
    configs = json.loads(cli(bootstrap, "topic", "describe", "grown", "--json").stdout)["configs"]
    assert configs == {"max.message.bytes": "2000"}  # retention.ms went back to the default
    producer = Producer(bootstrap, acks="all", linger_ms=0, retries=0)
    try:
        # The leader's open log now refuses a batch past the new limit (it was 1 MiB at creation).
        with pytest.raises(DistlogError) as refused:
            producer.send("grown", b"x" * 5000, partition=0).get(timeout=20)
        assert refused.value.code == ErrorCode.MESSAGE_TOO_LARGE
        bad = cli(bootstrap, "topic", "alter-config", "grown", "--set", "cleanup.policy=shred")
        assert bad.returncode == 1 and "cleanup.policy" in bad.stderr
        assert cli(bootstrap, "topic", "alter-config", "grown").returncode == 2

        added = cli(bootstrap, "topic", "add-partitions", "grown", "2")
        assert added.returncode == 0 and "now has 4 partitions" in added.stderr, added.stderr
        description = json.loads(cli(bootstrap, "topic", "describe", "grown", "--json").stdout)
        assert [p["partition"] for p in description["partitions"]] == [0, 1, 2, 3]
        assert all(len(p["replicas"]) == 3 for p in description["partitions"])
        # The new partitions elect leaders and take writes (the producer learns the count anew).
        assert producer.send("grown", b"to the new one", partition=3).get(timeout=20).offset == 0
    finally:
        producer.close()
    consumed = cli(bootstrap, "consume", "grown", "--partition", "3", "-o", "start", "--timeout", "2")
    assert consumed.stdout.splitlines() == ["to the new one"]
    shrink = cli(bootstrap, "topic", "add-partitions", "nosuch", "1")
    assert shrink.returncode == 1 and "does not exist" in shrink.stderr


def test_topic_reassign_moves_a_partition_and_keeps_its_records(bootstrap):
    assert cli(bootstrap, "topic", "create", "moved", "--replication-factor", "2").returncode == 0
    assert cli(bootstrap, "produce", "moved", "--acks", "all", input_text="a\nb\nc\n").returncode == 0
    before = json.loads(cli(bootstrap, "topic", "describe", "moved", "--json").stdout)["partitions"][0]["replicas"]
    target = [b for b in (1, 2, 3) if b not in before] + [before[0]]
    moved = cli(bootstrap, "topic", "reassign", "moved", "--partition", "0", "--replicas", ",".join(map(str, target)))
    assert moved.returncode == 0, moved.stderr
    assert f"now lives on {','.join(map(str, target))}" in moved.stderr
    after = json.loads(cli(bootstrap, "topic", "describe", "moved", "--json").stdout)["partitions"][0]
    assert after["replicas"] == target and after["target_replicas"] is None
    consumed = cli(bootstrap, "consume", "moved", "--from-beginning", "--max-records", "3", "--timeout", "10")
    assert consumed.stdout.split() == ["a", "b", "c"]

    refused = cli(bootstrap, "topic", "reassign", "moved", "--partition", "0", "--replicas", "1,9")
    assert refused.returncode == 1 and "cannot take replicas" in refused.stderr
    usage = cli(bootstrap, "topic", "reassign", "moved", "--partition", "0", "--replicas", "one,two")
    assert usage.returncode == 2 and "comma-separated list of broker ids" in usage.stderr
