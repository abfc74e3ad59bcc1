#!/usr/bin/env python3
"""distlog side by side with NATS JetStream and Redis Streams, same workload, same run.

    python bench/compare.py --records 200000 [--peers all|nats|redis|none] [--json]

The workload is the one ../shared/peers/README.md describes: N records with 8-byte random keys
and 100-byte random values made before timing, one Python producer with many records in
flight (a record counts only once acknowledged), then one Python consumer reading everything
back and checking every record. distlog runs 3 brokers on 127.0.0.1 with one topic of one
partition at --replication-factor (default 3, as the peers' R3); it is measured through
Producer.send() per record (as users call it) and through send_batch(). Each system gives one
row with the same fields; the ratios to each peer use send() and poll() (what users call), with
send_batch() beside them. A table goes to stdout, or with --json to stderr and one JSON object
`{"systems": [...], "ratios": {"nats-jetstream": {"produce", "consume", "produce_send_batch"}, ...}}`
to stdout. Broker RSS peaks are sampled during distlog's runs. `ack` says what an
acknowledgement means for each system: distlog's acks=all is a majority of the replicas with
the entry fsynced; the peers replicate to 3 copies and do not fsync per write.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import click
import numpy as np

from distlog.bench.produce import consume_records, percentile_ms, produce_with_send, produce_with_send_batch
from distlog.bench.rss import RssSampler, broker_pids
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin

PEERS_RUN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers", "run")


def timed_cpu(fn, *args, **kwargs):
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9)


def measure_distlog(records: int, flush_policy: str, replication_factor: int = 3) -> list:
    rng = np.random.default_rng(7)
    keys_2d = rng.integers(0, 256, size=(records, 8), dtype=np.uint8)
    values_2d = rng.integers(0, 256, size=(records, 100), dtype=np.uint8)
    keys = [bytes(k) for k in keys_2d]
    values = [bytes(v) for v in values_2d]
    data_root = tempfile.mkdtemp(prefix="distlog-compare-")
    brokers = []
    lines = []
    try:
        brokers = start_brokers(3, data_root, extra_args=["--config", f"flush.policy={flush_policy}"])
        bootstrap = ",".join(b.address for b in brokers)
        with Admin(bootstrap) as admin:
            admin.create_topic("compare-send", partitions=1, replication_factor=replication_factor)
            admin.create_topic("compare-batch", partitions=1, replication_factor=replication_factor)
        ack = (f"committed by {replication_factor // 2 + 1} of {replication_factor} replicas, each fsynced; idempotent producer"
               if replication_factor > 1 else
               f"the only replica's append, flush.policy={flush_policy}; idempotent producer")
        sampler = RssSampler(broker_pids(brokers))
        (elapsed, failures, latencies), cpu_produce = timed_cpu(produce_with_send, bootstrap, "compare-send", values, "all", 5, keys)
        produce_rss = sampler.stop()
        produce_anon = sampler.anon_peaks_mb()
        sampler = RssSampler(broker_pids(brokers))
        (consume_s, verified), cpu_consume = timed_cpu(consume_records, bootstrap, "compare-send", values, 600, keys)
        consume_rss = sampler.stop()
        lines.append(_line("distlog-send", records, elapsed, consume_s, latencies, failures, verified, ack,
                           cpu_produce, cpu_consume, produce_rss, consume_rss, produce_anon))
        lines[-1]["note"] = "Producer.send() per record, Consumer.poll()"
        sampler = RssSampler(broker_pids(brokers))
        (elapsed, failures, latencies), cpu_produce = timed_cpu(
            produce_with_send_batch, bootstrap, "compare-batch", values_2d, "all", 10_000, keys_2d)
        lines.append(_line("distlog-send_batch", records, elapsed, None, latencies, failures, failures == 0, ack,
                           cpu_produce, None, sampler.stop(), None, sampler.anon_peaks_mb()))
        lines[-1]["note"] = "Producer.send_batch() of 10,000-record uint8 arrays of keys and values"
    finally:
        stop_brokers(brokers)
        shutil.rmtree(data_root, ignore_errors=True)
    return lines


def _line(system, records, produce_s, consume_s, latencies, failures, verified, ack, cpu_produce, cpu_consume,
          produce_rss, consume_rss, produce_anon):
    return {
        "system": system, "records": records, "value_bytes": 100, "key_bytes": 8,
        "broker_rss_mb_peak": max(produce_rss.values()), "broker_rss_mb_peaks_produce": produce_rss,
        "broker_rss_mb_peaks_consume": consume_rss, "broker_rss_anon_mb_peak": max(produce_anon.values()),
        "produce_msgs_per_s": round(records / produce_s), "produce_MB_per_s": round(records * 100 / 1e6 / produce_s, 2),
        "consume_msgs_per_s": round(records / consume_s) if consume_s else None,
        "ack_latency_ms_p50": percentile_ms(latencies, 50), "ack_latency_ms_p99": percentile_ms(latencies, 99),
        "ack_latency_ms_max": percentile_ms(latencies, 100), "latency_unit": "per batch (first record queued -> acked)",
        "ack": ack, "failures": failures, "verified": bool(verified),
        "client_cpu_produce": round(cpu_produce, 2), "client_cpu_consume": round(cpu_consume, 2) if cpu_consume else None,
    }


def measure_peers(which: str, records: int) -> list:
    run = os.path.abspath(PEERS_RUN)
    if not os.path.exists(run):
        print(f"[compare] {run} not found; skipping peers", file=sys.stderr)
        return []
    completed = subprocess.run(["bash", run, which, "--records", str(records)], stdout=subprocess.PIPE, text=True, timeout=1800)
    if completed.returncode != 0:
        print(f"[compare] peers/run exited with {completed.returncode}", file=sys.stderr)
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def ratios_to_peers(systems: list) -> dict:
    """distlog's per-record figures (send() / poll()) over each peer's, and send_batch() beside."""
    by_name = {line["system"]: line for line in systems}
    send, batch = by_name.get("distlog-send"), by_name.get("distlog-send_batch")
    ratios = {}
    for peer in systems:
        if peer["system"].startswith("distlog") or send is None or not peer.get("produce_msgs_per_s"):
            continue
        ratio = {"produce": round(send["produce_msgs_per_s"] / peer["produce_msgs_per_s"], 2), "consume": None}
        if send.get("consume_msgs_per_s") and peer.get("consume_msgs_per_s"):
            ratio["consume"] = round(send["consume_msgs_per_s"] / peer["consume_msgs_per_s"], 2)
        if batch is not None:
            ratio["produce_send_batch"] = round(batch["produce_msgs_per_s"] / peer["produce_msgs_per_s"], 2)
        ratios[peer["system"]] = ratio
    return ratios


def table(systems: list, ratios: dict) -> str:
    def number(value):
        return "" if value is None else f"{value:,}".replace(",", " ")

    rows = [("system", "produce msg/s", "consume msg/s", "ack p99 ms", "broker RSS MB", "send() ratio produce / consume")]
    for line in systems:
        ratio = ratios.get(line["system"])
        rows.append((line["system"], number(line.get("produce_msgs_per_s")), number(line.get("consume_msgs_per_s")),
                     number(line.get("ack_latency_ms_p99")), number(line.get("broker_rss_mb_peak")),
                     f"{ratio['produce']}x / {ratio['consume']}x" if ratio else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--records", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="records each system produces and consumes")
@click.option("--peers", type=click.Choice(["all", "nats", "redis", "none"]), default="all", show_default=True,
              help="which peers ../shared/peers/run starts beside distlog")
@click.option("--flush-policy", default="always", show_default=True,
              help="for --replication-factor 1 (replicas always fsync)")
@click.option("--replication-factor", type=click.Choice(["1", "2", "3"]), default="3", show_default=True,
              help="distlog's replication factor, on 3 brokers")
@click.option("--json", "json_output", is_flag=True,
              help="print one JSON object {systems, ratios} on stdout (the table goes to stderr)")
def main(**options):
    """distlog beside NATS JetStream and Redis Streams: the same workload in the same run; a table and ratios."""
    args = SimpleNamespace(**{**options, "replication_factor": int(options["replication_factor"])})
    systems = measure_distlog(args.records, args.flush_policy, args.replication_factor)
    if args.peers != "none":
        systems.extend(measure_peers(args.peers, args.records))
    ratios = ratios_to_peers(systems)
    result = {"records": args.records, "value_bytes": 100, "key_bytes": 8,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "systems": systems, "ratios": ratios}
    if args.json_output:
        print(table(systems, ratios), file=sys.stderr)
        print(json.dumps(result))
    else:
        print(table(systems, ratios))
    ours = [line for line in systems if line["system"].startswith("distlog")]
    sys.exit(0 if all(line["verified"] for line in ours) else 1)


if __name__ == "__main__":
    main()
