"""Requests that wait: long-poll fetches parked until enough bytes arrive or their deadline passes.

A parked fetch is re-evaluated only when a partition it reads from has grown, or when its deadline
passes; the broker loop sleeps in zmq poll until the earliest deadline, so waiting costs nothing.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field


@dataclass
class ParkedFetch:
    peer: bytes
    cid: int
    request: object  # FetchRequest
    deadline_s: float
    partitions: frozenset = field(default_factory=frozenset)  # {(topic, partition)} it reads
    done: bool = False


class FetchPurgatory:
    """Parked fetches, findable by partition (to wake) and by deadline (to expire)."""

    def __init__(self):
        self._by_partition: dict = {}
        self._deadlines: list = []
        self._sequence = itertools.count()

    def park(self, fetch: ParkedFetch) -> None:
        for key in fetch.partitions:
            self._by_partition.setdefault(key, []).append(fetch)
        heapq.heappush(self._deadlines, (fetch.deadline_s, next(self._sequence), fetch))

    def waiting_on(self, touched: set) -> list:
        """Parked fetches that read any partition in `touched` (each once), still pending."""
        found, seen = [], set()
        for key in touched:
            waiting = self._by_partition.pop(key, None)
            if not waiting:
                continue
            for fetch in waiting:
                if not fetch.done and id(fetch) not in seen:
                    seen.add(id(fetch))
                    found.append(fetch)
        return found

    def repark(self, fetch: ParkedFetch) -> None:
        """Put back a woken fetch that still has too few bytes (its deadline entry still stands)."""
        for key in fetch.partitions:
            self._by_partition.setdefault(key, []).append(fetch)

    def expired(self, now_s: float) -> list:
        out = []
        while self._deadlines and self._deadlines[0][0] <= now_s:
            fetch = heapq.heappop(self._deadlines)[2]
            if not fetch.done:
                out.append(fetch)
        return out

    def next_deadline_s(self):
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
