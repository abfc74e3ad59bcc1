"""bench/rss.py: the RSS a benchmark reports is the process's own, peaks only grow, and a
process that is gone is not an error."""

import os
import subprocess
import sys

from distlog.bench.rss import RssSampler, rss_mb


def test_rss_of_this_process_is_what_the_kernel_says_and_grows_with_touched_memory():
    before = rss_mb(os.getpid())
    assert before is not None and before > 5
    sampler = RssSampler({"me": os.getpid()}, every_s=10)
    block = bytearray(64 * 1024 * 1024)  # zero-filled: every page is touched
    sampler.sample()
    del block
    peaks = sampler.stop()
    assert peaks["me"] >= before + 60
    assert sampler.anon_peaks_mb()["me"] >= 60, "a heap block is anonymous memory"


def test_a_process_that_exited_is_skipped():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    assert rss_mb(child.pid) is None
    sampler = RssSampler({"gone": child.pid}, every_s=10)
    assert sampler.stop() == {"gone": 0.0}
