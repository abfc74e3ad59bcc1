"""Failover time: SIGKILL a partition's leader under a steady acks=all producer, N times.

    python bench/failover.py --trials 10 --json

Starts 3 brokers on loopback and a topic of one partition at replication factor 3. A producer
(idempotent, acks="all") sends numbered records at --rate per second all along. Each trial finds
the leader, SIGKILLs it, and measures the time from the kill to the first acknowledgement after
it of a record sent after the kill (only the new leader can have given it); then it restarts the killed broker and
waits until all three replicas are in sync again. At the end one consumer reads the partition
from the start and checks every acknowledged record is there exactly once.

Prints {"trials", "failover_ms_p50", "failover_ms_max", "acked_lost", "duplicates", ...}.
Targets (DESIGN.md): p50 <= 1000 ms, max <= 3000 ms, nothing lost, nothing duplicated.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import click

from distlog.broker.launcher import restart_broker, start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer, TopicPartition
from distlog.client.connection import BrokerConnection
from distlog.protocol.messages import MetadataRequest

TOPIC = "failover"


def partition_view(address: str) -> dict | None:
    connection = BrokerConnection(address)
    try:
        return connection.request(MetadataRequest(topics=[TOPIC]), 1.0).topics[0]["partitions"][0]
    except Exception:
        return None
    finally:
        connection.close()


def agreed_leader(brokers) -> int | None:
    views = [partition_view(b.address) for b in brokers if b.process.poll() is None]
    leaders = {v["leader"] for v in views if v is not None}
    return leaders.pop() if len(leaders) == 1 and None not in leaders and len(views) == len(
        [b for b in brokers if b.process.poll() is None]) else None


def wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"failover bench: {what} did not happen within {timeout_s} s")


class Load:
    """Numbered sends at a fixed rate; remembers when each acknowledgement came."""

    def __init__(self, bootstrap: str, rate: float):
        self.producer = Producer(bootstrap, acks="all", linger_ms=1)
        self.rate = rate
        self.acks: list = []  # (monotonic time, value, offset)
        self.failed = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        started, i = time.monotonic(), 0
        while not self.stop.is_set() and i < 10_000_000:
            value = b"%010d" % i
            sent_at = time.monotonic()
            self.producer.send(TOPIC, value, partition=0,
                               callback=lambda err, md, v=value, t=sent_at: self.done(v, t, err, md))
            i += 1
            pause = started + i / self.rate - time.monotonic()
            if pause > 0:
                self.stop.wait(pause)

    def done(self, value, sent_at, err, md) -> None:
        with self.lock:
            if err is None:
                self.acks.append((time.monotonic(), value, md.offset, sent_at))
            else:
                self.failed += 1

    def first_ack_of_a_send_after(self, t: float):
        """When the first record sent after t was acknowledged: only the new leader can have
        (an ack arriving just after the kill may have left the old leader before it died)."""
        with self.lock:
            return next((at for at, _, _, sent_at in self.acks if sent_at > t), None)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True, help="leader kills to measure")
@click.option("--rate", type=click.FloatRange(min=1), default=500.0, show_default=True,
              help="records per second the producer sends")
@click.option("--json", "json_output", is_flag=True, help="print only the JSON result")
def main(**options):
    """SIGKILL a partition's leader under steady acks=all writes; time until writes are acknowledged again."""
    args = SimpleNamespace(**options)
    failovers_ms = []
    with tempfile.TemporaryDirectory() as root:
        brokers = start_brokers(3, root)
        load = None
        try:
            with Admin(brokers[0].address) as admin:
                admin.create_topic(TOPIC, partitions=1, replication_factor=3)
            wait(lambda: agreed_leader(brokers), 20, "a first leader")
            load = Load(",".join(b.address for b in brokers), args.rate)
            load.thread.start()
            wait(lambda: len(load.acks) > args.rate, 30, "a second of acknowledged writes")
            for trial in range(args.trials):
                leader_id = wait(lambda: agreed_leader(brokers), 30, "an agreed leader")
                victim = next(b for b in brokers if b.broker_id == leader_id)
                killed_at = time.monotonic()
                victim.kill()  # SIGKILL
                acked_at = wait(lambda: load.first_ack_of_a_send_after(killed_at), 30,
                                f"an ack after killing broker {leader_id}")
                failovers_ms.append(round((acked_at - killed_at) * 1000, 1))
                if not args.json_output:
                    print(f"trial {trial + 1}: broker {leader_id} killed, writes acknowledged again after "
                          f"{failovers_ms[-1]} ms", file=sys.stderr)
                restart_broker(victim, 30)
                wait(lambda: (partition_view(brokers[0].address) or {}).get("in_sync", []).__len__() == 3
                     and agreed_leader(brokers), 60, "all three replicas in sync again")
            load.stop.set()
            load.thread.join(30)
            load.producer.close(timeout=60)
            acked = {value: offset for _, value, offset, _ in load.acks}
            counts: dict = {}
            with Consumer(brokers[0].address) as consumer:
                consumer.assign([TopicPartition(TOPIC, 0)])
                consumer.seek_to_beginning()
                deadline = time.monotonic() + 60
                while sum(1 for v in counts if v in acked) < len(acked) and time.monotonic() < deadline:
                    for record in consumer.poll(timeout=0.5):
                        counts[record.value] = counts.get(record.value, 0) + 1
            lost = sum(1 for v in acked if v not in counts)
            duplicates = sum(n - 1 for n in counts.values() if n > 1)
        finally:
            if load is not None:
                load.stop.set()
            stop_brokers(brokers)
    result = {
        "trials": len(failovers_ms),
        "failover_ms_p50": statistics.median(failovers_ms),
        "failover_ms_max": max(failovers_ms),
        "failover_ms": failovers_ms,
        "acked_lost": lost,
        "duplicates": duplicates,
        "acked": len(acked),
        "failed_sends": load.failed,
        "rate_per_s": args.rate,
        "targets": {"failover_ms_p50": 1000, "failover_ms_max": 3000, "acked_lost": 0, "duplicates": 0},
    }
    print(json.dumps(result) if args.json_output else json.dumps(result, indent=1))
    sys.exit(0 if lost == 0 and duplicates == 0 else 1)


if __name__ == "__main__":
    main()
