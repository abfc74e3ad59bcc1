"""Idle cost of replication: many partitions, RF=3, 3 brokers, no traffic; CPU per broker.

    python bench/idle.py --partitions 1000 --seconds 20 --json

Starts 3 brokers on loopback, creates one topic of --partitions partitions at replication
factor 3, waits until every partition has a leader, then measures each broker process's CPU
time (user + system, psutil) over --seconds of idleness. Prints JSON; stops what it started.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from types import SimpleNamespace

import click
import psutil

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin
from distlog.protocol.messages import MetadataRequest


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--partitions", type=click.IntRange(min=1), default=1000, show_default=True,
              help="partitions of the idle topic, RF=3 on 3 brokers")
@click.option("--seconds", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="how long CPU is measured once the topic is up")
@click.option("--json", "json_output", is_flag=True, help="print only the JSON result")
def main(**options):
    """CPU and memory of 3 idle brokers holding many RF=3 partitions."""
    args = SimpleNamespace(**options)
    with tempfile.TemporaryDirectory() as root:
        brokers = start_brokers(3, root)
        try:
            with Admin(brokers[0].address, request_timeout_s=60) as admin:
                admin.create_topic("idle", partitions=args.partitions, replication_factor=3, timeout_s=60)
                deadline = time.monotonic() + 120
                while True:
                    response = admin.cluster.request_any(MetadataRequest(topics=["idle"]))
                    leaders = [p["leader"] for p in response.topics[0]["partitions"]]
                    if all(leader is not None for leader in leaders):
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"only {sum(l is not None for l in leaders)} of {len(leaders)} partitions have leaders")
                    time.sleep(0.5)
                # Preferred leaders take over a few seconds after creation: measure once that
                # has settled (leaders within 10 % of an even spread), not the moves themselves.
                settle_deadline = time.monotonic() + 60
                while time.monotonic() < settle_deadline:
                    response = admin.cluster.request_any(MetadataRequest(topics=["idle"]))
                    leaders = [p["leader"] for p in response.topics[0]["partitions"]]
                    counts = [leaders.count(b.broker_id) for b in brokers]
                    if max(counts) - min(counts) <= args.partitions * 0.1:
                        break
                    time.sleep(0.5)
            time.sleep(2)  # the last moves' reports and ISR checks
            processes = [psutil.Process(b.process.pid) for b in brokers]
            before = [p.cpu_times() for p in processes]
            started = time.monotonic()
            time.sleep(args.seconds)  # the measurement window itself
            elapsed = time.monotonic() - started
            after = [p.cpu_times() for p in processes]
            rss_mb = [round(p.memory_info().rss / 2**20, 1) for p in processes]
            cpu = [round(100 * ((a.user + a.system) - (b.user + b.system)) / elapsed, 2) for a, b in zip(after, before)]
            leaders_per_broker = {b.broker_id: leaders.count(b.broker_id) for b in brokers}
        finally:
            stop_brokers(brokers)
    result = {"partitions": args.partitions, "replication_factor": 3, "seconds": round(elapsed, 1),
              "cpu_percent_of_one_core_per_broker": cpu, "max_cpu_percent": max(cpu), "rss_mb": rss_mb,
              "leaders_per_broker": leaders_per_broker, "target_max_cpu_percent": 10}
    print(json.dumps(result) if args.json_output else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
