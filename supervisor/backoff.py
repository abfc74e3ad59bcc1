"""Restart backoff: how long the supervisor waits before restarting a broker that keeps crashing."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff: initial_s, doubling per consecutive crash, capped at max_s.

    A broker that stayed up for stable_after_s has recovered: its next crash starts over at
    initial_s. enabled=False leaves crashed brokers down (`--no-restart`).
    """

    enabled: bool = True
    initial_s: float = 0.2
    max_s: float = 10.0
    stable_after_s: float = 10.0

    def delay_s(self, consecutive_crashes: int) -> float:
        """Delay before restart number `consecutive_crashes` (1 for the first crash in a row)."""
        return min(self.max_s, self.initial_s * 2 ** max(0, consecutive_crashes - 1))
