"""Producer limits without a broker: bad arguments, a full buffer, a dead cluster."""

import time

import pytest

from distlog.supervisor.ports import free_ports
from distlog.client import BufferFullError, Producer, RequestTimedOutError
from distlog.client.errors import ProducerClosedError


def dead_address():
    (port,) = free_ports(1)
    return f"tcp://127.0.0.1:{port}"


def test_bad_arguments_are_refused_up_front():
    with pytest.raises(ValueError, match="acks"):
        Producer(dead_address(), acks=2)
    with pytest.raises(ValueError, match="batch_size"):
        Producer(dead_address(), batch_size=10)
    with pytest.raises(ValueError, match="neither host:port nor a ZeroMQ endpoint"):
        Producer("127.0.0.1")


def test_a_full_buffer_blocks_for_max_block_ms_then_raises():
    producer = Producer(dead_address(), buffer_memory=2000, max_block_ms=300, delivery_timeout_ms=60_000)
    producer._partition_counts.counts["t"] = 1  # pretend metadata arrived; the broker is unreachable
    try:
        producer.send("t", b"x" * 1000)
        started = time.monotonic()
        with pytest.raises(BufferFullError, match="buffer_memory=2000"):
            for _ in range(10):
                producer.send("t", b"x" * 1000)
        assert time.monotonic() - started >= 0.25, "it raised without blocking for max_block_ms"
    finally:
        producer._accumulator.close()
        producer.close(timeout=2)


def test_records_for_an_unreachable_leader_fail_after_the_delivery_timeout():
    producer = Producer(dead_address(), delivery_timeout_ms=500, request_timeout_ms=300)
    producer._partition_counts.counts["t"] = 1
    try:
        future = producer.send("t", b"x")
        with pytest.raises(RequestTimedOutError):
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)


def test_values_must_be_bytes_or_str():
    producer = Producer(dead_address())
    producer._partition_counts.counts["t"] = 1
    try:
        with pytest.raises(TypeError, match="serialize"):
            producer.send("t", 12345)
    finally:
        producer.close(timeout=5)


def test_close_with_a_timeout_on_a_dead_cluster_fails_what_is_left_and_stops_the_sender():
    producer = Producer(dead_address(), delivery_timeout_ms=60_000, request_timeout_ms=300)
    producer._partition_counts.counts["t"] = 1
    future = producer.send("t", b"x")
    producer.close(timeout=0.5)  # Kafka's close(timeout): gives up on the rest, does not raise
    # Failed by close, not by the 60 s delivery timeout (that would be RequestTimedOutError).
    assert isinstance(future.exception(timeout=5), ProducerClosedError)
    producer._sender.join(5)
    assert not producer._sender.is_alive(), "the sender thread outlived close()"
    producer.flush(timeout=1)  # nothing left to wait for, and no write to a closed wake-up pipe
    with pytest.raises(ProducerClosedError):
        producer.send("t", b"y")


def test_default_batches_fit_a_default_topic_both_from_send_and_send_batch():
    """batch_size defaults to 1 MB for throughput; a batch of that size, header and headers
    included, must still pass a default topic's max.message.bytes (else every full batch of a
    busy producer would be refused)."""
    import numpy as np

    from distlog.log.config import LogConfig

    limit = LogConfig().max_message_bytes
    producer = Producer(dead_address(), max_block_ms=1000, delivery_timeout_ms=60_000)
    producer._partition_counts.counts["t"] = 1  # pretend metadata arrived; the broker is unreachable
    try:
        values = np.full((30_000, 100), 7, dtype=np.uint8)
        sizes = [len(data) for data, _ in producer._batches_for_rows(values, None, np.arange(len(values)), None)]
        assert len(sizes) > 2 and max(sizes) <= limit and min(sizes[:-1]) > 0.9 * limit
        for _ in range(12_000):  # send(): records with headers until the open batch is sealed
            producer._append("t", 0, b"v" * 90, b"key", 0, [("h", b"x" * 8)], None)
        sealed = producer._accumulator.seal_all()
        assert len(sealed) >= 2
        sizes = [len(batch.data) for batch in sealed]
        assert max(sizes) <= limit and max(sizes) > 0.8 * limit  # full, and still under the limit
    finally:
        producer._accumulator.close()
        producer.close(timeout=2)


@pytest.mark.parametrize("rows", [range(0, 25_000), range(3, 25_000, 2), range(7, 9)])
def test_send_batch_rows_become_batches_of_exactly_those_records(rows):
    """One partition's rows are a run (sliced from the caller's array, no copy) or scattered
    (keyed records spread over partitions, gathered): either way each record keeps its value,
    key and timestamp, in order, over several batches."""
    import numpy as np

    from distlog.log.batch import RecordBatch
    from distlog.log.records import batch_records

    producer = Producer(dead_address(), max_block_ms=1000, delivery_timeout_ms=60_000)
    try:
        rng = np.random.default_rng(5)
        values = rng.integers(0, 256, size=(25_000, 100), dtype=np.uint8)
        keys = rng.integers(0, 256, size=(25_000, 8), dtype=np.uint8)
        timestamps = np.arange(25_000, dtype=np.int64) + 1_700_000_000_000
        rows = np.asarray(rows)
        built = list(producer._batches_for_rows(values, keys, rows, timestamps))
        records = [r for data, count in built for r in batch_records(RecordBatch(data))]
        assert sum(count for _, count in built) == len(rows) == len(records)
        assert [r.value for r in records] == [bytes(values[i]) for i in rows]
        assert [r.key for r in records] == [bytes(keys[i]) for i in rows]
        assert [r.timestamp_ms for r in records] == timestamps[rows].tolist()
    finally:
        producer._accumulator.close()
        producer.close(timeout=2)


def test_a_bootstrap_of_host_port_means_tcp_as_kafka_users_type_it():
    from distlog.client.cluster import parse_bootstrap

    assert parse_bootstrap("127.0.0.1:9092, tcp://127.0.0.1:9093,ipc:///tmp/b") == [
        "tcp://127.0.0.1:9092", "tcp://127.0.0.1:9093", "ipc:///tmp/b"]
    assert parse_bootstrap(["localhost:1"]) == ["tcp://localhost:1"]
    for bad in ("127.0.0.1", "127.0.0.1:", ":9092", "127.0.0.1:port", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="neither host:port"):
            parse_bootstrap(bad)


@pytest.mark.parametrize("headers", [{"h1": b"x", "trace": "abc"}, [("h1", b"x"), ("trace", "abc")]])
def test_headers_given_as_a_dict_or_as_pairs_are_stored_as_given(headers):
    """A dict used to be iterated for its keys, each unpacked into a pair of characters:
    {"h1": b"x"} was stored as [("h", b"1")]."""
    from distlog.log.batch import RecordBatch
    from distlog.log.records import batch_records

    producer = Producer(dead_address(), max_block_ms=1000, delivery_timeout_ms=60_000)
    producer._partition_counts.counts["t"] = 1  # pretend metadata arrived; the broker is unreachable
    try:
        producer.send("t", b"v", partition=0, headers=headers)
        (batch,) = producer._accumulator.seal_all()
        (record,) = batch_records(RecordBatch(batch.data))
        assert record.headers == [("h1", b"x"), ("trace", b"abc")]
    finally:
        producer._accumulator.close()
        producer.close(timeout=2)
