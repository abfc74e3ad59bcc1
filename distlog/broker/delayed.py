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

    def repark(self, fetch: ParkedFetch, touched: set) -> None:
        """Put back a woken fetch that still has too few bytes (its deadline entry still stands).
        Only under the `touched` partitions waiting_on took it from: under the others it is still
        listed, and listing it again would grow those lists with every wake-up."""
        for key in fetch.partitions & touched:
            self._by_partition.setdefault(key, []).append(fetch)

    def expired(self, now_s: float) -> list:
        """Pending fetches whose deadline passed, now forgotten by the purgatory."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now_s:
            fetch = self._pop_deadline()
            if not fetch.done:
                out.append(fetch)
        return out

    def next_deadline_s(self):
        while self._deadlines and self._deadlines[0][2].done:
            self._pop_deadline()
        return self._deadlines[0][0] if self._deadlines else None

    def _pop_deadline(self) -> ParkedFetch:
        """Take the earliest deadline entry and drop its fetch from every partition's list too: a
        partition nobody writes to is never woken, so without this every long poll on an idle
        partition (or answered through another partition) would stay listed for good."""
        fetch = heapq.heappop(self._deadlines)[2]
        for key in fetch.partitions:
            waiting = self._by_partition.get(key)
            if waiting is None:
                continue
            waiting[:] = [other for other in waiting if other is not fetch]
            if not waiting:
                del self._by_partition[key]
        return fetch
