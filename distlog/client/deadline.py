"""Deadline: the one point in time a client call must be done by, carried down to every request.

A call like Consumer.poll(timeout) makes several requests (metadata, offsets, fetches). Giving
each its own timeout would let them add up; each instead takes what is left of the caller's.
"""

from __future__ import annotations

import math
import time


class Deadline:
    """A point on the monotonic clock; None as a timeout means never."""

    __slots__ = ("at_s",)

    def __init__(self, timeout_s: float | None):
        self.at_s = math.inf if timeout_s is None else time.monotonic() + max(0.0, timeout_s)

    def remaining_s(self) -> float:
        return max(0.0, self.at_s - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at_s

    def cap(self, timeout_s: float) -> float:
        """timeout_s, or less if the deadline comes first: the budget of one request."""
        return min(timeout_s, self.remaining_s())
