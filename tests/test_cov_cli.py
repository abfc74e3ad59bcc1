"""The topic / produce / consume commands where the happy path ends: keys, partitions, new records only."""

import json
import subprocess
import sys

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.supervisor import cluster_file

pytestmark = pytest.mark.integration


def distlog(*args, input_text=None):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args], input=input_text,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    brokers = start_brokers(1, str(tmp_path_factory.mktemp("cli-broker")))
    try:
        yield brokers[0].address
    finally:
        stop_brokers(brokers)


def test_topic_list_as_json_names_every_topic(bootstrap):
    for name in ("alpha", "beta"):
        assert distlog("topic", "create", name, "--bootstrap", bootstrap).returncode == 0
    listed = distlog("topic", "list", "--json", "--bootstrap", bootstrap)
    assert listed.returncode == 0, listed.stderr
    assert {"alpha", "beta"} <= set(json.loads(listed.stdout))


def test_a_line_without_the_key_separator_is_a_record_without_a_key(bootstrap):
    assert distlog("topic", "create", "keyed", "--bootstrap", bootstrap).returncode == 0
    produced = distlog("produce", "keyed", "--key-separator", ":", "--bootstrap", bootstrap,
                       input_text="alice:hi\nno separator here\n")
    assert produced.returncode == 0, produced.stderr
    consumed = distlog("consume", "keyed", "--from-beginning", "--max-records", "2", "--format", "json",
                       "--bootstrap", bootstrap)
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert [(r["key"], r["value"]) for r in records] == [("alice", "hi"), (None, "no separator here")]


def test_one_key_for_every_record_and_key_with_separator_is_a_usage_error(bootstrap):
    assert distlog("topic", "create", "one-key", "--bootstrap", bootstrap).returncode == 0
    produced = distlog("produce", "one-key", "--key", "k", "--bootstrap", bootstrap, input_text="a\nb\n")
    assert produced.returncode == 0, produced.stderr
    consumed = distlog("consume", "one-key", "--from-beginning", "--max-records", "2", "--format", "json",
                       "--bootstrap", bootstrap)
    assert [json.loads(line)["key"] for line in consumed.stdout.splitlines()] == ["k", "k"]

    both = distlog("produce", "one-key", "--key", "k", "--key-separator", ":", "--bootstrap", bootstrap,
                   input_text="a\n")
    assert both.returncode == 2
    assert "give --key or --key-separator, not both" in both.stderr


def test_records_sent_to_a_partition_the_topic_lacks_fail_with_exit_1(bootstrap):
    assert distlog("topic", "create", "narrow", "--partitions", "2", "--bootstrap", bootstrap).returncode == 0
    produced = distlog("produce", "narrow", "--partition", "5", "--timeout", "5", "--bootstrap", bootstrap,
                       input_text="x\ny\n")
    assert produced.returncode == 1
    assert "error: UNKNOWN_TOPIC_OR_PARTITION: topic 'narrow' has partitions 0..1, not 5" in produced.stderr
    described = distlog("topic", "describe", "narrow", "--json", "--bootstrap", bootstrap)
    assert sum(p["high_watermark"] for p in json.loads(described.stdout)["partitions"]) == 0


def test_consume_without_from_beginning_prints_only_new_records(bootstrap):
    assert distlog("topic", "create", "latest", "--bootstrap", bootstrap).returncode == 0
    assert distlog("produce", "latest", "--bootstrap", bootstrap, input_text="old\n").returncode == 0
    consumer = subprocess.Popen([sys.executable, "-m", "distlog.cli", "consume", "latest", "--max-records", "1",
                                 "--timeout", "30", "--bootstrap", bootstrap],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The consumer starts at the end whenever it gets there; keep producing until it sees one.
        produced = 0
        while consumer.poll() is None and produced < 100:
            assert distlog("produce", "latest", "--bootstrap", bootstrap, input_text="new\n").returncode == 0
            produced += 1
        out, err = consumer.communicate(timeout=30)
    finally:
        consumer.kill()
        consumer.wait()
    assert consumer.returncode == 0, err
    assert out.splitlines() == ["new"]
    assert "consumed 1 record(s) from 'latest'" in err


def test_a_cluster_file_listing_no_brokers_says_to_bring_the_cluster_up(tmp_path):
    cluster_file.save(tmp_path, {"cluster_id": "empty", "brokers": [], "supervisor": {}})
    result = distlog("topic", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "lists no brokers" in result.stderr and "distlog cluster up" in result.stderr
