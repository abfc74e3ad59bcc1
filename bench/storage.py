"""Storage engine benchmark: append, sequential read and random single-record reads of one
PartitionLog in a temp dir, then one compaction pass over a keyed copy of the same records;
prints one JSON object (--json) or a short table.

Batches are built before timing from prebuilt random values (the broker receives built
batches); append timing covers PartitionLog.append (verify crc, copy, stamp, write) and one
final flush. Every record read back is compared with what was written.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace

import click
import numpy as np

from distlog.log.batch import RecordBatch, iter_batches
from distlog.log.batch_builder import build_batch_from_arrays
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.log.records import record_at


def _build_batches(values: np.ndarray, batch_size: int, timestamp_ms: int) -> list[bytes]:
    return [
        build_batch_from_arrays(values[start : start + batch_size], timestamps_ms=timestamp_ms + start)
        for start in range(0, len(values), batch_size)
    ]


def _time_appends(log: PartitionLog, batches: list[bytes]) -> float:
    started_s = time.perf_counter()
    for batch in batches:
        log.append(batch)
    log.flush()
    return time.perf_counter() - started_s


def _time_sequential_read(log: PartitionLog, values: np.ndarray, max_bytes: int) -> tuple[float, bool]:
    """Read the whole log front to back, verify crcs, compare every value; (seconds, all equal)."""
    verified = True
    offset = log.log_start_offset
    started_s = time.perf_counter()
    while offset < log.log_end_offset:
        for batch in iter_batches(log.read(offset, max_bytes)):
            base = batch.base_offset
            got = batch.values_2d()
            if not np.array_equal(got, values[base : base + len(got)]):
                verified = False
            offset = batch.last_offset + 1
    return time.perf_counter() - started_s, verified and offset == len(values)


def _time_random_reads(log: PartitionLog, values: np.ndarray, count: int, seed: int) -> tuple[float, bool]:
    """Single-record reads at random offsets: fetch the batch holding it, pick the record out."""
    offsets = np.random.default_rng(seed).integers(0, len(values), size=count).tolist()
    verified = True
    started_s = time.perf_counter()
    for offset in offsets:
        if record_at(RecordBatch(log.read(offset, 1)), offset).value != values[offset].tobytes():
            verified = False
    return time.perf_counter() - started_s, verified


def _time_compaction(directory: str, values: np.ndarray, distinct_keys: int, args, rng) -> tuple[float, dict, bool]:
    """Append the values under random keys to a compacted log, time one compact() of its closed
    segments, and check the survivors are exactly the last record of each key there."""
    key_ids = rng.integers(0, distinct_keys, size=len(values))
    keys = np.frombuffer(b"".join(b"key-%06d" % k for k in key_ids.tolist()), dtype=np.uint8).reshape(-1, 10)
    config = LogConfig(segment_bytes=args.segment_bytes, flush_policy="never", cleanup_policy="compact")
    log = PartitionLog.open(os.path.join(directory, "compacted"), config)
    try:
        for start in range(0, len(values), args.batch_size):
            end = start + args.batch_size
            log.append(build_batch_from_arrays(values[start:end], keys[start:end], 1_700_000_000_000))
        closed_end = log.segments[-1].base_offset
        started = time.perf_counter()
        stats = log.compact()
        compact_s = time.perf_counter() - started
        survivors, offset = [], 0
        while offset < closed_end:  # a read stays within one segment: follow them
            for batch in iter_batches(log.read(offset, 64 * 1024 * 1024)):
                survivors.append(batch.arrays().offsets)
                offset = batch.last_offset + 1
        # No closed segment (a log smaller than one segment) leaves nothing to compact or check.
        kept = np.concatenate(survivors) if survivors else np.zeros(0, np.int64)
        last = {}  # the plain answer, one key at a time: fine here, outside the timing
        for offset, key_id in enumerate(key_ids[:closed_end].tolist()):
            last[key_id] = offset
        ok = sorted(kept[kept < closed_end].tolist()) == sorted(last.values())
    finally:
        log.close()
    return compact_s, {"before": stats.records_before, "after": stats.records_after}, ok


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    values = rng.integers(0, 256, size=(args.records, args.value_bytes), dtype=np.uint8)
    batches = _build_batches(values, args.batch_size, timestamp_ms=1_700_000_000_000)
    payload_mb = args.records * args.value_bytes / 1e6
    directory = tempfile.mkdtemp(prefix="distlog-bench-storage-", dir=args.parent_dir)
    try:
        config = LogConfig(segment_bytes=args.segment_bytes, flush_policy=args.flush_policy)
        log = PartitionLog.open(os.path.join(directory, "p0"), config)
        append_s = _time_appends(log, batches)
        log.close()
        # Reopen so reads go through recovery and the on-disk indexes, as after a restart.
        log = PartitionLog.open(os.path.join(directory, "p0"), config)
        sequential_s, sequential_ok = _time_sequential_read(log, values, args.read_max_bytes)
        random_s, random_ok = _time_random_reads(log, values, args.random_reads, args.seed)
        segments = len(log.segments)
        log_bytes = log.size_bytes
        log.close()
        compaction = None
        if args.compaction_keys:
            compaction = _time_compaction(directory, values, args.compaction_keys, args, rng)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result = {
        "records": args.records,
        "value_bytes": args.value_bytes,
        "batch_size": args.batch_size,
        "append_records_per_s": round(args.records / append_s),
        "append_MB_per_s": round(payload_mb / append_s, 1),
        "append_log_MB_per_s": round(log_bytes / 1e6 / append_s, 1),
        "sequential_read_records_per_s": round(args.records / sequential_s),
        "sequential_read_MB_per_s": round(payload_mb / sequential_s, 1),
        "random_reads": args.random_reads,
        "random_reads_per_s": round(args.random_reads / random_s),
        "segments": segments,
        "segment_bytes": args.segment_bytes,
        "log_bytes": log_bytes,
        "verified": bool(sequential_ok and random_ok),
    }
    if compaction is not None:
        compact_s, counts, compaction_ok = compaction
        result.update({
            "compaction_keys": args.compaction_keys,
            "compaction_records_before": counts["before"],
            "compaction_records_after": counts["after"],
            "compaction_s": round(compact_s, 3),
            "compaction_records_per_s": round(counts["before"] / compact_s) if compact_s else None,
        })
        result["verified"] = result["verified"] and compaction_ok
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--records", type=click.IntRange(min=1), default=1_000_000, show_default=True, help="records appended")
@click.option("--value-bytes", type=click.IntRange(min=1), default=100, show_default=True, help="bytes of each value")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True, help="records per batch")
@click.option("--segment-bytes", type=click.IntRange(min=1), default=16 * 1024 * 1024, show_default=True,
              help="segment.bytes of the log")
@click.option("--random-reads", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="single-record reads at random offsets")
@click.option("--read-max-bytes", type=click.IntRange(min=1), default=1024 * 1024, show_default=True,
              help="max_bytes per sequential read")
@click.option("--flush-policy", default="never", show_default=True,
              help="flush.policy during appends (one flush at the end)")
@click.option("--compaction-keys", type=click.IntRange(min=0), default=100_000, show_default=True,
              help="distinct 10-byte keys in the compaction run (0 skips it)")
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the random reads and keys")
@click.option("--dir", "parent_dir", default=None, help="parent of the temp dir (default: system temp)")
@click.option("--json", "json_output", is_flag=True, help="print one JSON object")
def main(**options):
    """Append, read back (sequentially and at random) and compact one partition log; print the rates."""
    args = SimpleNamespace(**options)
    result = run(args)
    if args.json_output:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    sys.exit(0 if result["verified"] else 1)


if __name__ == "__main__":
    main()
