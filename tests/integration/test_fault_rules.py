"""Fault rules set over the wire cut a broker off from the rest, and healing restores it."""

import time
import uuid

import pytest

from distlog.client import Admin
from distlog.client.probe import set_fault_rules
from distlog.protocol.messages import MetadataRequest

pytestmark = pytest.mark.integration


def broker_knows(address, topic):
    with Admin(address, request_timeout_s=5) as admin:
        response = admin.cluster.request_any(MetadataRequest(topics=[topic]))
    return response.topics[0]["error_code"] == 0


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_a_partitioned_broker_misses_metadata_until_healed(three_brokers):
    # Cut from both others, broker 3 hears neither the metadata log (it is one of the three
    # controllers) nor the controller's answers to its metadata sync.
    follower, others = three_brokers[2], three_brokers[:2]
    cut = ["broker-1", "broker-2"]
    set_fault_rules(follower.address, {"drop_to": cut, "drop_from": cut}, timeout_s=5)
    try:
        topic = f"cut-{uuid.uuid4().hex[:6]}"
        with Admin(others[0].address) as admin:
            admin.create_topic(topic, partitions=3)
        assert all(broker_knows(broker.address, topic) for broker in others)
        # the cut-off broker still answers clients, but cannot learn about the topic
        time.sleep(0.5)  # not synchronisation: a window in which the cut broker must NOT learn it
        assert not broker_knows(follower.address, topic)
    finally:
        set_fault_rules(follower.address, {}, timeout_s=5)
    wait_for(lambda: broker_knows(follower.address, topic), 10, "the healed broker to learn the topic")
