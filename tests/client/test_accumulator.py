"""The record accumulator alone: what goes in comes out of seal() as the same records, batches
are cut at batch_size bytes and max_records, and the buffer budget blocks then raises."""

import threading
import time

import pytest

from distlog.client.accumulator import ProducerBatch, RecordAccumulator
from distlog.client.errors import BufferFullError
from distlog.log.batch import ROW_SIZE, RecordBatch
from distlog.log.batch_builder import build_batch, list_column
from distlog.log.records import batch_records


def accumulator(batch_size=64 * 1024, buffer_memory=1 << 30, max_block_s=0.2, linger_s=1.0):
    return RecordAccumulator(batch_size, buffer_memory, max_block_s, linger_s)


def seal_and_drain(acc):
    acc.seal_all()
    return acc.drain(0.0)


def sealed_records(acc):
    """Every record of every sealed batch, in order, as (partition, offset in batch, record)."""
    out = []
    for batch in seal_and_drain(acc):
        assert batch.record_count == len(batch_records(RecordBatch(batch.data)))
        out.extend((batch.partition, r) for r in batch_records(RecordBatch(batch.data)))
    return out


def test_records_come_out_of_seal_as_they_went_in_nulls_headers_and_all():
    acc = accumulator()
    records = [
        (b"v0", None, 1000, None),
        (None, b"k1", 1001, None),  # a tombstone
        (b"", b"", 1002, [("trace", b"abc")]),
        (b"v3", b"k3", 999, [("a", b""), ("b", b"\x00")]),
        (b"v4", None, 1004, None),
    ]
    futures = [acc.append("t", 0, value, key, ts, headers, None)[0] for value, key, ts, headers in records]
    got = sealed_records(acc)
    assert [(r.value, r.key, r.timestamp_ms, r.headers) for _, r in got] == [
        (value, key, ts, headers or []) for value, key, ts, headers in records
    ]
    assert [r.offset for _, r in got] == [0, 1, 2, 3, 4]
    assert [f._index for f in futures] == [0, 1, 2, 3, 4]


def test_a_batch_is_sealed_when_the_next_record_would_pass_batch_size():
    acc = accumulator(batch_size=1024)
    record_size = 100 + ROW_SIZE
    for i in range(20):
        acc.append("t", 0, bytes([i]) * 100, None, 1, None, None)
    batches = seal_and_drain(acc)
    per_batch = 1024 // record_size
    assert [b.record_count for b in batches] == [per_batch, per_batch, 20 - 2 * per_batch]
    assert all(b.size_bytes <= 1024 for b in batches)
    values = [r.value for b in batches for r in batch_records(RecordBatch(b.data))]
    assert values == [bytes([i]) * 100 for i in range(20)]


