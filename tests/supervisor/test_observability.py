"""A supervised cluster's logs and metrics: broker.log rotated with N files kept; the metrics port
the supervisor picked, listed by `cluster status`, scraped with a real HTTP client while a
producer runs; consumer-group lag."""

import json
import os
import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distlog.client import Admin, Producer, TopicPartition
from distlog.protocol.messages import LATEST_TIMESTAMP
from distlog.supervisor import cluster_file
from tests.supervisor.helpers import run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def scrape(url: str) -> dict:
    """{(name, sorted labels): value} of every sample /metrics serves now."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def produce_until(stop: threading.Event, address: str, errors: list) -> None:
    try:
        producer = Producer(address, acks="all", linger_ms=1)
        try:
            while not stop.is_set():
                for _ in range(100):
                    producer.send("scraped", b"x" * 200, partition=0)
                producer.flush(30)
        finally:
            producer.close()
    except Exception as error:  # the test thread reports it
        errors.append(error)


def test_counters_move_between_two_scrapes_during_a_produce_and_lag_follows_commits(cluster_dir):
    result = run_cli("up", "--detach", "-n", "1", "--data-dir", cluster_dir)
    assert result.returncode == 0, result.stderr
    [broker] = cluster_file.load(cluster_dir)["brokers"]
    url = f"http://127.0.0.1:{broker['metrics_port']}/metrics"
    status = run_cli("status", "--json", "--data-dir", cluster_dir)
    assert json.loads(status.stdout)["brokers"][0]["metrics"] == url
    assert url in run_cli("status", "--data-dir", cluster_dir).stdout

    with Admin(broker["address"]) as admin:
        admin.create_topic("scraped", partitions=1)
    stop, errors = threading.Event(), []
    producing = threading.Thread(target=produce_until, args=(stop, broker["address"], errors))
    producing.start()
    try:
        records = ("distlog_produced_records_total", (("topic", "scraped"),))
        first = wait_for(lambda: (s := scrape(url)).get(records, 0) > 0 and s, what="a first produced batch")
        # A request's latency is observed when it is answered, after its records were counted:
        # wait for the latency count to move too, or a scrape between the two sees only one.
        latency = ("distlog_request_latency_seconds_count", (("api", "PRODUCE"),))
        second = wait_for(lambda: (s := scrape(url))[records] > first[records]
                          and s.get(latency, 0) > first.get(latency, 0) and s,
                          what="the produced records and request latency counters to move during the produce")
    finally:
        stop.set()
        producing.join(60)
    assert not errors and not producing.is_alive()
    for moved in [("distlog_produced_bytes_total", (("topic", "scraped"),)),
                  ("distlog_requests_total", (("api", "PRODUCE"),)),
                  ("distlog_request_latency_seconds_count", (("api", "PRODUCE"),)),
                  ("distlog_fsync_latency_seconds_count", ())]:
        assert second[moved] > first[moved], moved

    with Admin(broker["address"]) as admin:
        end = admin.list_offsets({TopicPartition("scraped", 0): LATEST_TIMESTAMP})[TopicPartition("scraped", 0)]
        admin.alter_group_offsets("billing", {("scraped", 0): 10})
    lag = ("distlog_consumer_group_lag", (("group", "billing"), ("partition", "0"), ("topic", "scraped")))
    got = wait_for(lambda: (s := scrape(url)).get(lag) is not None and s, what="the group's lag (once a second)")
    assert got[lag] == end - 10
    assert got[("distlog_partition_high_watermark", (("partition", "0"), ("topic", "scraped")))] == end


def test_the_supervised_brokers_log_rotates_and_only_the_last_n_files_are_kept(cluster_dir):
    result = run_cli("up", "--detach", "-n", "1", "--data-dir", cluster_dir, "--log-level", "debug",
                     "--log-max-bytes", "400", "--log-backups", "2")
    assert result.returncode == 0, result.stderr
    [broker] = cluster_file.load(cluster_dir)["brokers"]
    log_file = broker["log_file"]
    with Admin(broker["address"]) as admin:
        # Each topic is a few log lines (metadata applied, partition opened): enough to rotate a
        # 400-byte file many times over.
        for i in range(8):
            admin.create_topic(f"rotated-{i}", partitions=1)
    wait_for(lambda: os.path.exists(f"{log_file}.2"), what="a second rotated file")
    # Stopped, the broker rotates no more: reading while it renames .1 to .2 found no .1.
    assert run_cli("down", "--data-dir", cluster_dir).returncode == 0
    assert not os.path.exists(f"{log_file}.3"), "only --log-backups 2 files are kept"
    lines = []
    for path in (f"{log_file}.2", f"{log_file}.1", log_file):
        with open(path) as file:
            lines += [json.loads(line) for line in file if line.strip()]
    assert all({"ts", "level", "broker", "event"} <= line.keys() for line in lines)
    assert os.path.getsize(f"{log_file}.1") <= 400 + max(len(json.dumps(line)) + 1 for line in lines)
    assert lines[-1]["broker"] == 1 and any(line["level"] == "info" for line in lines)
