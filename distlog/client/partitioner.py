"""Choosing a partition: Kafka's murmur2 for keyed records (so a key lands where Kafka would put it).

Records without a key go to a "sticky" partition per topic that changes whenever a batch for it
is sealed, as Kafka's default partitioner does since KIP-480: batches fill up instead of
spreading one record over every partition.
"""

from __future__ import annotations

import random

import numpy as np

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) as a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length & ~3
    for i in range(0, whole, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition Kafka's default partitioner picks for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


def partitions_for_keys(keys: np.ndarray, partition_count: int) -> np.ndarray:
    """Vectorized partition_for_key for equal-length keys given as a uint8 array of shape (n, width)."""
    keys = np.ascontiguousarray(keys, dtype=np.uint8)
    n, width = keys.shape
    m = np.uint32(_M)
    with np.errstate(over="ignore"):
        h = np.full(n, (_SEED ^ width) & _MASK32, dtype=np.uint32)
        whole = width & ~3
        if whole:
            words = keys[:, :whole].copy().view("<u4")
            for column in range(whole // 4):
                k = words[:, column] * m
                k ^= k >> np.uint32(24)
                k *= m
                h = (h * m) ^ k
        tail = width & 3
        if tail == 3:
            h ^= keys[:, whole + 2].astype(np.uint32) << np.uint32(16)
        if tail >= 2:
            h ^= keys[:, whole + 1].astype(np.uint32) << np.uint32(8)
        if tail >= 1:
            h ^= keys[:, whole].astype(np.uint32)
            h *= m
        h ^= h >> np.uint32(13)
        h *= m
        h ^= h >> np.uint32(15)
    return ((h & np.uint32(0x7FFFFFFF)) % np.uint32(partition_count)).astype(np.int64)


class StickyPartitioner:
    """Per topic, the partition unkeyed records currently go to; moves on when its batch seals."""

    def __init__(self, rng: random.Random | None = None):
        self._rng = rng or random.Random()
        self._current: dict = {}

    def partition(self, topic: str, partition_count: int) -> int:
        partition = self._current.get(topic)
        if partition is None or partition >= partition_count:
            partition = self._current[topic] = self._rng.randrange(partition_count)
        return partition

    def on_batch_sealed(self, topic: str, partition: int, partition_count: int) -> None:
        if self._current.get(topic) == partition and partition_count > 1:
            self._current[topic] = (partition + self._rng.randrange(1, partition_count)) % partition_count
