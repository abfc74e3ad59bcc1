"""Resident memory of processes while a benchmark runs: sampled from /proc, peak kept.

The issue's target is broker RSS during the produce benchmark, so a benchmark starts an
RssSampler over its brokers' pids, runs, stops it and reports `peaks_mb()`. Sampling is a thread
reading /proc/<pid>/status (VmRSS, the kernel's count of resident pages) every `every_s`; a
process that has exited is simply no longer sampled.

VmRSS counts the file pages a process has mapped as well as its own heap: a broker serves reads
from a read-only mmap of each segment, so pages it has read count until the kernel unmaps them.
RssAnon (heap, buffers, queues) is what grows without bound if something is unbounded, so
it is kept beside the total.
"""

from __future__ import annotations

import threading


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    """The process's resident set (or another /proc status field: RssAnon, RssFile) in MiB,
    None when it is gone (or not Linux)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # the kernel reports kB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def broker_pids(brokers) -> dict:
    """{"broker-<id>": pid} of launcher.BrokerProcess objects, the names the benchmarks report."""
    return {f"broker-{b.broker_id}": b.process.pid for b in brokers}


class RssSampler:
    """Samples every named pid's RSS every `every_s` on a thread of its own, until stop()."""

    def __init__(self, pids: dict, every_s: float = 0.1):
        self.pids = dict(pids)  # name -> pid
        self.every_s = every_s
        self._peaks = {name: 0.0 for name in self.pids}
        self._anon_peaks = {name: 0.0 for name in self.pids}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for name, pid in self.pids.items():
            for peaks, field in ((self._peaks, "VmRSS"), (self._anon_peaks, "RssAnon")):
                mb = rss_mb(pid, field)
                if mb is not None and mb > peaks[name]:
                    peaks[name] = mb

    def _run(self) -> None:
        self.sample()
        while not self._stopping.wait(self.every_s):
            self.sample()

    def stop(self) -> dict:
        """Stop sampling (one last sample first); the peaks, as peaks_mb()."""
        self._stopping.set()
        self._thread.join()
        self.sample()
        return self.peaks_mb()

    def peaks_mb(self) -> dict:
        return {name: round(peak, 1) for name, peak in self._peaks.items()}

    def anon_peaks_mb(self) -> dict:
        return {name: round(peak, 1) for name, peak in self._anon_peaks.items()}
