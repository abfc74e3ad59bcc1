#!/usr/bin/env python3
"""Produce/consume benchmark: starts its own brokers, produces N records, reads them all back.

    python bench/produce.py --brokers 1 --replication-factor 1 --acks 1 --records 1000000 --value-bytes 100 --json

Two produce paths are measured on separate topics, as users call them:
  send       one Producer.send() per record (the API most code uses)
  send_batch Producer.send_batch() with a uint8 array (the fastest path)
and two consume paths: Consumer.poll() (records as objects) and Consumer.poll_batches()
(record batches, values checked as numpy arrays). Every record read back is compared with what
was written, in order, per partition; `verified` is true only when all of them match.
Ack latency is per batch: from its first record being queued to its acknowledgement.
Broker and client RSS peaks over the run are sampled from /proc (bench/rss.py).
Prints one JSON object (with --json) or a readable summary. Stops every broker it started.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from types import SimpleNamespace

import click
import numpy as np

from distlog.bench.rss import RssSampler, broker_pids
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.broker.metrics import ENDPOINT_FILE as METRICS_ENDPOINT_FILE
from distlog.client import Admin, Consumer, Producer


def percentile_ms(latencies_s, q):
    return round(float(np.percentile(np.asarray(latencies_s) * 1000, q)), 2) if len(latencies_s) else None


def produce_with_send(bootstrap, topic, values, acks, linger_ms, keys=None, sample_every=1000):
    """One send() per record, as applications call it: futures are not kept (every
    `sample_every`-th is, for latency); delivery is checked by reading everything back."""
    producer = Producer(bootstrap, acks=acks, linger_ms=linger_ms)
    sampled = []
    try:
        started = time.perf_counter()
        send = producer.send
        keys = keys if keys is not None else [None] * len(values)
        for i, (key, value) in enumerate(zip(keys, values)):
            future = send(topic, value, key=key, partition=0)
            if i % sample_every == 0:
                sampled.append(future)
        producer.flush(600)
        elapsed = time.perf_counter() - started
    finally:
        producer.close()
    failures = sum(1 for f in sampled if f.exception(0) is not None)
    return elapsed, failures, [f.batch_latency_s for f in sampled]


def produce_with_send_batch(bootstrap, topic, values_2d, acks, chunk_records, keys_2d=None):
    producer = Producer(bootstrap, acks=acks, linger_ms=0)
    try:
        started = time.perf_counter()
        futures = []
        for start in range(0, len(values_2d), chunk_records):
            keys = None if keys_2d is None else keys_2d[start:start + chunk_records]
            futures.extend(producer.send_batch(topic, values_2d[start:start + chunk_records], keys=keys, partition=0))
        producer.flush(600)
        elapsed = time.perf_counter() - started
    finally:
        producer.close()
    failures = sum(1 for f in futures if f.exception(0) is not None)
    return elapsed, failures, [f.batch_latency_s for f in futures]


def consume_records(bootstrap, topic, expected_values, timeout_s, expected_keys=None):
    """poll() path, checking each poll's records as they arrive (not keeping them, as an
    application would not); returns (seconds, verified)."""
    consumer = Consumer(bootstrap, fetch_max_wait_ms=100)
    try:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        next_offset, verified = 0, True
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while next_offset < len(expected_values) and time.monotonic() < deadline:
            records = consumer.poll(timeout=1.0)
            if not records:
                continue
            end = next_offset + len(records)
            verified &= records[0].offset == next_offset and records[-1].offset == end - 1
            verified &= [r.value for r in records] == expected_values[next_offset:end]
            if expected_keys is not None:
                verified &= [r.key for r in records] == expected_keys[next_offset:end]
            next_offset = end
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    return elapsed, verified and next_offset == len(expected_values)


def consume_batches(bootstrap, topic, values_2d, timeout_s):
    """poll_batches() path, values compared as arrays; returns (seconds, verified)."""
    consumer = Consumer(bootstrap, fetch_max_wait_ms=100)
    try:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        chunks, next_offset, in_order = [], 0, True
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while next_offset < len(values_2d) and time.monotonic() < deadline:
            for _tp, batch, first_offset in consumer.poll_batches(timeout=1.0):
                in_order &= batch.base_offset == next_offset and first_offset == next_offset
                chunks.append(batch.values_2d())
                next_offset = batch.last_offset + 1
        elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    got = np.concatenate(chunks) if chunks else np.zeros((0, values_2d.shape[1]), np.uint8)
    return elapsed, bool(in_order and got.shape == values_2d.shape and np.array_equal(got, values_2d))


class Scraper:
    """GET every broker's /metrics every `every_s` on a thread of its own, until stop()."""

    def __init__(self, data_dirs: list, every_s: float):
        self.urls = []
        for data_dir in data_dirs:
            with open(os.path.join(data_dir, METRICS_ENDPOINT_FILE)) as file:
                self.urls.append(file.read().strip())
        self.every_s, self.scrapes = every_s, 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            for url in self.urls:
                with urllib.request.urlopen(url, timeout=10) as response:
                    response.read()
                self.scrapes += 1

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--brokers", type=click.IntRange(min=1), default=1, show_default=True, help="brokers to start")
@click.option("--replication-factor", type=click.IntRange(min=1), default=1, show_default=True,
              help="replicas of each partition")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="1", show_default=True,
              help="the producers' acks; all makes them idempotent")
