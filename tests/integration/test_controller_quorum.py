"""The controller quorum on real broker processes: the cluster metadata survives the loss of
the active controller, every broker converges on the same metadata, and partition leadership
reaches every broker's Metadata answers soon after a failover."""

import json
import os
import time
import uuid

import pytest

from distlog.broker.launcher import restart_broker, start_brokers, stop_brokers
from distlog.client import Admin
from distlog.client.connection import BrokerConnection
from distlog.protocol.messages import MetadataRequest
from tests.integration.replication_helpers import describe, sigkill, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def brokers(tmp_path):
    started = start_brokers(3, str(tmp_path))
    try:
        yield started
    finally:
        stop_brokers(started)


def active_controller(brokers) -> int | None:
    """The controller every live broker names, or None while they do not agree on one."""
    named = set()
    for broker in brokers:
        if broker.process.poll() is not None:
            continue
        connection = BrokerConnection(broker.address)
        try:
            named.add(connection.request(MetadataRequest(topics=[]), 2.0).controller_id)
        except Exception:
            return None
        finally:
            connection.close()
    return named.pop() if len(named) == 1 and None not in named else None


def saved_metadata(broker) -> dict | None:
    """The metadata the broker applied last (it saves each version before serving it)."""
    try:
        with open(os.path.join(broker.data_dir, "metadata.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def converged(brokers) -> dict | None:
    """The one metadata (version and content) every live broker has, or None."""
    seen = [saved_metadata(b) for b in brokers if b.process.poll() is None]
    return seen[0] if seen[0] is not None and all(m == seen[0] for m in seen) else None


def test_a_topic_is_created_within_5_s_of_killing_the_active_controller_and_all_brokers_converge(brokers):
    kept = f"kept-{uuid.uuid4().hex[:6]}"
    with Admin(brokers[0].address) as admin:
        admin.create_topic(kept, partitions=2, replication_factor=3)
    controller_id = wait_for(lambda: active_controller(brokers), 10, "a controller every broker names")
    old = next(b for b in brokers if b.broker_id == controller_id)
    survivors = [b for b in brokers if b is not old]

    sigkill(old)
    killed_at = time.monotonic()
    created = f"after-{uuid.uuid4().hex[:6]}"
    with Admin(",".join(b.address for b in survivors), request_timeout_s=10) as admin:
        admin.create_topic(created, partitions=3, replication_factor=2)
    took_s = time.monotonic() - killed_at
    assert took_s < 5.0, f"the topic took {took_s:.2f} s to create after the controller was killed"

    new_controller = wait_for(lambda: active_controller(brokers), 10, "a new controller every live broker names")
    assert new_controller != controller_id
    image = wait_for(lambda: converged(survivors), 10, "the live brokers converging on one metadata")
    assert {t["name"] for t in image["topics"]} >= {kept, created}, "an acknowledged metadata change was lost"

    restart_broker(old)
    image = wait_for(lambda: (m := converged(brokers)) and m["version"] >= image["version"] and m, 15,
                     "the restarted controller converging too")
    assert {t["name"] for t in image["topics"]} >= {kept, created}
    for broker in brokers:  # and each serves it
        assert describe(broker.address, created)["error_code"] == 0


def test_a_new_partition_leader_reaches_every_brokers_metadata_within_a_second(brokers):
    topic = f"lead-{uuid.uuid4().hex[:6]}"
    with Admin(brokers[0].address) as admin:
        admin.create_topic(topic, partitions=1, replication_factor=3)

    def named_leaders(among):
        return [describe(b.address, topic)["partitions"][0]["leader"] for b in among]

    def agreed_leader():
        seen = set(named_leaders(brokers))
        return seen.pop() if len(seen) == 1 and None not in seen else None

    leader_id = wait_for(agreed_leader, 10, "one leader named by every broker")
    old = next(b for b in brokers if b.broker_id == leader_id)
    survivors = [b for b in brokers if b is not old]
    sigkill(old)
    first_s = all_s = None
    deadline = time.monotonic() + 15
    while all_s is None:
        assert time.monotonic() < deadline, "no new leader was named within 15 s"
        named = named_leaders(survivors)
        now_s = time.monotonic()
        fresh = [n for n in named if n is not None and n != leader_id]
        if fresh and first_s is None:
            first_s = now_s
        if len(fresh) == len(survivors) and len(set(fresh)) == 1:
            all_s = now_s
        time.sleep(0.02)  # polling interval of a condition
    assert all_s - first_s <= 1.0, f"the new leader took {all_s - first_s:.2f} s to reach every broker's metadata"
