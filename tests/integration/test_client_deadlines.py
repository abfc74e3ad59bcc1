"""Client deadlines against real brokers (issue #9): with one of three brokers paused (SIGSTOP),
the consumer, the `distlog consume` command and the producer keep serving the other partitions.

The paused broker leads one partition of a 3-partition, replication-factor-1 topic and comes
first in the bootstrap list, the worst place for it. Before the fix, poll(timeout=2) raised
REQUEST_TIMED_OUT after 30 s and the command printed nothing and exited 1 after 30 s.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer
from distlog.client.partitioner import partition_for_key

pytestmark = pytest.mark.integration

PARTITIONS = 3
RECORDS_PER_PARTITION = 5
# Hang guards: these bound waits that end within a few seconds when the clients work, so a
# regression fails instead of hanging. They are not the behaviour under test.
HANG_GUARD_S = 10.0
CLI_HANG_GUARD_S = 20.0  # the command also starts a Python interpreter
# Not stalled: sends to healthy leaders are acknowledged this soon after the first one, metadata
# lookup included (before the fix the producer gave the paused broker 10 s of its 30 first).
ACKNOWLEDGED_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(brokers, topic, the broker to pause, the partitions it does not lead)."""
    brokers = start_brokers(3, str(tmp_path_factory.mktemp("deadlines")))
    try:
        bootstrap = ",".join(b.address for b in brokers)
        topic = f"d-{uuid.uuid4().hex[:8]}"
        with Admin(bootstrap) as admin:
            admin.create_topic(topic, partitions=PARTITIONS)
            leaders = [p["leader"] for p in admin.describe_topic(topic)["partitions"]]
        producer = Producer(bootstrap, linger_ms=0)
        try:
            for p in range(PARTITIONS):
                for i in range(RECORDS_PER_PARTITION):
                    producer.send(topic, b"p%d-%d" % (p, i), partition=p)
            producer.flush(timeout=HANG_GUARD_S)
        finally:
            producer.close(timeout=HANG_GUARD_S)
        victim = next(b for b in brokers if b.broker_id == leaders[0])
        healthy = [p for p in range(PARTITIONS) if leaders[p] != victim.broker_id]
        assert healthy, f"every partition is led by broker {victim.broker_id}: {leaders}"
        yield brokers, topic, victim, healthy
    finally:
        stop_brokers(brokers)


@contextlib.contextmanager
def paused(broker):
    broker.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        broker.process.send_signal(signal.SIGCONT)


def bootstrap_with_first(brokers, first) -> str:
    return ",".join([first.address] + [b.address for b in brokers if b is not first])


def expected_records(healthy) -> set:
    return {(p, b"p%d-%d" % (p, i)) for p in healthy for i in range(RECORDS_PER_PARTITION)}


def test_poll_returns_the_healthy_partitions_records_while_one_broker_is_paused(cluster):
    brokers, topic, victim, healthy = cluster
    with paused(victim):
        consumer = Consumer(bootstrap_with_first(brokers, victim))
        try:
            consumer.assign([(topic, p) for p in range(PARTITIONS)])
            consumer.seek_to_beginning()
            started = time.monotonic()
            records = consumer.poll(timeout=2)
            first_poll_s = time.monotonic() - started
            assert first_poll_s < HANG_GUARD_S, f"poll(timeout=2) took {first_poll_s:.1f} s"
            assert records, "poll(timeout=2) returned nothing though two partitions' leaders are up"
            deadline = time.monotonic() + HANG_GUARD_S
            while len(records) < len(expected_records(healthy)) and time.monotonic() < deadline:
                records.extend(consumer.poll(timeout=2))
        finally:
            consumer.close()
    assert {(r.partition, r.value) for r in records} == expected_records(healthy)


def test_the_consume_command_prints_the_healthy_partitions_and_exits_after_its_timeout(cluster):
    brokers, topic, victim, healthy = cluster
    distlog = os.path.join(os.path.dirname(sys.executable), "distlog")
    command = [distlog, "consume", topic, "--from-beginning", "--timeout", "2", "--format", "json",
               "--bootstrap", bootstrap_with_first(brokers, victim)]
    with paused(victim):
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=CLI_HANG_GUARD_S,
                                stdin=subprocess.DEVNULL)
        took_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    printed = {(r["partition"], r["value"].encode()) for r in map(json.loads, result.stdout.splitlines())}
    assert printed == expected_records(healthy)
    assert f"consumed {len(printed)} record(s)" in result.stderr
    assert took_s < CLI_HANG_GUARD_S


def test_keyed_sends_to_healthy_partitions_are_acknowledged_while_one_broker_is_paused(cluster):
    brokers, topic, victim, healthy = cluster
    keys = [b"k%d" % i for i in range(200)]
    to_healthy = [k for k in keys if partition_for_key(k, PARTITIONS) in healthy][:20]
    to_paused = [k for k in keys if partition_for_key(k, PARTITIONS) not in healthy][:5]
    with paused(victim):
        producer = Producer(bootstrap_with_first(brokers, victim), linger_ms=0)
        try:
            started = time.monotonic()
            stuck = [producer.send(topic, b"to the paused leader", key=k) for k in to_paused]
            futures = [producer.send(topic, b"to a healthy leader", key=k) for k in to_healthy]
            acknowledged = [future.get(timeout=HANG_GUARD_S) for future in futures]
            acknowledged_in_s = time.monotonic() - started
            assert acknowledged_in_s < ACKNOWLEDGED_WITHIN_S, \
                f"sends to healthy leaders took {acknowledged_in_s:.1f} s to be acknowledged"
            assert not any(future.done() for future in stuck)
        finally:
            started = time.monotonic()
            producer.close(timeout=1)
            closed_in_s = time.monotonic() - started
    assert [md.partition for md in acknowledged] == [partition_for_key(k, PARTITIONS) for k in to_healthy]
    assert all(md.offset >= RECORDS_PER_PARTITION for md in acknowledged)
    assert closed_in_s < HANG_GUARD_S, f"close(timeout=1) took {closed_in_s:.1f} s"
