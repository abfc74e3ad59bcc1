#!/usr/bin/env python3
"""Broker memory under a flood of producers: bounded.

    python bench/producer_flood.py [--producers 16] [--seconds 10] [--max-parked-produce-bytes N]
                                   [--stop-followers] --json

Starts 3 brokers and a topic of one partition at RF=3 and --producers producer processes
(acks=all, send_batch as fast as allowed, 1 MB batches, 10 requests in flight each) against its
leader for --seconds. The leader parks each produce until it commits; past
--max-parked-produce-bytes it answers THROTTLING instead (broker/backpressure.py). With
--stop-followers both followers are SIGSTOPped for the flood, so nothing commits: the leader
parks until it steps down (check-quorum, about a second), and the producers wait and retry.
Then every producer flushes. The leader's RSS (total and anonymous) is sampled all along.
Prints one JSON object: the peaks, the records acknowledged and failed, the requests
throttled (the producers' own count), and whether the partition holds at least every
acknowledged record.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import sys
import tempfile
import time

import click
import numpy as np

from distlog.bench.rss import RssSampler
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer

RECORD_BYTES = 100
ROWS_PER_CALL = 10_000  # 1 MB of values per send_batch


def _produce(bootstrap: str, seconds: float, results) -> None:
    """One producer process: send_batch until the flood ends, then flush; report its counters."""
    rows = np.random.default_rng().integers(0, 256, size=(ROWS_PER_CALL, RECORD_BYTES), dtype=np.uint8)
    producer = Producer(bootstrap, acks="all", linger_ms=5, max_block_ms=120_000, delivery_timeout_ms=300_000,
                        request_timeout_ms=30_000)
    deadline = time.monotonic() + seconds
    futures = []
    while time.monotonic() < deadline:  # blocks in send_batch once buffer_memory is full
        futures.extend(producer.send_batch("flood", rows, partition=0))
    producer.flush(300)
    errors = {str(error)[:160] for f in futures if (error := f.exception(0)) is not None}
    metrics = producer.metrics()
    producer.close()
    results.put({"records_sent": metrics["records_sent"], "records_failed": metrics["records_failed"],
                 "requests_throttled": metrics["requests_throttled"], "errors": sorted(errors)})


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--producers", type=click.IntRange(min=1), default=16, show_default=True, help="producer processes")
@click.option("--seconds", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="how long the producers send (and, with --stop-followers, the followers stay stopped)")
@click.option("--max-parked-produce-bytes", type=click.IntRange(min=1), default=None,
              help="the leader's bound on parked produce bytes (default: the broker's)")
@click.option("--stop-followers", is_flag=True, help="SIGSTOP both followers during the flood")
@click.option("--json", "json_output", is_flag=True, help="print one JSON object")
def main(producers, seconds, max_parked_produce_bytes, stop_followers, json_output):
    """A flood of producers against one leader: its RSS, and whether every acknowledged record is stored."""
    data_root = tempfile.mkdtemp(prefix="distlog-producer-flood-")
    extra = ["--max-parked-produce-bytes", str(max_parked_produce_bytes)] if max_parked_produce_bytes else []
    brokers = start_brokers(3, data_root, extra_args=extra)
    followers = []
    try:
        bootstrap = ",".join(b.address for b in brokers)
        with Admin(bootstrap) as admin:
            admin.create_topic("flood", partitions=1, replication_factor=3)
        leader_id = _leader(bootstrap)
        leader = next(b for b in brokers if b.broker_id == leader_id)
        followers = [b for b in brokers if b.broker_id != leader_id] if stop_followers else []
        sampler = RssSampler({"leader": leader.process.pid}, every_s=0.05)
        for follower in followers:
            follower.process.send_signal(signal.SIGSTOP)
        results = multiprocessing.get_context("spawn").Queue()
        workers = [multiprocessing.get_context("spawn").Process(target=_produce, args=(leader.address, seconds, results))
                   for _ in range(producers)]
        for worker in workers:
            worker.start()
        time.sleep(seconds)  # the flood's length: the sampler thread watches RSS meanwhile
        for follower in followers:
            follower.process.send_signal(signal.SIGCONT)
        followers = []
        reports = [results.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join(60)
        peaks, anon_peaks = sampler.stop(), sampler.anon_peaks_mb()
        sent = sum(r["records_sent"] for r in reports)
        stored = _count_records(leader.address)
        result = {"producers": producers, "seconds": seconds, "leader_rss_mb_peak": peaks["leader"],
                  "leader_rss_anon_mb_peak": anon_peaks["leader"], "records_acked": sent,
                  "records_failed": sum(r["records_failed"] for r in reports),
                  "requests_throttled": sum(r["requests_throttled"] for r in reports),
                  "errors": sorted({e for r in reports for e in r["errors"]}),
                  "records_stored": stored, "every_ack_stored": stored >= sent}
    finally:
        for follower in followers:
            follower.process.send_signal(signal.SIGCONT)
        stop_brokers(brokers)
        shutil.rmtree(data_root, ignore_errors=True)
    print(json.dumps(result) if json_output else "\n".join(f"{k:26} {v}" for k, v in result.items()))
    sys.exit(0 if result["every_ack_stored"] else 1)


def _leader(bootstrap: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with Admin(bootstrap) as admin:
            leader = admin.describe_topic("flood")["partitions"][0]["leader"]
        if leader is not None and leader >= 0:
            return leader
        time.sleep(0.1)  # polling interval of a condition
    raise SystemExit("the topic got no leader within 30 s")


def _count_records(address: str) -> int:
    """The partition's high watermark: every record stored (the topic is written by this run only)."""
    with Consumer(address) as consumer:
        consumer.assign([("flood", 0)])
        consumer.seek_to_end()
        return consumer.position(("flood", 0))


if __name__ == "__main__":
    main()
