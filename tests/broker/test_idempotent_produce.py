"""End to end: a produce whose acknowledgement is lost is retried by the producer; with
idempotence the retry is recognised and the record is stored once, without it twice."""

import uuid

import pytest

from distlog.client import Admin, Consumer, Producer
from distlog.protocol.messages import ProduceResponse
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    with running_brokers(str(tmp_path), 1) as (brokers, _):
        yield brokers[0], brokers[0].config.listen


def lose_the_first_produce_reply(instance):
    real_send_now, lost = instance._send_now, []

    def send_now(peer, cid, response):
        if isinstance(response, ProduceResponse) and not lost:
            lost.append(cid)  # written and flushed, but the producer never hears of it
            return
        real_send_now(peer, cid, response)

    instance._send_now = send_now
    return lost


def stored_values(address, topic, expected_at_least):
    with Consumer(address, fetch_max_wait_ms=50) as consumer:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        values = []
        for _ in range(100):
            values.extend(r.value for r in consumer.poll(timeout=0.05))
            if len(values) >= expected_at_least and consumer.position((topic, 0)) == consumer.highwater((topic, 0)):
                break
        return values


@pytest.mark.parametrize("idempotent, stored", [(True, [b"once", b"next"]), (False, [b"once", b"once", b"next"])])
def test_a_retry_after_a_lost_acknowledgement(broker, idempotent, stored):
    instance, address = broker
    topic = f"i-{uuid.uuid4().hex[:8]}"
    with Admin(address) as admin:
        admin.create_topic(topic)
    lost = lose_the_first_produce_reply(instance)
    with Producer(address, acks="all", enable_idempotence=idempotent, linger_ms=0,
                  request_timeout_ms=500, retry_backoff_ms=10) as producer:
        first = producer.send(topic, b"once").get(10)
        assert lost, "the test did not lose a reply"
        second = producer.send(topic, b"next").get(10)
    assert stored_values(address, topic, len(stored)) == stored
    assert (first.offset, second.offset) == ((0, 1) if idempotent else (1, 2))


def test_idempotence_needs_acks_all():
    with pytest.raises(ValueError, match="needs acks='all'"):
        Producer("tcp://127.0.0.1:1", acks=1, enable_idempotence=True)
    with pytest.raises(ValueError, match="at most 16 requests in flight"):
        Producer("tcp://127.0.0.1:1", max_in_flight=17)
