"""Which record is the latest of its key, found without a Python step per record: checked
against the obvious dict-based answer on generated keys (nulls, empty keys, keys that differ only
by trailing zero bytes), and the whole compaction compared between the two paths."""

from hypothesis import given, settings
from hypothesis import strategies as st

import distlog.log.compaction as compaction
from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch
from distlog.log.compaction import latest_record_mask
from tests.log.helpers import read_all, values_batch

KEYS = st.one_of(st.none(), st.binary(max_size=3).map(lambda b: b.replace(b"\x02", b"\x00")),
                 st.sampled_from([b"a", b"a\x00", b"a\x00\x00", b"\x00", b"", b"longer-key-\x00\x01"]))


def expected_mask(keys):
    last = {key: index for index, key in enumerate(keys) if key is not None}
    return [key is None or last[key] == index for index, key in enumerate(keys)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(KEYS, min_size=1, max_size=12), min_size=1, max_size=6))
def test_latest_record_mask_matches_a_dict_of_last_positions(batched_keys):
    batches = [RecordBatch(build_batch([b"v"] * len(keys), keys)) for keys in batched_keys]
    every_key = [key for keys in batched_keys for key in keys]
    assert latest_record_mask(batches).tolist() == expected_mask(every_key)


def test_a_pass_too_wide_for_the_key_matrix_falls_back_to_the_same_answer(open_log, clock, monkeypatch, tmp_path):
    def compacted(directory, matrix_limit_bytes):
        monkeypatch.setattr(compaction, "KEY_MATRIX_MAX_BYTES", matrix_limit_bytes)
        log = open_log(directory, segment_bytes=300, cleanup_policy="compact")
        for round_number in range(5):
            for key in (b"k1", b"k2\x00", b"k2", None):
                log.append(values_batch(b"%s-%d" % (key or b"none", round_number), keys=[key],
                                        timestamp_ms=clock.now_ms))
        log.compact()
        return [(r.offset, r.key, r.value) for r in read_all(log)]

    by_matrix = compacted(tmp_path / "matrix", compaction.KEY_MATRIX_MAX_BYTES)
    by_dict = compacted(tmp_path / "dict", 0)
    assert by_matrix == by_dict
    assert len(by_matrix) < 20  # something was compacted away