def test_tiny_records_count_their_row_against_batch_size():
    acc = accumulator(batch_size=1024)
    for _ in range(50):
        acc.append("t", 0, b"", None, 1, None, None)
    assert [b.record_count for b in seal_and_drain(acc)] == [1024 // ROW_SIZE, 50 - 1024 // ROW_SIZE]


def test_a_record_bigger_than_batch_size_travels_in_a_batch_of_its_own():
    acc = accumulator(batch_size=1024)
    acc.append("t", 0, b"a", None, 1, None, None)
    acc.append("t", 0, b"x" * 5000, None, 1, None, None)
    acc.append("t", 0, b"b", None, 1, None, None)
    batches = seal_and_drain(acc)
    assert [[r.value for r in batch_records(RecordBatch(b.data))] for b in batches] == [[b"a"], [b"x" * 5000], [b"b"]]


def test_wake_is_asked_for_when_a_batch_opens_or_seals_and_not_otherwise():
    acc = accumulator(batch_size=1024)
    wakes = [acc.append("t", 0, b"x" * 100, None, 1, None, None)[1] for _ in range(9)]
    per_batch = 1024 // (100 + ROW_SIZE)
    assert wakes == [True] + [False] * (per_batch - 1) + [True] + [False] * (9 - per_batch - 1)
    assert acc.append("t", 1, b"x", None, 1, None, None)[1], "another partition opens its own batch"


def test_partitions_keep_separate_batches():
    acc = accumulator()
    for i in range(6):
        acc.append("t", i % 2, bytes([i]), None, 1, None, None)
    acc.append("u", 0, b"other topic", None, 1, None, None)
    by_partition = {}
    for batch in seal_and_drain(acc):
        by_partition[(batch.topic, batch.partition)] = [r.value for r in batch_records(RecordBatch(batch.data))]
    assert by_partition == {("t", 0): [b"\x00", b"\x02", b"\x04"], ("t", 1): [b"\x01", b"\x03", b"\x05"],
                            ("u", 0): [b"other topic"]}


def test_callbacks_run_once_per_record_with_its_own_metadata():
    acc = accumulator()
    calls = []
    for i in range(3):
        acc.append("t", 0, b"v", None, 100 + i, None, lambda err, md: calls.append((err, md)))
    (batch,) = seal_and_drain(acc)
    batch.complete(base_offset=40)
    assert [(err, md.offset, md.timestamp_ms) for err, md in calls] == [(None, 40, 100), (None, 41, 101), (None, 42, 102)]


def test_the_buffer_budget_blocks_until_a_batch_is_released_then_raises_when_nothing_is():
    record_size = 300 + ROW_SIZE
    acc = accumulator(batch_size=1024, buffer_memory=3 * record_size, max_block_s=0.3)
    for _ in range(3):
        acc.append("t", 0, b"x" * 300, None, 1, None, None)
    with pytest.raises(BufferFullError, match="buffer_memory"):
        acc.append("t", 0, b"x" * 300, None, 1, None, None)
    (full,) = seal_and_drain(acc)
    releaser = threading.Timer(0.05, acc.release, args=[full])
    releaser.start()
    try:
        future, wake = acc.append("t", 0, b"y" * 300, None, 1, None, None)  # waits for the release
    finally:
        releaser.join()
    assert future._index == 0 and wake
    assert acc._buffered_bytes == record_size


def test_list_column_handles_all_null_no_null_and_mixed_lists():
    lengths, joined = list_column([None, None])
    assert lengths.tolist() == [-1, -1] and joined == b""
    lengths, joined = list_column([b"ab", b"", b"c"])
    assert lengths.tolist() == [2, 0, 1] and joined == b"abc"
    lengths, joined = list_column((b"ab", None, b"", None, b"xyz"))
    assert lengths.tolist() == [2, -1, 0, -1, 3] and joined == b"abxyz"


def test_a_batch_queued_by_send_batch_also_tells_the_sticky_partitioner_it_sealed():
    sealed = []
    acc = RecordAccumulator(1024, 1 << 20, 0.2, 1.0, on_sealed=lambda topic, partition: sealed.append((topic, partition)))
    acc.append("t", 0, b"x", None, 1, None, None)
    acc.seal_all()
    batch = ProducerBatch("t", 2)
    batch.data, batch.record_count = build_batch([b"y"]), 1
    batch.size_bytes = len(batch.data)
    acc.append_sealed(batch)
    assert sealed == [("t", 0), ("t", 2)]


def test_a_partition_whose_batches_wait_keeps_one_growing_batch_open_past_its_linger():
    acc = accumulator(linger_s=0.001)
    for i in range(3):
        acc.append("t", 0, b"%d" % i, None, 1000, None, None)
        acc.append("t", 1, b"%d" % i, None, 1000, None, None)
    late = time.monotonic() + 10.0  # long past every linger
    assert acc.seconds_until_ready(late, busy={("t", 0)}) == 0.0, "partition 1 is due"
    drained = acc.drain(late, busy={("t", 0)})
    assert [(b.partition, b.record_count) for b in drained] == [(1, 3)], "the busy partition's batch was sealed"
    assert acc.seconds_until_ready(late, busy={("t", 0)}) == 0.1, "a busy partition's batch is never due"
    acc.append("t", 0, b"3", None, 1000, None, None)
    [batch] = acc.drain(late)  # no longer busy: sealed, with every record it gathered
    assert (batch.partition, batch.record_count) == (0, 4)
