"""distlog perf's pure parts: pacing with an injected clock, percentiles, the lines and the JSON."""

import io
import json

import numpy as np
import pytest

from distlog import perf


class FakeClock:
    """A clock that moves only when the code under test sleeps (or a test advances it)."""

    def __init__(self):
        self.now_s = 100.0
        self.slept_s = []

    def __call__(self):
        return self.now_s

    def sleep(self, seconds):
        self.slept_s.append(seconds)
        self.now_s += seconds


def test_rate_limiter_holds_the_rate_without_drift_when_sleeps_overshoot():
    clock = FakeClock()

    def late_sleep(seconds):  # every sleep 20% long, as a loaded machine's are
        clock.sleep(seconds * 1.2)

    limiter = perf.RateLimiter(10_000, clock=clock, sleep=late_sleep)
    for _ in range(100_000):
        limiter.acquire()
    elapsed_s = clock.now_s - 100.0
    # 100k records at 10k/s is 10 s; overshoot is absorbed by the schedule, not accumulated.
    assert 9.99 <= elapsed_s <= 10.01
    assert all(s >= perf.MIN_SLEEP_S for s in clock.slept_s)
    assert len(clock.slept_s) < 100_000 / 5  # sleeps pace groups of records, not each one


def test_rate_limiter_does_not_sleep_when_behind_and_restarts_after_a_stall():
    clock = FakeClock()
    limiter = perf.RateLimiter(1000, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        limiter.acquire()
    clock.now_s += 5.0  # a stall far past MAX_LAG_S
    slept_before = sum(clock.slept_s)
    limiter.acquire()
    assert sum(clock.slept_s) == slept_before  # no sleep when behind
    start_s = clock.now_s
    for _ in range(1000):
        limiter.acquire()
    # after the restart the next 1000 records take ~1 s, rather than bursting to catch up 5 s
    assert 0.99 <= clock.now_s - start_s <= 1.01


def test_unlimited_never_sleeps_and_bad_rates_are_refused():
    clock = FakeClock()
    limiter = perf.RateLimiter(perf.UNLIMITED, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        limiter.acquire()
    assert clock.slept_s == []
    for rate in (0, -2, -0.5):
        with pytest.raises(ValueError):
            perf.RateLimiter(rate)


def test_percentiles_of_known_latencies():
    latencies = np.arange(1, 1001, dtype=np.float64)  # 1..1000 ms
    summary = perf.latency_summary(latencies)
    assert summary["avg"] == pytest.approx(500.5)
    assert summary["p50"] == pytest.approx(500.5)
    assert summary["p95"] == pytest.approx(950.05)
    assert summary["p99"] == pytest.approx(990.01)
    assert summary["p99_9"] == pytest.approx(999.001)
    assert summary["max"] == 1000.0
    assert perf.latency_summary(np.array([]))["p99"] == 0.0


def test_recorder_grows_past_its_expected_count_and_windows_reset():
    clock = FakeClock()
    recorder = perf.LatencyRecorder(2, clock=clock)
    for latency in (1.0, 3.0, 8.0):
        recorder.record(latency, 100)
    clock.now_s += 2.0
    window = recorder.take_window()
    assert (window.records, window.bytes, window.latency_ms_avg, window.latency_ms_max) == (3, 300, 4.0, 8.0)
    assert window.elapsed_s == 2.0
    assert recorder.take_window().records == 0
    assert list(recorder.latencies_ms()) == [1.0, 3.0, 8.0]


def test_progress_and_summary_lines_have_kafkas_shape():
    window = perf.Window(records=50_000, elapsed_s=5.0, bytes=50_000 * 100, latency_ms_avg=3.25, latency_ms_max=40.5)
    assert perf.progress_line(window) == ("50000 records sent, 10000.0 records/sec (0.95 MB/sec), "
                                          "3.25 ms avg latency, 40.50 ms max latency.")
    result = perf.summary(1000, 2.0, 1000 * 1024, np.arange(1, 1001, dtype=np.float64), 0)
    line = perf.summary_line(result, "consumed")
    assert line.startswith("1000 records consumed, 500.0 records/sec (0.49 MB/sec), 500.50 ms avg latency, "
                           "1000.00 ms max latency, 500.50 ms 50th, 950.05 ms 95th, 990.01 ms 99th, 999.00 ms 99.9th.")
    assert "failed" not in line
    assert perf.summary_line({**result, "failures": 3}).endswith(" 3 failed.")


def test_json_summary_shape():
    result = perf.summary(20, 4.0, 2 * perf.MB, np.ones(20), 1)
    decoded = json.loads(json.dumps(result))
    assert set(decoded) == {"records", "elapsed_s", "records_per_s", "mb_per_s", "latency_ms", "failures"}
    assert set(decoded["latency_ms"]) == {"avg", "p50", "p95", "p99", "p99_9", "max"}
    assert decoded["records_per_s"] == 5.0
    assert decoded["mb_per_s"] == 0.5
    assert decoded["failures"] == 1


def test_reporter_prints_once_per_interval():
    clock = FakeClock()
    recorder = perf.LatencyRecorder(10, clock=clock)
    out = io.StringIO()
    reporter = perf.ProgressReporter(recorder, 5.0, "sent", out, clock=clock)
    for step in range(12):
        recorder.record(1.0, 10)
        clock.now_s += 1.0
        reporter.tick()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at 5 s and 10 s
    assert lines[0].startswith("5 records sent, 1.0 records/sec")
