"""Producer.metrics() and Consumer.metrics(): the counters move with real traffic."""

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer, TopicPartition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_counters_follow_what_was_produced_and_consumed(tmp_path):
    brokers = start_brokers(1, str(tmp_path))
    try:
        bootstrap = brokers[0].address
        with Admin(bootstrap) as admin:
            admin.create_topic("counted", partitions=2)
        producer = Producer(bootstrap, acks="all", linger_ms=0)
        try:
            assert producer.metrics()["records_sent"] == 0
            for i in range(300):
                producer.send("counted", b"x" * 50, key=b"k%d" % i)
            producer.flush(30)
            sent = producer.metrics()
        finally:
            producer.close()
        assert sent["records_sent"] == 300 and sent["records_failed"] == 0 and sent["retries"] == 0
        assert sent["batches_sent"] >= 2 and sent["requests_sent"] >= 1  # two partitions: two batches at least
        assert sent["bytes_sent"] > 300 * 50 and sent["buffer_bytes_used"] == 0
        assert sent["batch_size_avg"] == sent["bytes_sent"] / sent["batches_sent"]

        consumer = Consumer(bootstrap)
        try:
            consumer.assign([TopicPartition("counted", 0), TopicPartition("counted", 1)])
            consumer.seek_to_beginning()
            got = 0
            while got < 300:
                got += len(consumer.poll(timeout=5.0) or pytest.fail(f"only {got} of 300 records arrived"))
            read = consumer.metrics()
        finally:
            consumer.close()
        assert read["records_consumed"] == 300 and read["assigned_partitions"] == 2
        assert read["bytes_fetched"] >= sent["bytes_sent"] and read["fetch_responses"] >= 1
        assert read["records_lag_max"] == 0 and read["fetch_errors"] == 0
    finally:
        stop_brokers(brokers)