@click.option("--records", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="records per produce path")
@click.option("--value-bytes", type=click.IntRange(min=1), default=100, show_default=True, help="bytes of each value")
@click.option("--linger-ms", type=float, default=5, show_default=True, help="send()'s producer linger_ms")
@click.option("--batch-records", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="records per send_batch() call")
@click.option("--flush-policy", default="always", show_default=True,
              help="broker flush.policy: always | interval:<ms> | never")
@click.option("--paths", default="send,send_batch", show_default=True,
              help="which produce paths to run: send and/or send_batch, comma-separated")
@click.option("--timeout-s", type=float, default=600, show_default=True, help="longest a consume pass may take")
@click.option("--scrape-every-s", type=float, default=None,
              help="serve each broker's Prometheus metrics and scrape them this often, as a "
                   "supervised cluster watched by Prometheus would be (default: not served)")
@click.option("--json", "json_output", is_flag=True, help="print one JSON object")
@click.option("--shm", is_flag=True, help="producers send batches through a shared-memory ring (DISTLOG_SHM=1)")
def main(**options):
    """Produce N records on brokers of its own, read them all back, print the rates (JSON with --json)."""
    if options.pop("shm"):
        os.environ["DISTLOG_SHM"] = "1"
    args = SimpleNamespace(**options)
    paths = [p for p in args.paths.split(",") if p]
    if set(paths) - {"send", "send_batch"}:
        raise click.BadParameter("takes send and/or send_batch", param_hint="'--paths'")
    sys.exit(run(args, paths))


def run(args, paths) -> int:
    rng = np.random.default_rng(42)
    values_2d = rng.integers(0, 256, size=(args.records, args.value_bytes), dtype=np.uint8)
    values = [bytes(row) for row in values_2d] if "send" in paths else None
    acks = "all" if args.acks == "all" else int(args.acks)
    result = {
        "records": args.records, "value_bytes": args.value_bytes, "brokers": args.brokers,
        "replication_factor": args.replication_factor, "acks": args.acks, "flush_policy": args.flush_policy,
        "linger_ms": args.linger_ms, "latency_unit": "per batch (first record queued -> acknowledged)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    data_root = tempfile.mkdtemp(prefix="distlog-bench-")
    brokers, scraper, sampler = [], None, None
    broker_args = ["--config", f"flush.policy={args.flush_policy}"]
    if args.scrape_every_s is not None:
        broker_args += ["--metrics-port", "0"]
        result["scrape_every_s"] = args.scrape_every_s
    try:
        brokers = start_brokers(args.brokers, data_root, extra_args=broker_args)
        if args.scrape_every_s is not None:
            scraper = Scraper([b.data_dir for b in brokers], args.scrape_every_s)
        sampler = RssSampler({**broker_pids(brokers), "client": os.getpid()})
        bootstrap = ",".join(b.address for b in brokers)
        verified = True
        with Admin(bootstrap) as admin:
            for path in paths:
                admin.create_topic(f"bench-{path}", partitions=1, replication_factor=args.replication_factor)
        megabytes = args.records * args.value_bytes / 1e6
        for path in paths:
            topic = f"bench-{path}"
            if path == "send":
                elapsed, failures, latencies = produce_with_send(bootstrap, topic, values, acks, args.linger_ms)
                prefix = "produce"
            else:
                elapsed, failures, latencies = produce_with_send_batch(bootstrap, topic, values_2d, acks, args.batch_records)
                prefix = "produce_batch"
            result[f"{prefix}_records_per_s"] = round(args.records / elapsed)
            result[f"{prefix}_MB_per_s"] = round(megabytes / elapsed, 1)
            result[f"{prefix}_failures"] = failures
            result[f"{prefix}_ack_latency_ms_p50"] = percentile_ms(latencies, 50)
            result[f"{prefix}_ack_latency_ms_p99"] = percentile_ms(latencies, 99)
            verified &= failures == 0
        if "send" in paths:
            result["ack_latency_ms_p50"] = result["produce_ack_latency_ms_p50"]
            result["ack_latency_ms_p99"] = result["produce_ack_latency_ms_p99"]
            elapsed, ok = consume_records(bootstrap, "bench-send", values, args.timeout_s)
            result["consume_records_per_s"] = round(args.records / elapsed)
            verified &= ok
        if "send_batch" in paths:
            elapsed, ok = consume_batches(bootstrap, "bench-send_batch", values_2d, args.timeout_s)
            result["consume_batches_records_per_s"] = round(args.records / elapsed)
            verified &= ok
        result["verified"] = bool(verified)
        peaks, anon_peaks = sampler.stop(), sampler.anon_peaks_mb()
        result["client_rss_mb_peak"] = peaks.pop("client")
        anon_peaks.pop("client")
        result["broker_rss_mb_peak"] = max(peaks.values())
        result["broker_rss_mb_peaks"] = peaks
        result["broker_rss_anon_mb_peak"] = max(anon_peaks.values())  # heap and buffers: without mapped file pages
        if scraper is not None:
            result["scrapes"] = scraper.scrapes
    finally:
        if scraper is not None:
            scraper.stop()
        if sampler is not None:
            sampler.stop()
        stop_brokers(brokers)
        shutil.rmtree(data_root, ignore_errors=True)
    if args.json_output:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:40} {value}")
    return 0 if result.get("verified") else 1


if __name__ == "__main__":
    main()
