"""The narrow storage interface the Raft core reads its stable log through, and MemoryStorage.

The core only reads storage; the caller writes it while handling a Ready (reset, append,
set_hard_state, in that order), makes the writes durable with sync(), and only then sends
the Ready's messages_after_persist and tells the core with advance(). Two implementations:
MemoryStorage (the simulator and unit tests) and partition_storage.PartitionStorage (over
distlog.log.PartitionLog). Retention may drop a committed prefix (compact), moving
log_start_offset; the core then sends lagging followers a MsgStartOver.

Membership (see raft.py, "Membership changes"): the core learns its membership on
construction from the storage's membership entries and the membership below the log start
(base_membership), and keeps it up to date itself from then on. A storage without these two
members serves only groups whose membership never changes (MemoryStorage and
PartitionStorage have both).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, NamedTuple, Optional, Protocol, Sequence

from distlog.consensus.membership import Membership, membership_in_data
from distlog.consensus.messages import Entry, HardState


class Span(NamedTuple):
    """Where one entry sits, without its data: the records [base_offset, last_offset] of `term`."""

    term: int
    base_offset: int
    last_offset: int


class Storage(Protocol):
    """What Raft needs from a durable log. Writes are durable once sync() returns."""

    def hard_state(self) -> HardState:
        """The last hard state set (HardState() for a new node)."""

    def set_hard_state(self, hard_state: HardState) -> None:
        """Persist term, vote and commit atomically."""

    @property
    def log_start_offset(self) -> int:
        """The first offset still held; entries below it were removed by retention."""

    @property
    def start_term(self) -> int:
        """The term of the entry ending at log_start_offset - 1 (0 if there never was one)."""

    @property
    def last_index(self) -> int:
        """The last_offset of the last entry, or log_start_offset - 1 for an empty log."""

    def span_at(self, offset: int) -> Optional[Span]:
        """The entry covering `offset`, None if outside [log_start_offset, last_index]."""

    def entries_from(self, base_offset: int, max_count: int) -> list[Entry]:
        """Up to max_count consecutive entries, the first with this base_offset."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Remove every entry at or after entries[0].base_offset, then append entries."""

    def reset(self, log_start_offset: int, start_term: int, membership: Optional[Membership] = None) -> None:
        """Discard the whole log; continue as an empty log starting at log_start_offset.

        `membership` (ready.start_membership) becomes base_membership; a driver passes it only
        when it is not None, so a storage of a fixed membership may take two arguments."""

    def sync(self) -> None:
        """Make every write so far durable (a driver calls it once per loop turn, before
        sending votes and acks and before advance())."""

    # Optional (raft.py, "Repair"): the last offset this node may once have acknowledged but no
    # longer holds (its log was damaged and cut), None if its log is whole. Read once, when
    # the RaftNode is constructed.
    repair_until: Optional[int]

    # ---- membership: read once, when the RaftNode is constructed -----------------------
    #
    # What a durable implementation (PartitionStorage over a PartitionLog) must provide:
    #
    # 1. Recognising membership entries. The driver writes each as a one-record control batch
    #    (Config.membership_entry) and gives the core the matching Config.read_membership;
    #    the storage recognises them by the same decoder (for example: control batches whose
    #    record key marks a membership, decoded only then, so normal batches cost one header
    #    attribute check). Reading them back must give the Entry the core appended, data
    #    included: the core decodes the membership from it.
    # 2. Durability exactly like the entries around them. After a crash and recovery,
    #    membership_entries() reports the membership entries of the recovered log, no more:
    #    an unsynced or torn tail that recovery cuts off takes its membership entries with
    #    it, and a truncation (append below last_index) removes those at or after its base.
    #    Scanning the batch headers of the recovered log on open satisfies this by
    #    construction; an index kept in the state file would have to be cut back to the
    #    recovered log end on open, because the state file and the log are synced apart.
    # 3. base_membership moves with the log start, atomically, as start_term does: when
    #    retention removes membership entries, the last one removed becomes base_membership,
    #    recorded in the same write-ahead step that records the new start and its term (a
    #    crash in between must not leave the start moved and the membership below it lost);
    #    reset(start, term, membership) records membership with the start-over, durable at
    #    the next sync(). Compaction (cleanup.policy=compact) must never remove a membership
    #    entry: the control batch has to survive like a leader marker does.
    # 4. Both are read once per RaftNode construction: a scan is affordable, a read per
    #    append is not needed.

    @property
    def base_membership(self) -> Optional[Membership]:
        """The membership in effect at log_start_offset - 1: the one of the last membership
        entry retention removed, or the one the last reset() was given. None while there is
        neither (the core then uses the bootstrap membership, Config.peers and learners)."""

    def membership_entries(self) -> Sequence[Entry]:
        """Every membership entry held, oldest first (see the rules above)."""


