"""A damaged batch in one partition costs only that partition (issue #12): the fetch answers
CORRUPT_MESSAGE for it alone, compaction that reads damage sends it to repair instead of
killing the broker, and a sole copy that cannot be repaired stays offline saying why.

In-process brokers (tests/broker/helpers.py) so the test can flip bits in their files."""

import os
import uuid

import pytest

from distlog.broker import server
from distlog.client import Admin
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import FetchRequest
from distlog.transports.zmq_transport import DealerConnection
from tests.broker.helpers import running_brokers
from tests.broker.test_housekeeping import HANG_GUARD_S, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _fetch(connection, topics):
    request = FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                           partitions=[{"topic": t, "partition": 0, "fetch_offset": 0, "max_bytes": 1 << 20}
                                       for t in topics])
    return decode_response(connection.request(encode(request), HANG_GUARD_S)).partitions


def _flip_in_first_segment(broker, topic):
    path = os.path.join(broker.config.data_dir, "topics", f"{topic}-0", "00000000000000000000.log")
    with open(path, "r+b") as f:
        f.seek(100)  # the payload of the first batch (its header is 61 bytes, its table 24 per record)
        byte = f.read(1)[0]
        f.seek(100)
        f.write(bytes([byte ^ 0x08]))
    return path


def test_a_damaged_partition_fails_only_its_own_part_of_a_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "HOUSEKEEPING_INTERVAL_S", 3600.0)  # no scrub: the fetch finds it
    damaged, sound = f"d-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"
    with running_brokers(str(tmp_path), 1) as (brokers, threads):
        broker, address = brokers[0], brokers[0].config.listen
        with Admin(address) as admin:
            for topic in (damaged, sound):
                admin.create_topic(topic, config={"segment.bytes": "2048"})
        for topic in (damaged, sound):
            produce(address, topic, [(None, b"r%02d-" % i + b"v" * 300, None) for i in range(12)])
        _flip_in_first_segment(broker, damaged)
        connection = DealerConnection(address)
        try:
            by_topic = {entry["topic"]: entry for entry in _fetch(connection, [damaged, sound])}
            assert by_topic[damaged]["error_code"] == ErrorCode.CORRUPT_MESSAGE
            assert "damaged" in by_topic[damaged]["error_message"] and by_topic[damaged]["records"] == b""
            assert by_topic[sound]["error_code"] == 0 and len(by_topic[sound]["records"]) > 0
            # The damaged replica went to repair; being the only copy it cannot, so it stays
            # offline and says why, and the broker keeps serving the rest.
            answer = wait_until(lambda: (e := {x["topic"]: x for x in _fetch(connection, [damaged, sound])})
                                and e[damaged]["error_code"] == ErrorCode.STORAGE_ERROR and e, "the repair started")
            assert "only replica" in answer[damaged]["error_message"]
            assert answer[sound]["error_code"] == 0
        finally:
            connection.close()
        assert threads[0].is_alive()
        quarantine = os.path.join(broker.config.data_dir, "topics", f"{damaged}-0", "quarantine")
        assert len(os.listdir(quarantine)) == 1


def test_compaction_that_reads_damage_keeps_the_broker_up(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "HOUSEKEEPING_INTERVAL_S", 0.05)
    topic = f"c-{uuid.uuid4().hex[:8]}"
    with running_brokers(str(tmp_path), 1) as (brokers, threads):
        broker, address = brokers[0], brokers[0].config.listen
        with Admin(address) as admin:
            admin.create_topic(topic, config={"segment.bytes": "1024", "cleanup.policy": "compact"})
        produce(address, topic, [(b"k%d" % (i % 3), b"v%02d" % i + b"." * 100, None) for i in range(24)])
        # Flipped in the page cache: the loop's next housekeeping turn compacts the closed
        # segments first (then scrubs them) and reads it.
        _flip_in_first_segment(broker, topic)
        replica = wait_until(lambda: broker.replicas.get((topic, 0)) is not None
                             and broker.replicas[(topic, 0)].log.damage is not None
                             and broker.replicas[(topic, 0)], "the replica reopened for repair")
        damage = replica.log.damage
        assert replica.log.log_end_offset == damage.offset < damage.held_until == 24  # all quarantined, none lost
        assert threads[0].is_alive()
