"""A broker killed with SIGKILL (no shutdown path runs) and started again: the idempotent
producer's retries land exactly once, and the producer table rebuilt from the log's last
PRODUCER_STATE_SCAN_BYTES recognises the retries of batches written before the crash."""

import collections
import threading
import time
import uuid

import pytest

from distlog.broker.launcher import restart_broker, start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer
from distlog.log.batch_builder import build_batch
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import RETRIABLE
from distlog.protocol.messages import LATEST_TIMESTAMP, ProduceRequest, ProduceResponse
from distlog.replication.replica import PRODUCER_STATE_SCAN_BYTES
from distlog.transports.zmq_transport import DealerConnection

pytestmark = pytest.mark.integration

HANG_GUARD_S = 60.0  # only for a hang; a restart takes a second or two


@pytest.fixture
def broker(tmp_path):
    brokers = start_brokers(1, str(tmp_path))
    try:
        yield brokers[0]
    finally:
        stop_brokers(brokers)


def crash_and_restart(broker):
    broker.kill()
    assert broker.process.returncode == -9
    restart_broker(broker)


def read_values(address, topic, partitions=1) -> list:
    with Admin(address) as admin:
        ends = admin.list_offsets({(topic, p): LATEST_TIMESTAMP for p in range(partitions)})
    consumer = Consumer(address, fetch_max_wait_ms=50)
    try:
        consumer.assign(list(ends))
        consumer.seek_to_beginning()
        values, deadline = [], time.monotonic() + HANG_GUARD_S
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, "hung reading the topic back"
            values.extend(r.value for r in consumer.poll(timeout=0.2))
        return values
    finally:
        consumer.close()


def test_every_acknowledged_record_is_stored_exactly_once_after_a_sigkill_mid_produce(broker):
    topic = f"crash-{uuid.uuid4().hex[:8]}"
    with Admin(broker.address) as admin:
        admin.create_topic(topic, partitions=2)
    producer = Producer(broker.address, acks="all", enable_idempotence=True, linger_ms=2,
                        request_timeout_ms=2000, delivery_timeout_ms=int(HANG_GUARD_S * 1000))
    futures, acked, stop, errors = [], [], threading.Event(), []

    def keep_sending():
        try:
            n = 0
            while not stop.is_set():
                value = b"v%06d" % n
                futures.append(producer.send(topic, value, key=b"k%d" % (n % 7),
                                             callback=lambda error, _md, v=value: error is None and acked.append(v)))
                n += 1
                stop.wait(0.001)  # a steady stream, not synchronisation
        except Exception as error:  # the assertion below reports it
            errors.append(error)

    def wait_for_acks(count, what):
        deadline = time.monotonic() + HANG_GUARD_S
        while len(acked) < count:
            assert time.monotonic() < deadline and not errors, f"{what}: {len(acked)} acks, {errors}"
            time.sleep(0.01)  # polling a condition

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_for_acks(300, "before the crash")
        broker.kill()  # SIGKILL while the stream is running
        unsettled_at_crash = sum(1 for future in list(futures) if not future.done())
        restart_broker(broker)
        wait_for_acks(len(acked) + 300, "after the restart")
    finally:
        stop.set()
        sender.join(HANG_GUARD_S)
        producer.flush(HANG_GUARD_S)
        producer.close()
    assert not errors and not sender.is_alive()
    assert unsettled_at_crash > 0, "the crash should have caught sends in flight"
    failed = [f.exception(0) for f in futures if f.exception(0) is not None]
    assert failed == [], f"{len(failed)} sends failed instead of being retried: {failed[:3]}"
    sent = {b"v%06d" % n for n in range(len(futures))}
    assert set(acked) == sent
    stored = collections.Counter(read_values(broker.address, topic, partitions=2))
    assert set(stored) == sent, "every acknowledged record is in the log, and nothing else"
    assert [v for v, count in stored.items() if count > 1] == [], "a retry was written twice"


