"""Group membership: who votes, who only learns, and which membership a log says at each offset.

A Membership is a value, held in the log as a membership entry (one record; the driver
encodes it, see Config.membership_entry in raft.py). Each entry holds the whole membership
that follows a single-server change of the one before it, so the membership at any offset
is that of the last membership entry at or below it, or the log's base membership when
there is none (what was in effect below the log start: the bootstrap peers, or the last
membership entry retention removed).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Optional


class MembershipChangePendingError(Exception):
    """The leader cannot take a membership change now; retry once `retry_after_offset` is
    committed (the group's high watermark reaches it)."""

    def __init__(self, message: str, retry_after_offset: int):
        super().__init__(message)
        self.retry_after_offset = retry_after_offset


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters elect leaders and count for commit and check-quorum; learners only receive the
    log (and learn the commit index). Both are kept as sorted tuples of node ids, disjoint
    (any iterable is accepted), so equal memberships compare and encode equal."""

    voters: tuple[int, ...]
    learners: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "voters", tuple(sorted(set(self.voters))))
        object.__setattr__(self, "learners", tuple(sorted(set(self.learners))))
        if not self.voters:
            raise ValueError("a membership needs at least one voter")
        if set(self.voters) & set(self.learners):
            raise ValueError(f"nodes {sorted(set(self.voters) & set(self.learners))} are both voter and learner")

    def __contains__(self, node_id: int) -> bool:
        return node_id in self.voters or node_id in self.learners

    def with_learner(self, node_id: int) -> "Membership":
        """Add node_id as a learner (the first step of adding a voter, thesis §4.2.1)."""
        if node_id in self:
            role = "voter" if node_id in self.voters else "learner"
            raise ValueError(f"node {node_id} is already a {role} of {self}")
        return Membership(self.voters, self.learners + (node_id,))

    def promoted(self, node_id: int) -> "Membership":
        """Make learner node_id a voter (wait until its match index has caught up first)."""
        if node_id not in self.learners:
            raise ValueError(f"node {node_id} is not a learner of {self} (add it with add_learner first)")
        return Membership(self.voters + (node_id,), (n for n in self.learners if n != node_id))

    def without(self, node_id: int) -> "Membership":
        """Remove voter or learner node_id."""
        if node_id not in self:
            raise ValueError(f"node {node_id} is not a member of {self}")
        if self.voters == (node_id,):
            raise ValueError(f"node {node_id} is the last voter of {self}: add another voter before removing it")
        return Membership((n for n in self.voters if n != node_id), (n for n in self.learners if n != node_id))

    def __str__(self) -> str:
        return f"voters {list(self.voters)} learners {list(self.learners)}"


def membership_as_data(base_offset: int, leader_term: int, membership: Membership) -> object:
    """The default Config.membership_entry: the entry's data is the Membership itself (tests and
    the simulator; a broker writes a control batch instead)."""
    return membership


def membership_in_data(data: object) -> Optional[Membership]:
    """The default Config.read_membership, matching membership_as_data."""
    return data if isinstance(data, Membership) else None


class MembershipLog:
    """The membership entries of a log, by offset, over the base membership below them.

    Mirrors the log: truncate_from when the log's tail is replaced, restart when the log
    starts over. Membership entries are rare (a few per reassignment), so a list will do."""

    def __init__(self, base: Membership, entries: list[tuple[int, Membership]]):
        self.base = base
        self.offsets = [offset for offset, _ in entries]
        self._memberships = [membership for _, membership in entries]

    @property
    def latest(self) -> Membership:
        return self._memberships[-1] if self._memberships else self.base

    @property
    def latest_offset(self) -> int:
        """The offset of the last membership entry; -1 when there is none in the log."""
        return self.offsets[-1] if self.offsets else -1

    def at(self, offset: int) -> Membership:
        """The membership in effect at `offset`: the last membership entry at or below it."""
        i = bisect_right(self.offsets, offset)
        return self._memberships[i - 1] if i else self.base

    def append(self, offset: int, membership: Membership) -> None:
        assert not self.offsets or offset > self.offsets[-1], f"membership entry at {offset} out of order"
        self.offsets.append(offset)
        self._memberships.append(membership)

    def truncate_from(self, base_offset: int) -> bool:
        """Forget the entries at or after base_offset (the log's tail was replaced); returns
        whether any went, so the membership reverts to the one before them."""
        i = bisect_right(self.offsets, base_offset - 1)
        if i == len(self.offsets):
            return False
        del self.offsets[i:]
        del self._memberships[i:]
        return True

    def restart(self, base: Membership) -> None:
        """The log starts over empty; `base` is in effect below its start."""
        self.base = base
        self.offsets.clear()
        self._memberships.clear()
