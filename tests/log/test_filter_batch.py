"""Compaction's batch filter: the kept records come back exactly, at their original offsets,
and the batch keeps its span, term and producer fields."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch
from distlog.log.compaction import filter_batch
from distlog.log.records import batch_records
from tests.log.strategies import record_lists


@settings(max_examples=100, deadline=None)
@given(record_lists(), st.data())
def test_filter_batch_keeps_exactly_the_chosen_records_and_the_span(records, data):
    values, keys, timestamps, headers = records
    batch = RecordBatch(build_batch(values, keys, timestamps, headers, base_offset=100, leader_term=4, producer_id=5))
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    filtered = RecordBatch(filter_batch(batch, keep))
    filtered.verify()
    assert batch_records(filtered) == [record for record, kept in zip(batch_records(batch), keep) if kept]
    assert (filtered.base_offset, filtered.last_offset, filtered.leader_term, filtered.producer_id) == (
        100, 100 + len(values) - 1, 4, 5
    )
