"""`distlog perf` against real brokers: what produce sends, consume reads back; end-to-end finishes."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def cli(bootstrap, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args, "--bootstrap", bootstrap],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def bootstrap(three_brokers):
    return ",".join(b.address for b in three_brokers)


def assert_rates(result, records):
    assert result["records"] == records, result
    assert result["failures"] == 0, result
    assert result["records_per_s"] > 0 and result["mb_per_s"] > 0, result
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p99_9"] <= latency["max"], result


def test_consume_reads_back_exactly_what_produce_sent(bootstrap):
    assert cli(bootstrap, "topic", "create", "perf-pc", "--partitions", "3", "--replication-factor", "3").returncode == 0
    produced = cli(bootstrap, "perf", "produce", "--topic", "perf-pc", "--num-records", "20000", "--record-size", "100",
                   "--key-size", "8", "--reporting-interval", "0.5", "--json")
    assert produced.returncode == 0, produced.stderr
    assert_rates(json.loads(produced.stdout), 20000)
    consumed = cli(bootstrap, "perf", "consume", "--topic", "perf-pc", "--num-records", "20000", "--timeout", "5",
                   "--json")
    assert consumed.returncode == 0, consumed.stderr
    result = json.loads(consumed.stdout)
    assert_rates(result, 20000)
    assert result["mb_per_s"] * result["elapsed_s"] * 1024 * 1024 == pytest.approx(20000 * 108)
    # One more than there is: the timeout ends it, says so, and exits 1 with the count read.
    more = cli(bootstrap, "perf", "consume", "--topic", "perf-pc", "--num-records", "20001", "--timeout", "0.5",
               "--json")
    assert more.returncode == 1, (more.stdout, more.stderr)
    assert json.loads(more.stdout)["records"] == 20000
    assert "only 20000 record(s) arrived" in more.stderr


def test_send_batch_path_counts_every_record(bootstrap):
    assert cli(bootstrap, "topic", "create", "perf-batch").returncode == 0
    produced = cli(bootstrap, "perf", "produce", "--topic", "perf-batch", "--num-records", "5000", "--record-size", "50",
                   "--send-batch", "--json")
    assert produced.returncode == 0, produced.stderr
    assert_rates(json.loads(produced.stdout), 5000)


def test_end_to_end_at_a_steady_rate(bootstrap):
    assert cli(bootstrap, "topic", "create", "perf-e2e", "--replication-factor", "3").returncode == 0
    run = cli(bootstrap, "perf", "end-to-end", "--topic", "perf-e2e", "--num-records", "4000", "--throughput", "2000",
              "--reporting-interval", "0.5", "--max-in-flight", "2", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert_rates(result, 4000)
    assert 1500 <= result["records_per_s"] <= 2100  # paced, not flat out
    assert "records consumed" in run.stderr  # progress lines


def test_missing_topic_and_bad_flags(bootstrap):
    missing = cli(bootstrap, "perf", "produce", "--topic", "nope", "--num-records", "10", "--timeout", "3")
    assert missing.returncode == 1
    assert "topic 'nope' does not exist (create it with `distlog topic create nope`)" in missing.stderr
    assert cli(bootstrap, "perf", "consume", "--topic", "nope", "--num-records", "1", "--timeout", "3").returncode == 1
    assert cli(bootstrap, "perf", "produce", "--topic", "x", "--num-records", "0").returncode == 2
    assert cli(bootstrap, "perf", "produce", "--topic", "x", "--num-records", "5", "--throughput", "0").returncode == 2
    assert cli(bootstrap, "perf", "consume", "--topic", "x", "--num-records", "5", "--from", "middle").returncode == 2
    too_many = cli(bootstrap, "perf", "produce", "--topic", "x", "--num-records", "5", "--max-in-flight", "11")
    assert too_many.returncode == 2 and "--max-in-flight" in too_many.stderr


def test_no_cluster_reachable():
    # a port nothing listens on (the test's own brokers are elsewhere)
    run = cli("127.0.0.1:1", "perf", "produce", "--topic", "t", "--num-records", "1", "--timeout", "1")
    assert run.returncode == 1
    assert "no cluster answered (start one with `distlog cluster up`" in run.stderr
