"""Producer(shm=True) against a real 3-broker RF=3 cluster: ~1 MB batches go through the
shared-memory ring, come back byte-identical, the brokers refuse no descriptor, the ring file is
gone after close(), and a `clients` fault rule drops shm produces like any others."""

import json
import os

import numpy as np
import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Producer
from distlog.client.probe import set_fault_rules
from distlog.transports.faults import CLIENTS
from tests.integration.replication_helpers import leader_of, read_everything, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RECORDS, WIDTH = 20_000, 100


def _stale_descriptors(broker) -> int:
    counts = [json.loads(line).get("stale_descriptors") for line in open(broker.log_path) if '"stopped"' in line]
    assert counts and counts[-1] is not None, broker.log_tail()
    return counts[-1]


def _ring_paths(producer) -> list:
    return [c.ring_path for c in producer._cluster._connections.values() if c.ring_path]


def test_shm_produce_round_trip_and_client_cut(tmp_path):
    brokers = start_brokers(3, str(tmp_path))
    try:
        bootstrap = brokers[0].address
        with Admin(bootstrap, request_timeout_s=5) as admin:
            admin.create_topic("shm", partitions=1, replication_factor=3)
        values = np.random.default_rng(7).integers(0, 256, (RECORDS, WIDTH), dtype=np.uint8)
        producer = Producer(bootstrap, acks="all", linger_ms=0, shm=True, request_timeout_ms=1000)
        try:
            half = RECORDS // 2
            for f in producer.send_batch("shm", values[:half], partition=0):
                f.get(timeout=20)
            rings = _ring_paths(producer)
            assert rings and all(os.path.exists(p) for p in rings)
            assert all(f"-{os.getpid()}" in p for p in rings)
            assert all(c.transport.ring.fallbacks == 0 for c in producer._cluster._connections.values() if c.ring_path)
            # Cut every client off the leader: the shm produces are dropped too, time out, retry.
            leader_id = wait_for(lambda: leader_of(brokers, "shm", 0), 10, "one leader of shm-0")
            [leader] = [b for b in brokers if b.broker_id == leader_id]
            set_fault_rules(leader.address, {"drop_to": [CLIENTS], "drop_from": [CLIENTS]}, 5)
            retries_before = producer.metrics()["retries"]
            futures = producer.send_batch("shm", values[half:], partition=0)
            wait_for(lambda: producer.metrics()["retries"] > retries_before, 10, "a retry of a dropped shm produce")
            assert not any(f.done() for f in futures)
            set_fault_rules(leader.address, {}, 5)
            for f in futures:
                f.get(timeout=20)
        finally:
            producer.close()
        assert rings and not any(os.path.exists(p) for p in rings)
        records = read_everything(bootstrap, "shm", 1, RECORDS)
        assert [r.offset for r in records] == list(range(RECORDS))  # none lost, none written twice
        assert b"".join(r.value for r in records) == values.tobytes()
    finally:
        stop_brokers(brokers)
    assert [_stale_descriptors(b) for b in brokers] == [0, 0, 0]
