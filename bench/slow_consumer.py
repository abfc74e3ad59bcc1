#!/usr/bin/env python3
"""Broker memory under a consumer that asks and never reads: bounded, and the broker serves on.

    python bench/slow_consumer.py [--fetches 20000] [--topic-mb 100] --json

Starts one broker, writes --topic-mb of 500-byte records, then a raw DEALER with a 4 KiB
receive buffer sends --fetches one-megabyte fetches (spread over the log) and reads none of
the replies. The broker's RSS (total and anonymous) is sampled while they queue and for
--settle-s after; then a normal consumer must still read from it. Last, the raw reader reads
its answers: how many carried records and how many the broker refused with THROTTLING (it
queues up to --max-unsent-reply-bytes for one reader, broker/backpressure.py). Prints one JSON
object.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time

import click
import numpy as np
import zmq

from distlog.bench.rss import RssSampler
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import FetchRequest
from distlog.transports.zmq_transport import DealerConnection

RECORD_BYTES = 500
FETCH_BYTES = 1 << 20


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--fetches", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="one-megabyte fetches sent and never read")
@click.option("--topic-mb", type=click.IntRange(min=1), default=100, show_default=True, help="size of the log read")
@click.option("--settle-s", type=float, default=2.0, show_default=True, help="how long RSS is watched after the last fetch")
@click.option("--json", "json_output", is_flag=True, help="print one JSON object")
def main(fetches, topic_mb, settle_s, json_output):
    """A consumer that sends fetches and never reads the replies: broker RSS and whether it still serves."""
    records = topic_mb * 1_000_000 // RECORD_BYTES
    data_root = tempfile.mkdtemp(prefix="distlog-slow-consumer-")
    brokers = start_brokers(1, data_root)
    try:
        broker = brokers[0]
        with Admin(broker.address) as admin:
            admin.create_topic("slow", partitions=1, replication_factor=1)
        producer = Producer(broker.address, acks=1)
        values = np.random.default_rng(1).integers(0, 256, size=(records, RECORD_BYTES), dtype=np.uint8)
        for start in range(0, records, 10_000):
            producer.send_batch("slow", values[start:start + 10_000], partition=0)
        producer.flush(120)
        producer.close()
        sampler = RssSampler({"broker": broker.process.pid}, every_s=0.05)
        reader = DealerConnection(broker.address, identity=b"slow-reader")
        reader.socket.setsockopt(zmq.RCVBUF, 4096)
        reader.socket.setsockopt(zmq.RCVHWM, 1)
        if not reader.wait_connected(10):  # requests sent before the connection is up are dropped
            raise SystemExit("the reader could not connect to the broker")
        step = max(1, records // 100)
        for i in range(fetches):
            offset = (i * step) % records
            request = FetchRequest(max_wait_ms=0, min_bytes=1, max_bytes=FETCH_BYTES, partitions=[
                {"topic": "slow", "partition": 0, "fetch_offset": offset, "max_bytes": FETCH_BYTES}])
            reader.send_request(encode(request))
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:  # a measurement window: the sampler thread watches RSS
            sampler.sample()
            time.sleep(0.05)
        peaks, anon_peaks = sampler.stop(), sampler.anon_peaks_mb()
        consumer = Consumer(broker.address)
        consumer.assign([("slow", 0)])
        consumer.seek_to_beginning()
        served, poll_deadline = 0, time.monotonic() + 30
        while served < 1000 and time.monotonic() < poll_deadline:
            served += len(consumer.poll(timeout=1.0))
        consumer.close()
        served_raw, throttled = _read_answers(reader, fetches)
        reader.close()
        result = {"fetches_sent_unread": fetches, "topic_mb": topic_mb, "broker_rss_mb_peak": peaks["broker"],
                  "broker_rss_anon_mb_peak": anon_peaks["broker"], "broker_alive": broker.process.poll() is None,
                  "still_serving": served >= 1000, "answers_with_records": served_raw,
                  "answers_throttled": throttled}
    finally:
        stop_brokers(brokers)
        shutil.rmtree(data_root, ignore_errors=True)
    print(json.dumps(result) if json_output else "\n".join(f"{k:28} {v}" for k, v in result.items()))
    sys.exit(0 if result["broker_alive"] and result["still_serving"] else 1)


def _read_answers(reader, expected: int, timeout_s: float = 60.0) -> tuple:
    """(answers carrying records, THROTTLING answers) of the fetches sent, read until all came."""
    with_records = throttled = 0
    deadline = time.monotonic() + timeout_s
    while with_records + throttled < expected and time.monotonic() < deadline:
        if not reader.socket.poll(1000):
            continue
        reply = reader.recv_reply_nowait()
        if reply is None:
            continue
        answer = decode_response(reply[1])
        if getattr(answer, "error_code", 0) == ErrorCode.THROTTLING:
            throttled += 1
        elif hasattr(answer, "partitions"):
            with_records += 1
    return with_records, throttled


if __name__ == "__main__":
    main()
