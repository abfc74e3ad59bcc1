"""`distlog perf`: Kafka's producer/consumer/end-to-end perf tools, over the client library.

The pure parts (pacing, latency statistics, the progress and summary lines, the JSON shape)
take a clock and return values, so they are tested without sockets or sleeping; the three
run_* loops at the bottom are the thin edge that touches the cluster.

Latencies: produce measures each record's acknowledgement (send() to its callback); consume
measures end to end, the time a record is handed out minus its timestamp (same host clock, and
the record timestamp has millisecond resolution, so it reads up to 1 ms high); end-to-end
writes a sequence number into each value and keeps the send time in nanoseconds, so it needs
neither the timestamp nor its rounding.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

UNLIMITED = -1
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))
# Pacing sleeps only once a record is this far ahead of its schedule: one sleep per few records
# at 10k/s instead of a syscall each, at the cost of bursts this short.
MIN_SLEEP_S = 0.001
# Further behind than this (a stall, a GC pause), the schedule restarts rather than bursting to
# catch up: a perf run should offer a steady rate, not make up for lost time.
MAX_LAG_S = 1.0
MB = 1024 * 1024
# Records per poll: small enough that latency is measured as records are handed out.
POLL_RECORDS = 500


class RateLimiter:
    """Paces records at `records_per_s` on an absolute schedule (record n is due at start + n/rate),
    so sleep overshoot never accumulates into drift. UNLIMITED (-1) never waits."""

    def __init__(self, records_per_s: float, clock=time.monotonic, sleep=time.sleep):
        if records_per_s != UNLIMITED and records_per_s <= 0:
            raise ValueError(f"throughput must be positive or -1 (unlimited), got {records_per_s}")
        self.records_per_s = records_per_s
        self._clock, self._sleep = clock, sleep
        self._start_s: float | None = None
        self._count = 0

    def acquire(self) -> None:
        """Return when the next record may go; call once per record."""
        if self.records_per_s == UNLIMITED:
            return
        now_s = self._clock()
        if self._start_s is None:
            self._start_s = now_s
        due_s = self._start_s + self._count / self.records_per_s
        if now_s - due_s > MAX_LAG_S:
            self._start_s, self._count, due_s = now_s, 0, now_s
        self._count += 1
        ahead_s = due_s - now_s
        if ahead_s >= MIN_SLEEP_S:
            self._sleep(ahead_s)


@dataclass(frozen=True)
class Window:
    """What a progress line reports: records and bytes in an interval, their latency avg and max."""

    records: int
    elapsed_s: float
    bytes: int
    latency_ms_avg: float
    latency_ms_max: float


class LatencyRecorder:
    """Every record's latency (ms) for the final percentiles, plus a window for progress lines.
    record() may be called from another thread (the producer's callbacks run on its sender)."""

    def __init__(self, expected_records: int, clock=time.monotonic):
        self._latencies_ms = np.empty(max(expected_records, 1), dtype=np.float64)
        self._count = 0
        self.failures = 0
        self.bytes = 0
        self._lock = threading.Condition()
        self._clock = clock
        self._window_start_s = clock()
        self._window = [0, 0, 0.0, 0.0]  # records, bytes, latency sum, latency max

    @property
    def count(self) -> int:
        return self._count

    def record(self, latency_ms: float, size_bytes: int) -> None:
        with self._lock:
            if self._count == len(self._latencies_ms):
                self._latencies_ms = np.resize(self._latencies_ms, 2 * len(self._latencies_ms))
            self._latencies_ms[self._count] = latency_ms
            self._count += 1
            self.bytes += size_bytes
            window = self._window
            window[0] += 1
            window[1] += size_bytes
            window[2] += latency_ms
            if latency_ms > window[3]:
                window[3] = latency_ms
            self._lock.notify_all()

    def fail(self) -> None:
        with self._lock:
            self.failures += 1
            self._lock.notify_all()

    def wait_for(self, outcomes: int, timeout_s: float) -> bool:
        """Wait until `outcomes` records are recorded or failed: a batch's future is done before
        its records' callbacks have all run on the sender thread."""
        with self._lock:
            return self._lock.wait_for(lambda: self._count + self.failures >= outcomes, timeout_s)

    def take_window(self) -> Window:
        """The interval since the last call, and start a new one."""
        with self._lock:
            now_s = self._clock()
            records, size_bytes, total_ms, max_ms = self._window
            self._window = [0, 0, 0.0, 0.0]
            elapsed_s, self._window_start_s = now_s - self._window_start_s, now_s
        return Window(records, elapsed_s, size_bytes, total_ms / records if records else 0.0, max_ms)

    def latencies_ms(self) -> np.ndarray:
        with self._lock:
            return self._latencies_ms[:self._count].copy()


def latency_summary(latencies_ms: np.ndarray) -> dict:
    """avg, p50, p95, p99, p99_9 and max in ms (zeros when nothing was measured)."""
    if len(latencies_ms) == 0:
        return {"avg": 0.0, **{name: 0.0 for name, _ in PERCENTILES}, "max": 0.0}
    values = np.percentile(latencies_ms, [q for _, q in PERCENTILES])
    return {"avg": float(np.mean(latencies_ms)), **{name: float(v) for (name, _), v in zip(PERCENTILES, values)},
            "max": float(np.max(latencies_ms))}


def summary(records: int, elapsed_s: float, size_bytes: int, latencies_ms: np.ndarray, failures: int) -> dict:
    """The --json object: one per run."""
    per_s = records / elapsed_s if elapsed_s > 0 else 0.0
    return {"records": records, "elapsed_s": elapsed_s, "records_per_s": per_s,
            "mb_per_s": (size_bytes / MB / elapsed_s) if elapsed_s > 0 else 0.0,
            "latency_ms": latency_summary(latencies_ms), "failures": failures}


def progress_line(window: Window, verb: str = "sent") -> str:
    """Kafka's progress line: "N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency."."""
    per_s = window.records / window.elapsed_s if window.elapsed_s > 0 else 0.0
    mb_per_s = window.bytes / MB / window.elapsed_s if window.elapsed_s > 0 else 0.0
    return (f"{window.records} records {verb}, {per_s:.1f} records/sec ({mb_per_s:.2f} MB/sec), "
            f"{window.latency_ms_avg:.2f} ms avg latency, {window.latency_ms_max:.2f} ms max latency.")


def summary_line(result: dict, verb: str = "sent") -> str:
    """Kafka's final line, with p50/p95/p99/p99.9 as it prints them."""
    latency = result["latency_ms"]
    line = (f"{result['records']} records {verb}, {result['records_per_s']:.1f} records/sec "
            f"({result['mb_per_s']:.2f} MB/sec), {latency['avg']:.2f} ms avg latency, "
            f"{latency['max']:.2f} ms max latency, {latency['p50']:.2f} ms 50th, {latency['p95']:.2f} ms 95th, "
            f"{latency['p99']:.2f} ms 99th, {latency['p99_9']:.2f} ms 99.9th.")
    if result["failures"]:
        line += f" {result['failures']} failed."
    return line


class ProgressReporter:
    """Writes a progress line every interval_s; tick() is cheap enough to call per record."""

    def __init__(self, recorder: LatencyRecorder, interval_s: float, verb: str, out=sys.stderr, clock=time.monotonic):
        self._recorder, self._interval_s, self._verb, self._out, self._clock = recorder, interval_s, verb, out, clock
        self._next_s = clock() + interval_s

    def tick(self) -> None:
        now_s = self._clock()
        if now_s >= self._next_s:
            self._next_s = now_s + self._interval_s
            print(progress_line(self._recorder.take_window(), self._verb), file=self._out, flush=True)


def report(result: dict, as_json: bool, verb: str) -> None:
    """The summary: JSON on stdout for machines, Kafka's line on stdout for people."""
    print(json.dumps(result) if as_json else summary_line(result, verb), flush=True)


def payloads(record_size: int, count: int = 1024, seed: int = 0) -> list:
    """Random values, made before timing starts; records cycle through them."""
    rows = np.random.default_rng(seed).integers(0, 256, size=(count, record_size), dtype=np.uint8)
    return [row.tobytes() for row in rows]


# ----------------------------------------------------------------------------- the loops


@dataclass(frozen=True)
class ProduceSettings:
    topic: str
    num_records: int
    record_size: int
    throughput: float = UNLIMITED
    key_size: int = 0
    send_batch: bool = False
    reporting_interval_s: float = 5.0
    timeout_s: float = 30.0


class _Acked:
    """A send() callback: the record's ack latency, from the send time it was made with."""

    __slots__ = ("recorder", "sent_ns", "size")

    def __init__(self, recorder, sent_ns, size):
        self.recorder, self.sent_ns, self.size = recorder, sent_ns, size

    def __call__(self, error, _metadata):
        if error is None:
            self.recorder.record((time.perf_counter_ns() - self.sent_ns) / 1e6, self.size)
        else:
            self.recorder.fail()


def run_produce(producer, settings: ProduceSettings, out=sys.stderr) -> dict:
    """Send settings.num_records records at the paced rate; returns the summary."""
    values = payloads(settings.record_size)
    keys = payloads(settings.key_size, seed=1) if settings.key_size else None
    recorder = LatencyRecorder(settings.num_records)
    reporter = ProgressReporter(recorder, settings.reporting_interval_s, "sent", out)
    limiter = RateLimiter(settings.throughput)
    size = settings.record_size + settings.key_size
    start_s = time.monotonic()
    if settings.send_batch:
        _produce_batches(producer, settings, recorder, reporter, limiter)
    else:
        pool = len(values)
        for n in range(settings.num_records):
            limiter.acquire()
            key = keys[n % pool] if keys else None
            producer.send(settings.topic, values[n % pool], key=key,
                          callback=_Acked(recorder, time.perf_counter_ns(), size))
            reporter.tick()
    producer.flush(settings.timeout_s)
    if not settings.send_batch:
        recorder.wait_for(settings.num_records, settings.timeout_s)
    elapsed_s = time.monotonic() - start_s
    return summary(recorder.count, elapsed_s, recorder.bytes, recorder.latencies_ms(), recorder.failures)


def _produce_batches(producer, settings, recorder, reporter, limiter) -> None:
    """send_batch() in chunks of 1000 rows: latency is each chunk's first batch's ack, counted for every row."""
    chunk = 1000
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, size=(chunk, settings.record_size), dtype=np.uint8)
    keys = rng.integers(0, 256, size=(chunk, settings.key_size), dtype=np.uint8) if settings.key_size else None
    size = settings.record_size + settings.key_size
    pending = []
    for first in range(0, settings.num_records, chunk):
        rows = min(chunk, settings.num_records - first)
        for _ in range(rows):
            limiter.acquire()
        sent_ns = time.perf_counter_ns()
        futures = producer.send_batch(settings.topic, values[:rows], keys=None if keys is None else keys[:rows])
        pending.append((sent_ns, rows, futures))
        reporter.tick()
    for sent_ns, rows, futures in pending:
        try:
            for future in futures:
                future.get(timeout=settings.timeout_s)
        except Exception:  # noqa: BLE001 - a failed batch is counted, as Kafka's tool counts it
            recorder.failures += rows
            continue
        latency_ms = (time.perf_counter_ns() - sent_ns) / 1e6
        for _ in range(rows):
            recorder.record(latency_ms, size)


