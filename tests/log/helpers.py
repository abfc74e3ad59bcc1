"""Helpers for storage tests: a controllable clock and small batch builders."""

from distlog.log.batch import iter_batches
from distlog.log.batch_builder import build_batch
from distlog.log.records import batch_records


class FakeClock:
    """Milliseconds that only move when a test says so."""

    def __init__(self, now_ms: int = 1_700_000_000_000):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, delta_ms: int) -> None:
        self.now_ms += delta_ms


def values_batch(*values, keys=None, timestamp_ms=1_700_000_000_000, **fields) -> bytes:
    """A batch of the given values (bytes or None), all with one timestamp."""
    return build_batch(list(values), keys, [timestamp_ms] * len(values), **fields)


def read_all(log, start=None, max_bytes=1 << 20) -> list:
    """Every record from start (default: log start) to the end, following read() like a consumer."""
    offset = log.log_start_offset if start is None else start
    records = []
    while offset < log.log_end_offset:
        batches = list(iter_batches(log.read(offset, max_bytes)))
        assert batches, f"read({offset}) returned nothing before the log end {log.log_end_offset}"
        for batch in batches:
            records.extend(record for record in batch_records(batch) if record.offset >= offset)
            offset = batch.last_offset + 1
    return records
