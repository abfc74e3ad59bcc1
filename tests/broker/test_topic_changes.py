"""Topic changes are answered once the brokers that are up have applied them."""

import uuid

from distlog.client import Admin

from tests.broker.helpers import running_brokers


def test_a_topic_created_right_after_startup_waits_for_peers_that_have_not_synced_yet(tmp_path):
    topic = f"early-{uuid.uuid4().hex[:8]}"
    with running_brokers(str(tmp_path), 3) as (brokers, _):
        with Admin(brokers[0].config.listen, request_timeout_s=5) as admin:
            admin.create_topic(topic, partitions=3)  # before brokers 2 and 3 have asked for metadata once
        assert [topic in broker.metadata.topics for broker in brokers] == [True, True, True]
