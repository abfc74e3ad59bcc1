"""A broker's /metrics, scraped with a real HTTP client while records are produced and read."""

import os
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.broker.metrics import ENDPOINT_FILE
from distlog.client import Admin, Consumer, Producer, TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def scrape(url: str) -> dict:
    """{(name, sorted labels): value} of every sample."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_gauges_and_histograms_move_with_a_produce_and_a_fetch(tmp_path):
    (broker,) = start_brokers(1, str(tmp_path), extra_args=["--metrics-port", "0"])
    try:
        with open(os.path.join(broker.data_dir, ENDPOINT_FILE)) as file:
            url = file.read().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        before = scrape(url)
        assert before[("distlog_partitions", ())] == 0
        with Admin(broker.address) as admin:
            admin.create_topic("scraped", partitions=1)
        producer = Producer(broker.address, acks="all", linger_ms=0)
        try:
            for i in range(50):
                producer.send("scraped", b"x" * 100, partition=0)
            producer.flush(30)
        finally:
            producer.close()
        consumer = Consumer(broker.address)
        try:
            consumer.assign([TopicPartition("scraped", 0)])
            consumer.seek_to_beginning()
            read, deadline = 0, time.monotonic() + 20
            while read < 50 and time.monotonic() < deadline:
                read += len(consumer.poll(timeout=1.0))
        finally:
            consumer.close()
        assert read == 50
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the gauges are refreshed once a second
            after = scrape(url)
            if after.get(("distlog_partition_leaders", ()), 0) == 1:
                break
        topic = (("topic", "scraped"),)
        assert after[("distlog_produced_records_total", topic)] == 50
        assert after[("distlog_produced_bytes_total", topic)] > 50 * 100
        assert after[("distlog_fetched_bytes_total", topic)] >= after[("distlog_produced_bytes_total", topic)]
        assert after[("distlog_requests_total", (("api", "PRODUCE"),))] >= 1
        assert after[("distlog_request_latency_seconds_count", (("api", "PRODUCE"),))] >= 1
        assert after[("distlog_request_latency_seconds_count", (("api", "FETCH"),))] >= 1
        assert after[("distlog_partitions", ())] == 1 and after[("distlog_partition_leaders", ())] == 1
        assert after[("distlog_offline_partitions", ())] == 0
        assert after[("distlog_raft_leader_elections_total", ())] >= 1
        fsyncs = after[("distlog_fsync_latency_seconds_count", ())]
        assert fsyncs >= 1 and fsyncs > before.get(("distlog_fsync_latency_seconds_count", ()), 0)
    finally:
        stop_brokers([broker])
