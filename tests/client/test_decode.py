"""Consumer-side decoding of a batch into records: the fields, and no GC work per record."""

import gc

import numpy as np
import pytest

from distlog.client.consumer import ConsumerRecord, TopicPartition, decode_batch
from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch, build_batch_from_arrays

TP = TopicPartition("t", 3)


def test_records_carry_every_field_and_start_at_the_position():
    batch = RecordBatch(build_batch([b"a", None, b"ccc"], [None, b"k1", b"k2"], [5, 6, 7], base_offset=40))
    records = decode_batch(TP, batch, 41)
    assert records == [ConsumerRecord("t", 3, 41, 6, b"k1", None, ()), ConsumerRecord("t", 3, 42, 7, b"k2", b"ccc", ())]
    assert all(type(r) is ConsumerRecord for r in records)


@pytest.mark.parametrize("enabled", [True, False])
def test_no_collection_runs_while_records_are_made_and_gc_is_left_as_it_was(enabled):
    """A collection every 700 new records was most of what decoding cost: 20 000 records would
    start ~28. One may still run before the pause (under coverage its tracer allocates too)."""
    values = np.arange(20_000 * 8, dtype=np.uint8).reshape(20_000, 8)
    batch = RecordBatch(build_batch_from_arrays(values))
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    gc.collect()
    gc.callbacks.append(count)
    try:
        records = decode_batch(TP, batch, 0)
        assert gc.isenabled() is enabled
    finally:
        gc.callbacks.remove(count)
        (gc.enable if was else gc.disable)()
    assert len(collections) <= 1, f"{len(collections)} collections while decoding"
    assert len(records) == 20_000 and records[-1].value == bytes(values[-1])
