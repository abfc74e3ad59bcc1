"""Topic changes are answered once the brokers that are up have applied them."""

import threading
import time
import uuid

import pytest

from distlog.broker import server
from distlog.client import Admin
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0  # only for a hang; every step here takes milliseconds on a healthy broker


def test_a_topic_created_before_the_peers_have_synced_is_answered_only_once_they_have(tmp_path, monkeypatch):
    # The race: right after startup a topic is created before brokers 2 and 3 have asked the
    # controller for metadata even once. It is forced by not running their loops until the
    # controller holds the answer; the windows are widened so that only their sync releases it.
    monkeypatch.setattr(server, "PEER_LIVE_WINDOW_S", 600.0)  # peers never heard from count as live
    monkeypatch.setattr(server, "TOPIC_CHANGE_WAIT_MAX_S", 600.0)
    topic = f"early-{uuid.uuid4().hex[:8]}"
    with running_brokers(str(tmp_path), 3, run={1}) as (brokers, threads):
        controller, peers = brokers[0], brokers[1:]
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
            deadline = time.monotonic() + HANG_GUARD_S
            while not controller.pending_topic_changes and creating.is_alive():
                assert time.monotonic() < deadline, "the controller never received the creation"
                time.sleep(0.01)  # polling a condition
            assert creating.is_alive(), f"answered ({outcome}) before brokers 2 and 3 had synced once"
            assert [topic in peer.metadata.topics for peer in peers] == [False, False]
            for thread in threads[1:]:
                thread.start()
        finally:
            creating.join(HANG_GUARD_S)
        assert outcome == ["created"]
        assert [topic in broker.metadata.topics for broker in brokers] == [True, True, True]