@dataclass(frozen=True)
class ConsumeSettings:
    topic: str
    num_records: int
    timeout_s: float = 10.0
    reporting_interval_s: float = 5.0


class ConsumeTimedOut(Exception):
    """Fewer records than asked for arrived before the timeout; carries the partial summary."""

    def __init__(self, result: dict, timeout_s: float):
        super().__init__(f"only {result['records']} record(s) arrived; none for {timeout_s:g} s")
        self.result = result


def start_consumer(consumer, topic: str, from_latest: bool) -> None:
    """Assign every partition and resolve the start positions now, so `latest` means before
    the run starts, not at the first fetch."""
    partitions = [(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    if from_latest:
        consumer.seek_to_end()
    else:
        consumer.seek_to_beginning()
    for tp in partitions:
        consumer.position(tp)


def run_consume(consumer, settings: ConsumeSettings, latency_of=None, out=sys.stderr, from_latest=False) -> dict:
    """Read settings.num_records records; latency is end to end (`latency_of(record, now_ns)`
    in ms; by default now minus the record's timestamp). Raises ConsumeTimedOut."""
    latency_of = latency_of or (lambda record, now_ns: now_ns / 1e6 - record.timestamp_ms)
    recorder = LatencyRecorder(settings.num_records)
    reporter = ProgressReporter(recorder, settings.reporting_interval_s, "consumed", out)
    start_s = last_s = time.monotonic()
    while recorder.count < settings.num_records:
        poll_start_s = time.monotonic()
        records = consumer.poll(timeout=0.1, max_records=min(POLL_RECORDS, settings.num_records - recorder.count))
        now_ns = time.time_ns()
        now_s = time.monotonic()
        for record in records:
            recorder.record(latency_of(record, now_ns), len(record.value or b"") + len(record.key or b""))
        if records:
            if from_latest and recorder.count == len(records):
                # with --from latest the clock starts at the poll that brought the first record:
                # waiting for a producer to start is not consume time
                start_s = poll_start_s
            last_s = now_s
        elif now_s - last_s > settings.timeout_s:
            result = summary(recorder.count, last_s - start_s, recorder.bytes, recorder.latencies_ms(), 0)
            raise ConsumeTimedOut(result, settings.timeout_s)
        reporter.tick()
    return summary(recorder.count, last_s - start_s, recorder.bytes, recorder.latencies_ms(), 0)


SEQUENCE_BYTES = 8


def run_end_to_end(producer, consumer, topic: str, num_records: int, throughput: float, record_size: int,
                   reporting_interval_s: float = 5.0, timeout_s: float = 10.0, out=sys.stderr) -> dict:
    """A paced producer thread and a consumer in this one; latency is consume time minus send
    time, matched by the sequence number in each value's first 8 bytes."""
    if record_size < SEQUENCE_BYTES:
        raise ValueError(f"end-to-end needs --record-size of at least {SEQUENCE_BYTES} (the sequence number)")
    start_consumer(consumer, topic, from_latest=True)
    sent_ns = np.zeros(num_records, dtype=np.int64)
    tail = payloads(record_size - SEQUENCE_BYTES)
    failures = []

    def produce():
        limiter = RateLimiter(throughput)
        for n in range(num_records):
            limiter.acquire()
            sent_ns[n] = time.perf_counter_ns()
            producer.send(topic, n.to_bytes(SEQUENCE_BYTES, "little") + tail[n % len(tail)],
                          callback=lambda error, _m: error is not None and failures.append(error))

    def latency_of(record, _now_ns):
        n = int.from_bytes(record.value[:SEQUENCE_BYTES], "little")
        return (time.perf_counter_ns() - sent_ns[n]) / 1e6

    thread = threading.Thread(target=produce, name="perf-producer", daemon=True)
    thread.start()
    try:
        result = run_consume(consumer, ConsumeSettings(topic, num_records, timeout_s, reporting_interval_s),
                             latency_of, out, from_latest=True)
    finally:
        thread.join()
    result["failures"] = len(failures)
    return result
