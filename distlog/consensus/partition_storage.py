"""PartitionStorage: the Raft Storage interface over a distlog.log.PartitionLog.

The partition log is the Raft log: a record batch is an entry, its record offsets are its
positions and its header's leader_term is the entry's term, so nothing is copied or
re-encoded for Raft. The hard state (term, vote, commit) and the term just below the log
start live in a small JSON file next to the partition directory (PartitionLog refuses
foreign files inside it), replaced atomically: write a temporary file, fsync, rename, fsync
the directory.

Durability contract (group commit)
----------------------------------
append(), reset() and set_hard_state() write but do not fsync: after them, call sync()
before sending ready.messages_after_persist or calling advance(). sync() fsyncs whatever
the log took since the last sync and, when term or vote changed, the hard state file, so a
vote or an ack never promises what a power loss could take back. A driver with many
partitions writes every Ready of a loop turn, calls sync() on each storage that was written,
then sends the votes and acks and advances the nodes: one fsync per partition per turn, not
per append. The leader counts its own entries only after advance(), hence after sync() too.
Two writes stay durable on return because later writes rely on them: truncating a
conflicting tail (PartitionLog.truncate_to) and moving the log start for retention.

flush.policy does not apply to Raft entries. Under flush.policy=never (or a long interval) a
follower would acknowledge entries that sit only in its page cache; a leader counting that
acknowledgement could call an entry committed that a power loss on a majority erases, and a
restarted voter could vote twice in one term. So Raft entries and hard state are always
fsynced before an ack or a vote that promises them, whatever the topic's flush.policy says;
flush.policy only governs logs that are not replicated by Raft (RF=1 without a Raft group).
The exception is the explicitly unsafe topic config `unsafe.skip.raft.fsync=true`, for chaos
control runs: the replica manager (replication/manager.py) then skips sync() for a Ready that
carries no new term or vote, leaving the entries to flush.policy (log/config.py says why
that loses acknowledged writes to a power loss on a majority).

Moving the log start (retention, or a start-over below the leader's log start) touches both
the log and that file, so it is written ahead: the file first records the move as pending
(new start, its term, and which operation), then the log is changed, then the file records it
done (for a start-over, at the next sync(), once the emptied log is durable). A crash in
between is finished when the storage opens again; without this, a crash after the segments
went but before the file was updated would leave the term below the new start unknown, and
the partition unusable.

Membership entries (raft.py, "Membership changes") are one-record control batches keyed
MEMBERSHIP_KEY in the log like any entry. So that a restart need not scan the log for them, the
state also lists them (offset and membership), written *ahead*: append() records a membership
entry durably before the log takes it. On open the list is checked against the recovered log
(an entry recovery cut off, or a truncation replaced, is dropped: the batch at its offset must
still decode to it), so it never claims more than the log holds and never misses what the log
holds. The membership in effect below the log start (base_membership) moves with the log start,
in the same written-ahead step: retention records the last membership entry it removes, a
start-over the membership the leader sent. Compaction keeps control batches byte for byte.

Damage (distlog/log/recovery.py): a log whose recovery, or a read, found damage and quarantined
it reports the range it lost; repair_until hands that to Raft, which keeps the replica from
voting until its log holds that far again, and sync() has the log record the damage repaired
once what it appended there is durable.

Retention and compaction only touch what is committed and applied (apply_retention and
compact take that bound): retention below `applied` would remove entries the node has yet
to hand to its state machine, and rewriting an uncommitted entry would change a record a
new leader may still overwrite or replicate byte for byte.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence

from distlog.consensus.hard_state_store import HardStateStore
from distlog.consensus.log_store import Span
from distlog.consensus.membership import Membership
from distlog.consensus.messages import Entry, HardState
from distlog.durable import write_file_atomically
from distlog.log.batch import ATTR_CONTROL, RecordBatch, peek_header, stamp_batch
from distlog.log.batch_builder import build_batch
from distlog.log.errors import OffsetOutOfRangeError
from distlog.log.partition_log import PartitionLog
from distlog.log.retention import expired_segment_count

# Big enough to fill an append of many small batches, small enough to bound one read.
_READ_BYTES_MAX = 1024 * 1024
# The key of the one record in a leader's marker batch (see raft.py: the §8 no-op).
LEADER_MARKER_KEY = b"\x00distlog.raft.leader"
# The key of the one record in a membership entry's batch (raft.py, "Membership changes").
MEMBERSHIP_KEY = b"\x00distlog.raft.membership"


def stamp_record_batch(data, base_offset: int, leader_term: int) -> memoryview:
    """Config.stamp_batch for record batches: a stamped copy (the producer's buffer stays as
    is), as a read-only view so nobody changes an entry after the fact (one copy, not two)."""
    buf = bytearray(data)
    stamp_batch(buf, base_offset, leader_term)
    return memoryview(buf).toreadonly()


def leader_marker_batch(base_offset: int, leader_term: int) -> bytes:
    """Config.leader_marker for record batches: a control batch (consumers skip it) of one
    record keyed LEADER_MARKER_KEY."""
    return build_batch([leader_term.to_bytes(8, "little")], keys=[LEADER_MARKER_KEY], timestamps_ms=[0],
                       base_offset=base_offset, leader_term=leader_term, attributes=ATTR_CONTROL)


def membership_batch(base_offset: int, leader_term: int, membership: Membership) -> bytes:
    """Config.membership_entry for record batches: a control batch (consumers skip it) of one
    record keyed MEMBERSHIP_KEY whose value is the membership as JSON."""
    value = json.dumps(_membership_as_json(membership), separators=(",", ":")).encode()
    return build_batch([value], keys=[MEMBERSHIP_KEY], timestamps_ms=[0], base_offset=base_offset,
                       leader_term=leader_term, attributes=ATTR_CONTROL)


def membership_in_batch(data) -> Optional[Membership]:
    """Config.read_membership for record batches: the Membership a membership entry holds, None
    for every other batch. The core calls it on every entry it appends, so an ordinary batch
    costs one header read; a leader marker (the other control batch) one key comparison."""
    header = peek_header(data, 0)
    if not header.attributes & ATTR_CONTROL or header.record_count != 1:
        return None
    arrays = RecordBatch(data).arrays()
    key_position, key_length = int(arrays.key_positions[0]), int(arrays.key_lengths[0])
    if arrays.payload[key_position:key_position + key_length] != MEMBERSHIP_KEY:
        return None
    value_position, value_length = int(arrays.value_positions[0]), int(arrays.value_lengths[0])
    return _membership_from_json(json.loads(bytes(arrays.payload[value_position:value_position + value_length])))


def _membership_as_json(membership: Optional[Membership]) -> Optional[dict]:
    if membership is None:
        return None
    return {"voters": list(membership.voters), "learners": list(membership.learners)}


def _membership_from_json(decoded: Optional[dict]) -> Optional[Membership]:
    if decoded is None:
        return None
    return Membership(decoded["voters"], decoded["learners"])


def _encoded(membership: Optional[Membership]) -> Optional[list]:
    """A membership as the state file holds it: [voters, learners]."""
    return None if membership is None else [list(membership.voters), list(membership.learners)]


def _decoded(encoded) -> Optional[Membership]:
    return None if encoded is None else Membership(encoded[0], encoded[1])


class PartitionStorage:
    """Raft storage over one partition log; state_path defaults to '<directory>.raft-state'.

    With a shared `store` (a broker's HardStateStore, entry `name`), the hard state lives there
    instead, and sync() only puts it: the owner of the store flushes it once for all its
    partitions before the messages that depend on it leave (see hard_state_store.py). A state
    file at state_path (an older version's) is still read when the store has no entry."""

    def __init__(self, log: PartitionLog, state_path: Optional[str] = None,
                 store: Optional[HardStateStore] = None, name: Optional[str] = None,
                 read_membership: Callable[[object], Optional[Membership]] = membership_in_batch):
        self.log = log
        self._read_membership = read_membership  # the group's Config.read_membership
        self._memberships: list[tuple[int, Membership]] = []  # (offset, membership), oldest first
        self._base_membership: Optional[Membership] = None
        self.state_path = state_path or os.path.normpath(log.directory) + ".raft-state"
        self._store = store
        self._name = name or os.path.basename(os.path.normpath(log.directory))
        self._hard_state = HardState(commit=log.log_start_offset - 1)
        self._start: tuple[int, int] = (log.log_start_offset, 0)
        self._pending_start = None  # {"op", "offset", "term", "membership"} while the log start moves
        # Term or vote (or a start-over) changed since the file was last written: sync() writes it.
        self._state_dirty = False
        state = store.get(self._name) if store is not None else None
        if state is None and os.path.exists(self.state_path):
            with open(self.state_path, "rb") as f:
                state = json.load(f)
        if state is not None:
            self._hard_state = HardState(state["term"], state["vote"], state["commit"])
            self._start = (state["start_offset"], state["start_term"])
            # (.get: states written before membership changes existed have neither.)
            self._base_membership = _decoded(state.get("base_membership"))
            self._memberships = [(offset, membership) for offset, *encoded in state.get("memberships", [])
                                 if self._log_holds(offset, membership := _decoded(encoded))]
            pending = state.get("pending_start")
            if pending is not None:  # a crash interrupted the move: finish it
                self._move_start(pending["op"], pending["offset"], pending["term"], _decoded(pending.get("membership")))
                self.sync()

    # ---- hard state ---------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        """Remember the hard state; a term or vote change is written by the next sync(). A
        commit-only change rides along with the next write of the file or close() (a
        restarted node may re-learn a lower commit, which is safe, and one fsync per Ready
        for it is not worth it)."""
        if (hard_state.term, hard_state.vote) != (self._hard_state.term, self._hard_state.vote):
            self._state_dirty = True
        self._hard_state = hard_state

    def sync(self) -> None:
        """Make every append, reset and hard state change so far durable (see the module
        docstring: call it before sending messages_after_persist and before advance()). With a
        shared store the hard state is only put there: the store's owner flushes it."""
        self.log.flush()
        if self.log.damage is not None:
            self.log.note_if_repaired()  # durable now: recorded so, if it holds the lost range again
        if self._state_dirty:
            self._pending_start = None  # a start-over's emptied log is durable now
            self._write_state(durable=self._store is None)
            self._state_dirty = False

    def close(self) -> None:
        """Persist everything, the last commit index included, and close the log (with a shared
        store: put there, for its owner to flush once after closing every partition)."""
        self.log.flush()
        self._pending_start = None
        self._write_state(durable=self._store is None)
        self._state_dirty = False
        self.log.close()

    def forget(self) -> None:
        """The partition is being deleted: drop its hard state (its file, or its store entry)."""
        if self._store is not None:
            self._store.remove(self._name)
        try:
            os.remove(self.state_path)
        except FileNotFoundError:
            pass

    def _write_state(self, durable: bool = True) -> None:
        hs = self._hard_state
        state = {"term": hs.term, "vote": hs.vote, "commit": hs.commit,
                 "start_offset": self._start[0], "start_term": self._start[1],
                 "pending_start": self._pending_start, "base_membership": _encoded(self._base_membership),
                 "memberships": [[offset, *_encoded(membership)] for offset, membership in self._memberships]}
        if self._store is None:
            write_file_atomically(self.state_path, json.dumps(state).encode())
            return
        self._store.put(self._name, state)
        if durable:
            self._store.flush()

    # ---- the log ------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def repair_until(self) -> Optional[int]:
        """The last offset this replica held before damage cost it (raft.py, "Repair"), None
        if its log is whole."""
        damage = self.log.damage
        return None if damage is None else damage.held_until - 1

    @property
    def start_term(self) -> int:
        start_offset, start_term = self._start
        if start_offset == self.log.log_start_offset:
            return start_term
        raise RuntimeError(
            f"{self.log.directory}: the log start moved from {start_offset} to "
            f"{self.log.log_start_offset} without PartitionStorage.apply_retention, so the term "
            f"below it is unknown (run retention through PartitionStorage)")

    @property
    def last_index(self) -> int:
        return self.log.log_end_offset - 1

    def span_at(self, offset: int) -> Optional[Span]:
        if not self.log.log_start_offset <= offset < self.log.log_end_offset:
            return None  # Raft asks past the end on every append: no exception for that
        try:
            header = self.log.batch_header_at(offset)
        except OffsetOutOfRangeError:
            return None
        if header.base_offset > offset:
            return None  # compaction removed the batch that held offset
        return Span(header.leader_term, header.base_offset, header.last_offset)

    def entries_from(self, base_offset: int, max_count: int) -> list[Entry]:
        out: list[Entry] = []
        offset = base_offset
        while len(out) < max_count and offset < self.log.log_end_offset:
            view = self.log.read(offset, _READ_BYTES_MAX)
            position = 0
            while position < len(view) and len(out) < max_count:
                header = peek_header(view, position)
                if not out and header.base_offset != base_offset:
                    return []  # base_offset is not where a batch starts
                out.append(Entry(header.leader_term, header.base_offset, header.last_offset,
                                 view[position:position + header.batch_length]))
                position += header.batch_length
            if not view:
                break
            offset = out[-1].last_offset + 1
        return out

    def append(self, entries: Sequence[Entry]) -> None:
        """Remove every entry at or after entries[0].base_offset (durably), then append
        entries (durable at the next sync()); a membership entry among them is recorded in the
        state first (see the module docstring)."""
        base_offset = entries[0].base_offset
        read_membership = self._read_membership
        added = [(entry.last_offset, membership) for entry in entries
                 if (membership := read_membership(entry.data)) is not None]
        if self._memberships and self._memberships[-1][0] >= base_offset:
            self._memberships = [(o, m) for o, m in self._memberships if o < base_offset]  # being replaced
        if added:
            self._memberships.extend(added)
            self._write_state()  # ahead of the log: durable before the entry can be
        if base_offset < self.log.log_end_offset:
            self.log.truncate_to(base_offset)
        data = entries[0].data if len(entries) == 1 else b"".join(entry.data for entry in entries)
        self.log.append(data, assign_offsets=False)

    def reset(self, log_start_offset: int, start_term: int, membership: Optional[Membership] = None) -> None:
        """Start over as an empty log at log_start_offset, `membership` in effect below it (None:
        the bootstrap membership); durable at the next sync()."""
        self._move_start("reset", log_start_offset, start_term, membership)

    # ---- membership (read when the RaftNode is constructed) -----------------------------

    @property
    def base_membership(self) -> Optional[Membership]:
        return self._base_membership

    def membership_entries(self) -> list[Entry]:
        """The recorded membership entries, read back from the log (open checked they are there)."""
        return [entry for offset, _ in self._memberships for entry in self.entries_from(offset, 1)]

    def _log_holds(self, offset: int, membership: Membership) -> bool:
        """Whether the log holds this membership entry at offset (the state may name one that
        recovery cut off, or that a truncation replaced)."""
        if not self.log.log_start_offset <= offset < self.log.log_end_offset:
            return False
        entries = self.entries_from(offset, 1)
        return bool(entries) and self._read_membership(entries[0].data) == membership

    def _move_start(self, op: str, offset: int, term: int, base_membership: Optional[Membership]) -> None:
        """Move the log start to offset (the entry below it has `term`, the membership in effect
        there is base_membership), written ahead (see the module docstring). Safe to repeat:
        both operations are idempotent."""
        self._pending_start = {"op": op, "offset": offset, "term": term, "membership": _encoded(base_membership)}
        self._base_membership = base_membership
        self._memberships = [] if op == "reset" else [(o, m) for o, m in self._memberships if o >= offset]
        self._write_state()
        if op == "reset":
            self.log.reset_to(offset)  # empty, continuing at offset; durable at sync()
        else:
            self.log.delete_segments_before(offset)  # retention: durable on return
        if self.log.log_start_offset != offset:
            raise RuntimeError(f"{self.log.directory}: moving the log start to {offset} ({op}) left it at "
                               f"{self.log.log_start_offset}; the log does not match its Raft state")
        self._start = (offset, term)
        if op == "reset":
            self._state_dirty = True  # sync() records the move done once the log is durable
            return
        self._pending_start = None
        self._write_state()

    def apply_retention(self, upto_offset: int, now_ms: int) -> int:
        """Run the log's retention, never past upto_offset, remembering the term below the
        new log start; returns how many segments went.

        Pass min(commit, applied): Raft may only forget entries that are committed, and the
        node must have applied them first (else ready() would have nothing left to apply).
        Of the segments retention would delete, only the leading ones that end at or below
        upto_offset go."""
        self.sync()  # a start-over still pending must be finished before the start moves again
        segments = self.log.segments
        count = expired_segment_count(segments, self.log.config, now_ms)
        while count and segments[count - 1].next_offset - 1 > upto_offset:
            count -= 1
        if count == 0:
            return 0
        new_start = segments[count - 1].next_offset
        removed = [membership for offset, membership in self._memberships if offset < new_start]
        self._move_start("retention", new_start, segments[count - 1].last_term,
                         removed[-1] if removed else self._base_membership)
        return count

    def compact(self, upto_offset: int, now_ms: int):
        """Compact the log (cleanup.policy 'compact'), rewriting only closed segments that end
        at or below upto_offset (pass min(commit, applied)); returns the CompactionStats."""
        return self.log.compact(now_ms, max_offset=upto_offset)
