"""The values Raft nodes exchange and persist: entries, hard state, and the message types.

Every value is a frozen dataclass, so a message in flight can be duplicated, delayed or
replayed by a network (or the simulator) without anyone mutating it underneath.

Positions are record offsets. An entry is one record batch covering
[base_offset, last_offset]; its Raft "index" is its last_offset, so "the log up to index i"
means every batch whose last_offset <= i, and the next batch's base_offset is i + 1.
An empty log that starts at log_start_offset has last index log_start_offset - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from distlog.consensus.membership import Membership


@dataclass(frozen=True, slots=True)
class Entry:
    """One record batch in the Raft log.

    `data` is opaque to Raft (the record batch bytes, already stamped with base_offset and
    the leader term); the core never decodes it.
    """

    term: int
    base_offset: int
    last_offset: int
    data: object = b""

    @property
    def record_count(self) -> int:
        return self.last_offset - self.base_offset + 1


@dataclass(frozen=True, slots=True)
class HardState:
    """What a node must persist before it sends messages that depend on it.

    `vote` is the node voted for in `term` (None if none); `commit` is the highest index the
    node knows committed (the high watermark), persisted so a restarted follower never
    forgets what is committed and never lets a conflicting tail below it be truncated.
    """

    term: int = 0
    vote: Optional[int] = None
    commit: int = -1


@dataclass(frozen=True, slots=True)
class MsgVote:
    """RequestVote (§5.2). `transfer` marks an election forced by leadership transfer."""

    frm: int
    to: int
    term: int
    last_index: int
    last_term: int
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class MsgVoteResp:
    frm: int
    to: int
    term: int
    reject: bool


@dataclass(frozen=True, slots=True)
class MsgPreVote:
    """Pre-vote (thesis §9.6): "would you vote for me at `term`?" — changes nobody's term."""

    frm: int
    to: int
    term: int
    last_index: int
    last_term: int
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class MsgPreVoteResp:
    frm: int
    to: int
    term: int
    reject: bool


@dataclass(frozen=True, slots=True)
class MsgApp:
    """AppendEntries (§5.3): entries follow the entry ending at prev_index with prev_term."""

    frm: int
    to: int
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class MsgAppResp:
    """Reply to MsgApp, MsgStartOver (and to a stale leader, to tell it the newer term).

    On success `index` is the last index now known to match the leader. On reject, `index` is
    the prev_index that did not match and (hint_index, hint_term) is the follower's last entry
    at or below it whose term is <= the leader's prev_term, so the leader can skip a whole
    term of conflicting entries in one round trip (fast backtracking, §5.3 end).
    """

    frm: int
    to: int
    term: int
    index: int
    reject: bool = False
    hint_index: int = -1
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class MsgHeartbeat:
    """Empty AppendEntries: asserts leadership; commit is capped at the follower's match."""

    frm: int
    to: int
    term: int
    commit: int


@dataclass(frozen=True, slots=True)
class MsgHeartbeatResp:
    frm: int
    to: int
    term: int


@dataclass(frozen=True, slots=True)
class MsgTimeoutNow:
    """Leadership transfer (thesis §3.10): the target starts an election immediately."""

    frm: int
    to: int
    term: int


@dataclass(frozen=True, slots=True)
class MsgStartOver:
    """The entries the follower needs were removed by retention on the leader.

    Everything below log_start_offset is committed, so the follower discards its log and
    continues from an empty log starting at log_start_offset (start_term is the term of the
    entry just below it). This plays the role of InstallSnapshot (§7) for a log whose state
    machine is the log itself.

    `membership` is the membership in effect at log_start_offset - 1 (the follower's log no
    longer holds the entries that set it); None when it is the bootstrap membership of
    Config.peers and Config.learners, so a group whose membership never changed sends what it
    always sent.
    """

    frm: int
    to: int
    term: int
    log_start_offset: int
    start_term: int
    commit: int
    membership: Optional[Membership] = None


Message = (
    MsgVote
    | MsgVoteResp
    | MsgPreVote
    | MsgPreVoteResp
    | MsgApp
    | MsgAppResp
    | MsgHeartbeat
    | MsgHeartbeatResp
    | MsgTimeoutNow
    | MsgStartOver
)
