"""Backpressure on a real broker (distlog/broker/backpressure.py): a reader that never reads and
a producer that sends more than the broker may hold are refused with THROTTLING, lose nothing,
and the broker serves on; a producer facing a stuck broker blocks, then fails clearly."""

from __future__ import annotations

import os
import signal
import struct
import time

import numpy as np
import pytest
import zmq

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.broker.metrics import ENDPOINT_FILE
from distlog.client import Admin, Producer
from distlog.client.errors import BufferFullError
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import FetchRequest
from tests.integration.replication_helpers import assert_every_ack_exactly_once, read_everything, wait_for
from tests.integration.test_metrics import scrape

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

UNSENT_LIMIT_BYTES = 4 << 20
FETCH_BYTES = 1 << 20


@pytest.fixture(scope="module")
def tight_broker(tmp_path_factory):
    """One broker that may hold 20 kB of parked produces and 4 MiB of unread replies per client."""
    brokers = start_brokers(1, str(tmp_path_factory.mktemp("backpressure")), extra_args=[
        "--metrics-port", "0", "--max-parked-produce-bytes", "20000",
        "--max-unsent-reply-bytes", str(UNSENT_LIMIT_BYTES)])
    try:
        yield brokers[0]
    finally:
        stop_brokers(brokers)


def metrics_url(broker) -> str:
    with open(os.path.join(broker.data_dir, ENDPOINT_FILE)) as file:
        return file.read().strip()


def test_a_flood_of_produces_is_throttled_and_every_acknowledged_record_is_stored_once(tight_broker):
    with Admin(tight_broker.address) as admin:
        admin.create_topic("flood", partitions=2)
    values = [f"flood-{i:06d}".encode() for i in range(30_000)]
    acked, failed = {}, []
    # Small batches, many in flight: more produces arrive in one turn than the broker may park.
    producer = Producer(tight_broker.address, acks="all", linger_ms=0, batch_size=4096, max_in_flight=10)
    try:
        for value in values:
            def on_delivery(error, record, value=value):
                if error is None:
                    acked[value] = (record.partition, record.offset)
                else:
                    failed.append((value, error))
            producer.send("flood", value, callback=on_delivery)
        producer.flush(60)
        throttled = producer.metrics()["requests_throttled"]
    finally:
        producer.close()
    assert not failed, f"{len(failed)} sends failed, e.g. {failed[:2]}"
    assert len(acked) == len(values)
    assert throttled > 0, "the broker never throttled: the limit was not reached and this test proves nothing"
    assert_every_ack_exactly_once(acked, read_everything(tight_broker.address, "flood", 2, len(values)))
    samples = scrape(metrics_url(tight_broker))
    assert samples[("distlog_requests_throttled_total", (("api", "PRODUCE"),))] >= throttled


def test_a_reader_that_never_reads_is_throttled_and_others_are_served(tight_broker):
    with Admin(tight_broker.address) as admin:
        admin.create_topic("unread", partitions=1)
    producer = Producer(tight_broker.address, acks=1)
    try:
        rows = np.random.default_rng(7).integers(0, 256, size=(20_000, 500), dtype=np.uint8)  # 10 MB
        producer.send_batch("unread", rows, partition=0)
        producer.flush(60)
    finally:
        producer.close()
    fetches = 100  # 100 MB asked for, 4 MiB may wait unread
    context = zmq.Context()
    reader = context.socket(zmq.DEALER)
    reader.setsockopt(zmq.RCVHWM, 1)
    reader.setsockopt(zmq.RCVBUF, 4096)
    reader.setsockopt(zmq.LINGER, 0)
    url = metrics_url(tight_broker)
    fetch_key = (("api", "FETCH"),)
    try:
        reader.connect(tight_broker.address)
        handled_before = scrape(url).get(("distlog_requests_total", fetch_key), 0)
        for cid in range(1, fetches + 1):
            request = FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=FETCH_BYTES, partitions=[
                {"topic": "unread", "partition": 0, "fetch_offset": (cid * 150) % 20_000, "max_bytes": FETCH_BYTES}])
            reader.send_multipart([struct.pack("<Q", cid), *encode(request)])
        # Only once the broker has looked at every fetch do we read: reading frees its queue.
        wait_for(lambda: scrape(url).get(("distlog_requests_total", fetch_key), 0) - handled_before >= fetches,
                 30, "the broker handling every fetch")
        # Meanwhile a well-behaved client is served.
        assert len(read_everything(tight_broker.address, "unread", 1, 20_000)) == 20_000
        answers = []
        while len(answers) < fetches:
            assert reader.poll(10_000), f"only {len(answers)} of {fetches} answers arrived"
            answers.append(decode_response(reader.recv_multipart()[1:]))
    finally:
        reader.close()
        context.term()
    throttled = [a for a in answers if getattr(a, "error_code", 0) == ErrorCode.THROTTLING]
    served = [a for a in answers if hasattr(a, "partitions")]
    assert len(throttled) + len(served) == fetches
    # What left before the limit was reached: the limit's worth, plus what the kernel's socket
    # buffers and the reader's queue took off ZeroMQ's hands.
    assert 4 <= len(served) <= 40, f"{len(served)} one-megabyte answers were queued for a reader that read none"
    assert "read replies before fetching more" in throttled[0].error_message


def test_a_producer_facing_a_stopped_broker_blocks_then_fails_clearly(tight_broker):
    with Admin(tight_broker.address) as admin:
        admin.create_topic("stuck", partitions=1)
    producer = Producer(tight_broker.address, acks="all", buffer_memory=64_000, max_block_ms=500,
                        request_timeout_ms=30_000, delivery_timeout_ms=60_000)
    producer.send("stuck", b"first", partition=0).get(30)  # metadata and a connection, before the stop
    tight_broker.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(BufferFullError) as raised:
            for i in range(10_000):  # 1 MB: far more than buffer_memory
                producer.send("stuck", b"v" * 100, partition=0)
        blocked_s = time.monotonic() - started
    finally:
        tight_broker.process.send_signal(signal.SIGCONT)
    try:
        assert blocked_s >= 0.45, "send() raised without blocking for max_block_ms"
        assert "max_block_ms" in str(raised.value) and "buffer_memory" in str(raised.value)
    finally:
        producer.close(timeout=30)
