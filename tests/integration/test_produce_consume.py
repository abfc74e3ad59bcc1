"""Produce and consume through real broker processes with the client library."""

import subprocess
import sys
import time
import uuid

import numpy as np
import psutil
import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, DistlogError, ErrorCode, Producer, RequestTimedOutError, TopicPartition
from distlog.client.probe import ping
from distlog.log.batch import iter_batches
from distlog.log.records import batch_records
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.messages import (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, ApiVersionsRequest, FetchRequest,
                                       FetchResponse)
from distlog.supervisor.ports import free_ports
from distlog.transports.zmq_transport import DealerConnection

pytestmark = pytest.mark.integration

# Deadlines in this file only stop a hung test; a healthy broker answers in milliseconds.
HANG_GUARD_S = 30.0


def new_topic(admin, partitions=1, **config):
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin.create_topic(name, partitions=partitions, config=config)
    return name


def consume_all(bootstrap, topic, partitions, expected, timeout_s=HANG_GUARD_S):
    consumer = Consumer(bootstrap, fetch_max_wait_ms=100)
    try:
        consumer.assign([(topic, p) for p in range(partitions)])
        records = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=0.5))
        return records
    finally:
        consumer.close()


def test_records_come_back_in_order_with_keys_values_headers_and_nulls(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
    with Producer(one_broker.address, acks="all", linger_ms=1) as producer:
        sent = [
            producer.send(topic, b"v0", key=b"k0"),
            producer.send(topic, None, key=b"tombstone"),
            producer.send(topic, b"v2", headers=[("trace", b"abc")]),
            producer.send(topic, "text value", key="text key"),
        ]
        offsets = [f.get(timeout=10).offset for f in sent]
    assert offsets == [0, 1, 2, 3]
    records = consume_all(one_broker.address, topic, 1, 4)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, b"k0", b"v0"), (1, b"tombstone", None), (2, None, b"v2"), (3, b"text key", b"text value")]
    assert records[2].headers == [("trace", b"abc")]


def test_many_records_round_trip_through_send_and_send_batch(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin, partitions=3)
    values = [f"value-{i}".encode() for i in range(5000)]
    with Producer(one_broker.address, acks=1, linger_ms=2, batch_size=16 * 1024) as producer:
        futures = [producer.send(topic, v, key=str(i % 50).encode()) for i, v in enumerate(values)]
        array_values = np.random.default_rng(1).integers(0, 256, size=(3000, 20), dtype=np.uint8)
        batch_futures = producer.send_batch(topic, array_values, partition=1)
        producer.flush(30)
    assert all(f.get(0).offset >= 0 for f in futures)
    assert all(f.get(0).partition == 1 for f in batch_futures)
    records = consume_all(one_broker.address, topic, 3, 8000)
    assert len(records) == 8000
    assert sorted(r.value for r in records if len(r.value) != 20) == sorted(values)
    per_partition = {}
    for r in records:
        per_partition.setdefault(r.partition, []).append(r.offset)
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))
    # a key always maps to the same partition
    by_key = {}
    for r in records:
        if r.key is not None:
            by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    batch_values = [r.value for r in records if r.partition == 1 and len(r.value) == 20]
    assert batch_values == [bytes(row) for row in array_values]


