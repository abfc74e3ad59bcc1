"""Who leads each partition, as far as this broker knows: its own groups, plus peers' reports.

Every broker answers Metadata for every partition, not only those it hosts, so leaders report
the groups they lead to every peer (piggybacked on the Raft frames, wire.py "leaders"): the
changes as they happen and the complete list every LEADER_REPORT_EVERY_S. A report names the
leader epoch (the Raft term), so an older leader's late report never overrides a newer one's;
a complete list also withdraws the sender's claims to groups it no longer lists.

Pure data: the manager feeds it and the broker reads it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

# A claim not renewed for this long is dropped: its leader is probably gone (a new leader's
# report with a higher epoch usually replaces it well before).
REPORT_MAX_AGE_S = 5.0


class LeaderReport(NamedTuple):
    leader: int
    epoch: int
    in_sync: tuple
    high_watermark: int
    log_end_offset: int
    seen_s: float


class LeaderBook:
    """(topic, partition) -> the newest LeaderReport heard."""

    def __init__(self):
        self._reports: dict = {}

    def record(self, sender: int, rows, complete: bool, now_s: float) -> None:
        """Take a peer's report rows ((group, epoch, isr, hw, leo), ...)."""
        listed = set()
        for group, epoch, isr, hw, leo in rows:
            listed.add(group)
            known = self._reports.get(group)
            if known is None or epoch >= known.epoch:
                self._reports[group] = LeaderReport(sender, epoch, tuple(isr), hw, leo, now_s)
        if complete:
            for group in [g for g, r in self._reports.items() if r.leader == sender and g not in listed]:
                del self._reports[group]

    def get(self, group, now_s: float) -> Optional[LeaderReport]:
        report = self._reports.get(group)
        if report is not None and now_s - report.seen_s > REPORT_MAX_AGE_S:
            del self._reports[group]
            return None
        return report

    def forget_topics_except(self, topics) -> None:
        """Drop reports of deleted topics."""
        for group in [g for g in self._reports if g[0] not in topics]:
            del self._reports[group]
