"""Broker housekeeping: retention and compaction run by the broker's own loop, and a fetch whose
segments retention deletes before its reply leaves still gets intact data.

The loop runs housekeeping every server.HOUSEKEEPING_INTERVAL_S (5 s); these in-process brokers
patch the module constant so a test need not wait for it (no broker option changes for this)."""

import os
import time
import uuid

import pytest

from distlog.broker import server
from distlog.client import Admin, Consumer, Producer
from distlog.log.batch import iter_batches
from distlog.log.records import batch_records
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import EARLIEST_TIMESTAMP, ApiKey, FetchRequest
from distlog.transports.zmq_transport import DealerConnection
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0  # only for a hang: housekeeping runs every 0.05 s here
HOUR_MS = 3_600_000
OLD_MS = int(time.time() * 1000) - 48 * HOUR_MS  # past any retention.ms below


def start(tmp_path, monkeypatch, interval_s):
    monkeypatch.setattr(server, "HOUSEKEEPING_INTERVAL_S", interval_s)
    return running_brokers(str(tmp_path), 1)


def produce(address, topic, records) -> list:
    """Send (key, value, timestamp_ms) one batch each (each acknowledged before the next is
    sent, so segments roll at segment.bytes); the offsets."""
    with Producer(address, linger_ms=0, acks=1) as producer:
        return [producer.send(topic, value, key=key, timestamp_ms=ts).get(HANG_GUARD_S).offset
                for key, value, ts in records]


def log_start(address, topic) -> int:
    with Admin(address) as admin:
        return admin.list_offsets({(topic, 0): EARLIEST_TIMESTAMP})[(topic, 0)]


def read_everything(address, topic, end) -> list:
    consumer = Consumer(address, fetch_max_wait_ms=50)
    try:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        records, deadline = [], time.monotonic() + HANG_GUARD_S
        while consumer.position((topic, 0)) < end:
            assert time.monotonic() < deadline, "hung reading the partition"
            records.extend(consumer.poll(timeout=0.2))
        return records
    finally:
        consumer.close()


def segment_base_holding(data_root, topic, offset) -> int:
    """The base offset of the segment of broker 1's partition 0 that holds `offset`."""
    directory = os.path.join(data_root, "broker-1", "topics", server.partition_dir_name(topic, 0))
    bases = sorted(int(name[:-len(".log")]) for name in os.listdir(directory) if name.endswith(".log"))
    return max(base for base in bases if base <= offset)


def wait_until(condition, what):
    deadline = time.monotonic() + HANG_GUARD_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {HANG_GUARD_S} s (a hang guard)"
        time.sleep(0.05)  # polling a condition
    return value


def test_the_broker_deletes_segments_past_retention_ms_and_keeps_the_rest(tmp_path, monkeypatch):
    topic = f"r-{uuid.uuid4().hex[:8]}"
    with start(tmp_path, monkeypatch, 0.05) as (brokers, _):
        address = brokers[0].config.listen
        with Admin(address) as admin:
            admin.create_topic(topic, config={"segment.bytes": "4096", "retention.ms": str(HOUR_MS)})
        old = produce(address, topic, [(None, b"old-%d" % i + b"x" * 500, OLD_MS) for i in range(30)])
        fresh = produce(address, topic, [(None, b"fresh-%d" % i, None) for i in range(5)])
        # Retention deletes segments one housekeeping pass at a time while the fresh records roll
        # them, so the first start offset seen need not be the last: wait for the one retention
        # must end at, the base of the segment holding the first fresh record (every segment
        # before it holds only old records; nothing rolls now).
        final_start = segment_base_holding(str(tmp_path), topic, fresh[0])
        assert 0 < final_start <= fresh[0], "the old records filled more than one segment"
        start_offset = wait_until(lambda: log_start(address, topic) == final_start and final_start,
                                  "retention of every all-old segment")
        records = read_everything(address, topic, fresh[-1] + 1)
        values = {r.offset: r.value for r in records}
        assert min(values) == start_offset
        assert [values[o] for o in fresh] == [b"fresh-%d" % i for i in range(5)]
        assert all(values[o].startswith(b"old-%d" % i) for i, o in enumerate(old) if o >= start_offset)