def test_acks_zero_sends_without_waiting_for_offsets(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
    with Producer(one_broker.address, acks=0) as producer:
        futures = [producer.send(topic, b"x%d" % i) for i in range(100)]
        producer.flush(10)
    assert all(f.get(0).offset == -1 for f in futures)
    assert len(consume_all(one_broker.address, topic, 1, 100)) == 100


def fetch_request(topic, offset, max_wait_ms, min_bytes=1):
    return FetchRequest(max_wait_ms=max_wait_ms, min_bytes=min_bytes, max_bytes=1 << 20,
                        partitions=[{"topic": topic, "partition": 0, "fetch_offset": offset, "max_bytes": 1 << 20}])


def fetched_values(response) -> list:
    assert isinstance(response, FetchResponse), response
    (entry,) = response.partitions
    assert entry["error_code"] == 0, entry
    return [r.value for batch in iter_batches(entry["records"]) for r in batch_records(batch)]


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_a_long_poll_waits_out_max_wait_without_spinning(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
    broker = psutil.Process(one_broker.process.pid)
    max_wait_s = 2.0
    connection = DealerConnection(one_broker.address)
    try:
        assert connection.wait_connected(HANG_GUARD_S)
        cpu_before_s, started_s = cpu_s(broker), time.monotonic()
        reply = connection.request(encode(fetch_request(topic, 0, int(max_wait_s * 1000))), HANG_GUARD_S)
        waited_s, cpu_used_s = time.monotonic() - started_s, cpu_s(broker) - cpu_before_s
    finally:
        connection.close()
    assert fetched_values(decode_response(reply)) == []
    assert waited_s >= max_wait_s, "an empty partition was answered before max_wait_ms"
    # A loop that polled the partition instead of parking the fetch would burn a whole core
    # (CPU time close to the wait); an idle broker uses a few per cent. Stated generously.
    assert cpu_used_s < 0.25 * waited_s, f"the broker used {cpu_used_s:.2f} s of CPU in a {waited_s:.2f} s wait"


def test_a_long_poll_wakes_on_an_append_not_on_max_wait(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
    connection = DealerConnection(one_broker.address)
    producer = Producer(one_broker.address, linger_ms=0)
    try:
        assert connection.wait_connected(HANG_GUARD_S)
        # max_wait is twice the hang guard: a reply within the guard was woken by the append.
        cid = connection.send_request(encode(fetch_request(topic, 0, int(2 * HANG_GUARD_S * 1000))))
        assert cid is not None
        assert producer.send(topic, b"late").get(HANG_GUARD_S).offset == 0
        reply = wait_for_reply(connection, cid)
    finally:
        producer.close()
        connection.close()
    assert fetched_values(decode_response(reply)) == [b"late"]


def wait_for_reply(connection, cid, timeout_s=HANG_GUARD_S):
    deadline = time.monotonic() + timeout_s
    while True:
        assert time.monotonic() < deadline, f"no reply to request {cid} within {timeout_s} s"
        if connection.socket.poll(50):
            reply = connection.recv_reply_nowait()
            if reply is not None and reply[0] == cid:
                return reply[1]


def replies_up_to(connection, cid, timeout_s=HANG_GUARD_S) -> dict:
    """cid -> reply frames of every reply that arrives up to and including `cid`'s."""
    deadline, replies = time.monotonic() + timeout_s, {}
    while cid not in replies:
        assert time.monotonic() < deadline, f"no reply to request {cid} within {timeout_s} s"
        if connection.socket.poll(50):
            reply = connection.recv_reply_nowait()
            if reply is not None:
                replies[reply[0]] = reply[1]
    return replies


def test_a_long_poll_with_min_bytes_waits_until_that_many_bytes_are_there(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
    connection = DealerConnection(one_broker.address)
    producer = Producer(one_broker.address, linger_ms=0)
    try:
        assert connection.wait_connected(HANG_GUARD_S)
        assert producer.send(topic, b"small-1").get(HANG_GUARD_S).offset == 0
        fetch_cid = connection.send_request(encode(fetch_request(topic, 0, int(2 * HANG_GUARD_S * 1000), min_bytes=2000)))
        for small in (b"small-2", b"small-3"):
            # Still short of min_bytes. A reply sent by now would arrive before the ping's: one
            # connection delivers in order, and the broker handles the ping after the append.
            producer.send(topic, small).get(HANG_GUARD_S)
            ping_cid = connection.send_request(encode(ApiVersionsRequest()))
            assert fetch_cid not in replies_up_to(connection, ping_cid), "answered short of min_bytes"
        producer.send(topic, b"big" * 1000).get(HANG_GUARD_S)
        reply = wait_for_reply(connection, fetch_cid)  # its max_wait is past the hang guard
    finally:
        producer.close()
        connection.close()
    assert fetched_values(decode_response(reply)) == [b"small-1", b"small-2", b"small-3", b"big" * 1000]


def test_a_long_poll_short_of_min_bytes_gets_what_there_is_at_max_wait(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
    with Producer(one_broker.address, linger_ms=0) as producer:
        producer.send(topic, b"only").get(HANG_GUARD_S)
    max_wait_s = 1.0
    connection = DealerConnection(one_broker.address)
    try:
        assert connection.wait_connected(HANG_GUARD_S)
        started_s = time.monotonic()
        reply = connection.request(encode(fetch_request(topic, 0, int(max_wait_s * 1000), min_bytes=1 << 20)),
                                   HANG_GUARD_S)
        waited_s = time.monotonic() - started_s
    finally:
        connection.close()
    assert fetched_values(decode_response(reply)) == [b"only"]
    assert waited_s >= max_wait_s, "answered short of min_bytes before max_wait_ms"


def test_list_offsets_and_seek(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin)
        with Producer(one_broker.address) as producer:
            for i in range(10):
                producer.send(topic, b"%d" % i, timestamp_ms=1_000_000 + i * 1000)
        offsets = admin.list_offsets({(topic, 0): EARLIEST_TIMESTAMP})
        assert offsets == {(topic, 0): 0}
        assert admin.list_offsets({(topic, 0): LATEST_TIMESTAMP}) == {(topic, 0): 10}
        assert admin.list_offsets({(topic, 0): 1_004_500}) == {(topic, 0): 5}
        assert admin.list_offsets({(topic, 0): 9_999_999}) == {(topic, 0): -1}
    consumer = Consumer(one_broker.address)
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek((topic, 0), 7)
        records, deadline = [], time.monotonic() + HANG_GUARD_S
        while len(records) < 3 and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout=2))
        assert [r.value for r in records] == [b"7", b"8", b"9"]
        assert consumer.position((topic, 0)) == 10
    finally:
        consumer.close()


def test_unknown_topic_and_bad_topic_requests_fail_clearly(one_broker):
    with Admin(one_broker.address) as admin:
        with pytest.raises(DistlogError) as info:
            admin.describe_topic("no-such-topic")
        assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        topic = new_topic(admin)
        with pytest.raises(DistlogError) as info:
            admin.create_topic(topic)
        assert info.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
        with pytest.raises(DistlogError) as info:
            admin.create_topic("bad/name")
        assert info.value.code == ErrorCode.INVALID_TOPIC
        with pytest.raises(DistlogError) as info:
            admin.create_topic("rf-too-big", replication_factor=3)
        assert info.value.code == ErrorCode.INVALID_REPLICATION_FACTOR
        with pytest.raises(DistlogError) as info:
            admin.create_topic("bad-config", config={"cleanup.policy": "shred"})
        assert info.value.code == ErrorCode.INVALID_CONFIG and "cleanup.policy" in str(info.value)
    with Producer(one_broker.address, max_block_ms=5000) as producer:
        with pytest.raises(DistlogError) as info:
            producer.send("no-such-topic", b"x")
        assert info.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert "distlog topic create" in str(info.value)


def test_record_over_max_message_bytes_is_refused_and_others_still_land(one_broker):
    with Admin(one_broker.address) as admin:
        topic = new_topic(admin, **{"max.message.bytes": "2000"})
    with Producer(one_broker.address, linger_ms=0) as producer:
        big = producer.send(topic, b"x" * 5000)
        with pytest.raises(DistlogError) as info:
            big.get(10)
        assert info.value.code == ErrorCode.MESSAGE_TOO_LARGE
        assert producer.send(topic, b"small").get(10).offset == 0


def test_acknowledged_data_survives_a_broker_crash(tmp_path):
    brokers = start_brokers(1, str(tmp_path))
    try:
        with Admin(brokers[0].address) as admin:
            topic = new_topic(admin, partitions=2)
        with Producer(brokers[0].address) as producer:
            futures = [producer.send(topic, b"%d" % i, key=b"%d" % i) for i in range(100)]
            assert all(f.get(HANG_GUARD_S).offset >= 0 for f in futures)
        brokers[0].kill()  # SIGKILL: no shutdown path runs, only what the acks promised is on disk
        assert brokers[0].process.returncode == -9
    finally:
        stop_brokers(brokers)
    brokers = start_brokers(1, str(tmp_path))
    try:
        records = consume_all(brokers[0].address, topic, 2, 100)
        assert sorted(int(r.value) for r in records) == list(range(100))
    finally:
        stop_brokers(brokers)


def test_a_dead_address_times_out_with_a_clear_error():
    (port,) = free_ports(1)
    with pytest.raises(RequestTimedOutError, match="is the cluster running"):
        Admin(f"tcp://127.0.0.1:{port}", request_timeout_s=1).list_topics()
    producer = Producer(f"tcp://127.0.0.1:{port}", max_block_ms=1000, request_timeout_ms=1000)
    try:
        with pytest.raises(RequestTimedOutError):  # after max_block_ms, waiting for metadata
            producer.send("t", b"x")
    finally:
        producer.close(5)


def test_partitions_spread_over_three_brokers_and_clients_follow_leaders(three_brokers):
    bootstrap = three_brokers[1].address  # not the controller: topic creation must still work
    with Admin(bootstrap) as admin:
        topic = new_topic(admin, partitions=6)
        description = admin.describe_topic(topic)
    leaders = {p["leader"] for p in description["partitions"]}
    assert leaders == {1, 2, 3}
    with Producer(bootstrap, linger_ms=1) as producer:
        futures = [producer.send(topic, b"%d" % i, key=b"%d" % i) for i in range(600)]
        producer.flush(20)
    assert {f.get(0).partition for f in futures} == set(range(6))
    records = consume_all(bootstrap, topic, 6, 600)
    assert sorted(int(r.value) for r in records) == list(range(600))
    with Admin(bootstrap) as admin:
        described = admin.describe_topic(topic)
        assert sum(p["high_watermark"] for p in described["partitions"]) == 600
        admin.delete_topic(topic)
        assert topic not in admin.list_topics()


def test_the_broker_serves_over_ipc(tmp_path):
    endpoint = f"ipc://{tmp_path}/broker.sock"
    process = subprocess.Popen([sys.executable, "-m", "distlog.broker", "--id", "1", "--data-dir", str(tmp_path / "data"),
                                "--listen", endpoint], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while ping(endpoint, 0.3) is None:
            assert time.monotonic() < deadline and process.poll() is None, "broker did not come up on ipc"
        with Admin(endpoint) as admin:
            admin.create_topic("over-ipc")
        with Producer(endpoint) as producer:
            assert producer.send("over-ipc", b"hello").get(10).offset == 0
        assert [r.value for r in consume_all(endpoint, "over-ipc", 1, 1)] == [b"hello"]
    finally:
        process.terminate()
        try:
            process.wait(HANG_GUARD_S)
        except subprocess.TimeoutExpired:  # never leave it running, whatever the test found
            process.kill()
            process.wait(HANG_GUARD_S)
    assert process.returncode == 0, "SIGTERM should stop the broker cleanly"
