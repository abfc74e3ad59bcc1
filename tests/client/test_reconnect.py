"""Clients notice a broker going away and resend what was in flight, instead of waiting out
request_timeout for an answer that can no longer come."""

import os
import threading
import time
import uuid

import pytest

from distlog.supervisor.ports import free_ports
from distlog.broker.server import Broker, BrokerConfig
from distlog.client import Admin, Consumer, Producer
from distlog.protocol.messages import ApiKey
from tests.broker.helpers import quiet_logger

pytestmark = pytest.mark.integration


def start(config):
    broker = Broker(config, quiet_logger(config.broker_id))
    thread = threading.Thread(target=broker.run, daemon=True)
    thread.start()
    return broker, thread


def stop(broker, thread):
    broker.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_a_consumer_long_polling_a_restarted_broker_gets_new_records_without_waiting_out_its_timeout(tmp_path):
    (port,) = free_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    config = BrokerConfig(1, os.path.join(tmp_path, "broker-1"), address, {1: address})
    topic = f"r-{uuid.uuid4().hex[:8]}"
    broker, thread = start(config)
    with Admin(address) as admin:
        admin.create_topic(topic)
    consumer = Consumer(address, fetch_max_wait_ms=10_000, request_timeout_ms=20_000)
    consumer.assign([(topic, 0)])
    got, done = [], threading.Event()

    def consume():  # the consumer's own thread, polling all along as an application does
        deadline_s = time.monotonic() + 10
        while not got and time.monotonic() < deadline_s and not done.is_set():
            got.extend(consumer.poll(timeout=0.1))

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        deadline_s = time.monotonic() + 5
        while not broker.purgatory._deadlines:  # until the consumer's long poll is parked
            assert time.monotonic() < deadline_s, "no fetch was parked"
            time.sleep(0.01)
        stop(broker, thread)
        broker, thread = start(config)  # same address, same data
        with Producer(address, linger_ms=0) as producer:
            producer.send(topic, b"after restart").get(5)
        reader.join(5)
        assert [r.value for r in got] == [b"after restart"], "the consumer waited on a fetch the broker dropped"
    finally:
        done.set()
        reader.join(10)
        consumer.close()
        stop(broker, thread)


def test_a_produce_lost_with_a_restarting_broker_is_retried_at_once_not_after_request_timeout(tmp_path):
    (port,) = free_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    config = BrokerConfig(1, os.path.join(tmp_path, "broker-1"), address, {1: address})
    topic = f"r-{uuid.uuid4().hex[:8]}"
    broker, thread = start(config)
    try:
        with Admin(address) as admin:
            admin.create_topic(topic)
        producer = Producer(address, linger_ms=0, request_timeout_ms=20_000, retry_backoff_ms=10)
        try:
            producer.send(topic, b"warm-up").get(5)
            swallowed = threading.Event()

            def swallow(peer, cid, request):  # the broker goes down before it answers this one
                swallowed.set()

            broker.handlers[ApiKey.PRODUCE] = swallow
            future = producer.send(topic, b"in flight")
            assert swallowed.wait(5)
            stop(broker, thread)
            broker, thread = start(config)
            assert future.get(timeout=5).offset == 1, "the producer waited out request_timeout"
        finally:
            producer.close(timeout=5)
    finally:
        stop(broker, thread)