def test_the_broker_compacts_a_compacted_topic_to_the_last_value_per_key(tmp_path, monkeypatch):
    topic = f"c-{uuid.uuid4().hex[:8]}"
    with start(tmp_path, monkeypatch, 0.05) as (brokers, _):
        address = brokers[0].config.listen
        with Admin(address) as admin:
            admin.create_topic(topic, config={"segment.bytes": "1024", "cleanup.policy": "compact"})
        written = [(b"k%d" % key, b"k%d-r%d" % (key, rnd) + b"." * 100, None) for rnd in range(8) for key in range(4)]
        offsets = produce(address, topic, written)
        by_offset = dict(zip(offsets, written))
        end = offsets[-1] + 1
        records = wait_until(lambda: (r := read_everything(address, topic, end)) and len(r) < len(written) and r,
                             "compaction")
        for record in records:  # survivors keep their offset, key and value
            assert (record.key, record.value) == by_offset[record.offset][:2]
        latest = {key: offset for offset, (key, _v, _t) in sorted(by_offset.items())}
        assert set(latest.values()) <= {r.offset for r in records}, "a key's latest value was compacted away"
        assert log_start(address, topic) == 0, "compaction deletes no offsets from the start"


def fetch(connection, topic, offset):
    request = FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
                           partitions=[{"topic": topic, "partition": 0, "fetch_offset": offset, "max_bytes": 1 << 20}])
    (entry,) = decode_response(connection.request(encode(request), HANG_GUARD_S)).partitions
    return entry


def test_a_fetch_whose_segments_retention_deletes_before_the_reply_leaves_gets_intact_data(tmp_path, monkeypatch):
    topic = f"l-{uuid.uuid4().hex[:8]}"
    # The loop's own housekeeping never runs here: the test runs it at the worst moment instead.
    with start(tmp_path, monkeypatch, 3600.0) as (brokers, _):
        broker, address = brokers[0], brokers[0].config.listen
        with Admin(address) as admin:
            admin.create_topic(topic, config={"segment.bytes": str(128 * 1024), "retention.ms": str(HOUR_MS)})
        values = [b"old-%03d-" % i + bytes([i]) * 8000 for i in range(40)]
        offsets = produce(address, topic, [(None, value, OLD_MS) for value in values])
        produce(address, topic, [(None, b"fresh", None)])
        partition_dir = os.path.join(broker.config.data_dir, "topics", f"{topic}-0")
        first_segment = os.path.join(partition_dir, "00000000000000000000.log")
        assert os.path.exists(first_segment)

        real_handle_fetch, deleted = broker.handlers[ApiKey.FETCH], []

        def fetch_then_housekeeping(peer, cid, request):
            response = real_handle_fetch(peer, cid, request)  # holds views into the segment files
            broker._housekeeping()  # retention deletes those segments before the reply is sent
            deleted.append(not os.path.exists(first_segment))
            return response

        broker.handlers[ApiKey.FETCH] = fetch_then_housekeeping
        connection = DealerConnection(address)
        try:
            assert connection.wait_connected(HANG_GUARD_S)
            entry = fetch(connection, topic, 0)
            assert deleted == [True], "retention should have deleted the first segment under the fetch"
            assert entry["error_code"] == 0 and len(entry["records"]) >= 64 * 1024  # sent zero-copy
            batches = list(iter_batches(entry["records"]))  # verifies every CRC
            got = [(r.offset, r.value) for batch in batches for r in batch_records(batch)]
            assert got and got == list(zip(offsets, values))[:len(got)]
            broker.handlers[ApiKey.FETCH] = real_handle_fetch
            gone = fetch(connection, topic, 0)
            assert gone["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE and gone["log_start_offset"] > 0
        finally:
            connection.close()