class MemoryStorage:
    """Storage held in Python lists: what the simulator crashes and restarts nodes with."""

    def __init__(self, read_membership: Callable[[object], Optional[Membership]] = membership_in_data) -> None:
        # The driver's Config.read_membership: how to tell membership entries from the others.
        self._read_membership = read_membership
        self._base_membership: Optional[Membership] = None
        self._hard_state = HardState()
        self._entries: list[Entry] = []
        # Parallel to _entries, so lookups by offset are one bisect.
        self._last_offsets: list[int] = []
        self._log_start_offset = 0
        self._start_term = 0
        self.repair_until: Optional[int] = None  # the simulator sets it when it damages a log

    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def sync(self) -> None:
        """Nothing to do: what MemoryStorage holds is what a crash keeps."""

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def start_term(self) -> int:
        return self._start_term

    @property
    def last_index(self) -> int:
        if self._entries:
            return self._last_offsets[-1]
        return self._log_start_offset - 1

    @property
    def entries(self) -> list[Entry]:
        """Every entry held, oldest first (a copy; for checks and tests)."""
        return list(self._entries)

    def span_at(self, offset: int) -> Optional[Span]:
        i = bisect_left(self._last_offsets, offset)
        if i == len(self._entries) or offset < self._log_start_offset:
            return None
        entry = self._entries[i]
        return Span(entry.term, entry.base_offset, entry.last_offset)

    def entries_from(self, base_offset: int, max_count: int) -> list[Entry]:
        i = bisect_left(self._last_offsets, base_offset)
        if i == len(self._entries) or self._entries[i].base_offset != base_offset:
            return []
        return self._entries[i:i + max_count]

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        base_offset = entries[0].base_offset
        if base_offset > self.last_index + 1 or base_offset < self._log_start_offset:
            raise ValueError(
                f"append at {base_offset} leaves a gap or reaches below the log "
                f"[{self._log_start_offset}, {self.last_index}]")
        keep = bisect_left(self._last_offsets, base_offset)
        del self._entries[keep:]
        del self._last_offsets[keep:]
        self._entries.extend(entries)
        self._last_offsets.extend(e.last_offset for e in entries)

    @property
    def base_membership(self) -> Optional[Membership]:
        return self._base_membership

    def membership_entries(self) -> list[Entry]:
        return [e for e in self._entries if self._read_membership(e.data) is not None]

    def reset(self, log_start_offset: int, start_term: int, membership: Optional[Membership] = None) -> None:
        self._entries.clear()
        self._last_offsets.clear()
        self._log_start_offset = log_start_offset
        self._start_term = start_term
        self._base_membership = membership

    def compact(self, index: int) -> None:
        """Retention: drop every entry with last_offset <= index (must be committed)."""
        i = bisect_left(self._last_offsets, index)
        if i == len(self._entries) or self._last_offsets[i] != index:
            raise ValueError(f"compact to {index}: not the last offset of an entry")
        for entry in reversed(self._entries[:i + 1]):
            membership = self._read_membership(entry.data)
            if membership is not None:
                self._base_membership = membership
                break
        self._start_term = self._entries[i].term
        self._log_start_offset = index + 1
        del self._entries[:i + 1]
        del self._last_offsets[:i + 1]
