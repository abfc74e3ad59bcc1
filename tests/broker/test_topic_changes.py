"""Topic changes are answered once the brokers that are up have applied them."""

import threading
import time
import uuid

import pytest

from distlog.broker import controller as controller_module
from distlog.broker import server
from distlog.client import Admin
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0  # only for a hang; every step here takes milliseconds on a healthy broker


def wait_for(condition, what):
    deadline = time.monotonic() + HANG_GUARD_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} within {HANG_GUARD_S} s (a hang guard)"
        time.sleep(0.01)  # polling a condition
    return value


def test_a_topic_created_before_a_peer_has_synced_is_answered_only_once_it_has(tmp_path, monkeypatch):
    # The race: right after startup a topic is created before broker 4 (outside the controller
    # quorum of 1-3, so it only learns metadata by asking) has asked even once. It is forced by
    # not running broker 4's loop until the controller holds the committed change; the windows
    # are widened so that only its sync releases the answer.
    monkeypatch.setattr(server, "PEER_LIVE_WINDOW_S", 600.0)  # peers never heard from count as live
    monkeypatch.setattr(controller_module, "CHANGE_PROPAGATION_MAX_S", 600.0)
    topic = f"early-{uuid.uuid4().hex[:8]}"
    with running_brokers(str(tmp_path), 4, run={1, 2, 3}) as (brokers, threads):
        late = brokers[3]
        controller = wait_for(lambda: next((b for b in brokers[:3] if b.metadata_quorum.leads), None),
                              "controller elected")
        outcome = []

        def create():
            try:
                with Admin(controller.config.listen, request_timeout_s=HANG_GUARD_S) as admin:
                    admin.create_topic(topic, partitions=3, timeout_s=HANG_GUARD_S)
                outcome.append("created")
            except Exception as error:  # reported by the assertion below
                outcome.append(error)

        creating = threading.Thread(target=create)
        creating.start()
        try:
            wait_for(lambda: all(topic in b.metadata.topics for b in brokers[:3]) or not creating.is_alive(),
                     "the controllers applying the change")
            assert creating.is_alive(), f"answered ({outcome}) before broker 4 had synced once"
            assert topic not in late.metadata.topics
            threads[3].start()
        finally:
            creating.join(HANG_GUARD_S)
        assert outcome == ["created"]
        assert [topic in broker.metadata.topics for broker in brokers] == [True] * 4
