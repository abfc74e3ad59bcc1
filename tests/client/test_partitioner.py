"""murmur2 picks the partition Kafka's default partitioner picks."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from distlog.client.partitioner import murmur2, partition_for_key, partitions_for_keys

# Values from Kafka's own tests of Utils.murmur2.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafka():
    for key, expected in KAFKA_VECTORS.items():
        assert murmur2(key) == expected, key


def test_partition_is_positive_hash_mod_count():
    assert partition_for_key(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7


@given(st.integers(1, 40), st.integers(0, 9), st.integers(1, 64))
def test_vectorized_agrees_with_scalar(rows, width, partitions):
    keys = np.random.default_rng(rows * 100 + width).integers(0, 256, size=(rows, width), dtype=np.uint8)
    expected = [partition_for_key(bytes(k), partitions) for k in keys]
    assert partitions_for_keys(keys, partitions).tolist() == expected
