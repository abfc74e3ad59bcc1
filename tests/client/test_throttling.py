"""What the clients do when a broker answers THROTTLING (broker/backpressure.py): back off and
ask again, losing and duplicating nothing, without taking it for a lost leader."""

import time

import pytest

from distlog.client import Consumer, Producer
from distlog.protocol.messages import ApiKey, MetadataRequest
from tests.client.fakes import FakeCluster

TOPIC = "t"
HANG_GUARD_S = 10.0


@pytest.fixture
def cluster():
    fake = FakeCluster(1, TOPIC, 1)
    yield fake
    fake.stop()


def test_a_throttled_producer_retries_and_writes_each_record_once(cluster):
    cluster.throttle[ApiKey.PRODUCE] = 3
    with Producer(cluster.bootstrap, linger_ms=0, retry_backoff_ms=20) as producer:
        futures = [producer.send(TOPIC, b"v%d" % i, partition=0) for i in range(5)]
        offsets = [future.get(HANG_GUARD_S).offset for future in futures]
        throttled = producer.metrics()["requests_throttled"]
    assert cluster.logs[0] == [b"v%d" % i for i in range(5)], "a throttled produce was written, or one twice"
    assert offsets == [0, 1, 2, 3, 4]
    assert throttled == 3


def test_a_throttled_consumer_pauses_that_broker_then_reads_on(cluster):
    cluster.logs[0].extend(b"r%d" % i for i in range(4))
    cluster.throttle[ApiKey.FETCH] = 3
    broker = cluster.brokers[1]
    with Consumer(cluster.bootstrap, retry_backoff_ms=100) as consumer:
        consumer.assign([(TOPIC, 0)])
        consumer.seek(consumer.assignment().pop(), 0)
        started = time.monotonic()
        records = []
        while len(records) < 4 and time.monotonic() - started < HANG_GUARD_S:
            records.extend(consumer.poll(timeout=0.5))
        elapsed_s = time.monotonic() - started
        metrics = consumer.metrics()
    assert [r.value for r in records] == [b"r0", b"r1", b"r2", b"r3"]
    assert metrics["fetches_throttled"] == 3 and metrics["fetch_errors"] == 0
    # Three refusals, each followed by retry_backoff_ms without a fetch: not a busy loop.
    assert elapsed_s >= 0.3, f"it asked again at once ({elapsed_s:.3f} s for three refusals)"
    assert broker.count(MetadataRequest) <= 2, "a throttled fetch is not a reason to look the leader up"