def produce_raw(connection, topic, batch) -> dict:
    """One acks=all produce of `batch`; its partition result once it is not a retriable error."""
    request = ProduceRequest(acks=-1, timeout_ms=5000, partitions=[{"topic": topic, "partition": 0, "records": batch}])
    deadline = time.monotonic() + HANG_GUARD_S
    while True:  # right after a restart the partition may still be electing its leader
        response = decode_response(connection.request(encode(request), HANG_GUARD_S))
        assert isinstance(response, ProduceResponse), response
        (result,) = response.partitions
        if result["error_code"] not in RETRIABLE:
            return result
        assert time.monotonic() < deadline, result
        time.sleep(0.05)  # polling a condition


def idempotent_batch(producer_id, sequence, values):
    return build_batch(values, producer_id=producer_id, producer_epoch=0, base_sequence=sequence)


def log_end(address, topic) -> int:
    with Admin(address) as admin:
        return admin.list_offsets({(topic, 0): LATEST_TIMESTAMP})[(topic, 0)]


def connected(address):
    connection = DealerConnection(address)
    assert connection.wait_connected(HANG_GUARD_S)
    return connection


def test_retries_of_batches_written_before_a_sigkill_are_recognised_not_written_again(broker):
    topic = f"dedup-{uuid.uuid4().hex[:8]}"
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    batches = [idempotent_batch(77, 3 * i, [b"b%d-r%d" % (i, r) for r in range(3)]) for i in range(3)]
    connection = connected(broker.address)
    try:
        offsets = [produce_raw(connection, topic, batch) for batch in batches]
        assert [(r["error_code"], r["base_offset"]) for r in offsets] == [(0, 0), (0, 3), (0, 6)]
    finally:
        connection.close()
    crash_and_restart(broker)
    connection = connected(broker.address)
    try:
        # the acknowledgements were lost in the crash: the producer sends the same batches again
        retried = [produce_raw(connection, topic, batch) for batch in reversed(batches)]
    finally:
        connection.close()
    assert [(r["error_code"], r["base_offset"]) for r in retried] == [(0, 6), (0, 3), (0, 0)]
    assert log_end(broker.address, topic) == 9
    assert read_values(broker.address, topic) == [b"b%d-r%d" % (i, r) for i in range(3) for r in range(3)]


def test_after_a_sigkill_the_producer_table_is_rebuilt_from_the_scanned_tail_of_the_log(broker):
    topic = f"scan-{uuid.uuid4().hex[:8]}"
    with Admin(broker.address) as admin:
        admin.create_topic(topic)
    early = idempotent_batch(1, 0, [b"early"])  # producer 1 writes once, then goes quiet
    big_value = b"x" * 1_000_000
    count = PRODUCER_STATE_SCAN_BYTES // len(big_value) + 2  # more than the scan from producer 2 after it
    bulk = [idempotent_batch(2, i, [big_value]) for i in range(count)]
    connection = connected(broker.address)
    try:
        assert produce_raw(connection, topic, early)["base_offset"] == 0
        bulk_offsets = [produce_raw(connection, topic, batch)["base_offset"] for batch in bulk]
    finally:
        connection.close()
    end = log_end(broker.address, topic)
    assert end == count + 1
    crash_and_restart(broker)
    connection = connected(broker.address)
    try:
        last = produce_raw(connection, topic, bulk[-1])
        assert (last["error_code"], last["base_offset"]) == (0, bulk_offsets[-1]), "inside the scan: recognised"
        assert log_end(broker.address, topic) == end
        # Producer 1's batch lies further back than the scan: the rebuilt table does not know it, so
        # its retry counts as a new producer's and is written again, as the bound documents.
        again = produce_raw(connection, topic, early)
        assert (again["error_code"], again["base_offset"]) == (0, end), "outside the scan: forgotten"
    finally:
        connection.close()
