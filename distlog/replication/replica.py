"""A partition replica: one Raft group driving one partition log on this broker.

The partition log is the Raft log (distlog.consensus.partition_storage): a produced record batch
becomes one Raft entry, its record offsets are the entry's positions, and the Raft term is the
partition's leader epoch, stamped into every batch the leader writes. The high watermark (the
offset consumers may read up to, exclusive) is the commit index + 1.

This class holds what belongs to one partition: the RaftNode, its storage, the idempotent
producers' table, and the checks a produced batch passes *before* it becomes a proposal (a batch
that can never be written must not enter the Raft log). Driving the node — ticks, messages,
Ready handling, group commit — is distlog.replication.manager's job, for every group at once.

Leadership and the producer table: only the leader checks sequences, but every replica keeps the
table, so a new leader knows every producer's recent batches however much was written after
them (16 producers flooding 1 MB batches outgrew a table read from the log's tail at election:
a retry from further back was written twice, or refused and its sends failed). The table
describes the log, uncommitted tail included:
- a leader records each batch as it proposes it (two produces of one producer can arrive
  before the first is written);
- every replica records the batches it writes that it did not propose (write_entries); a write
  that replaces part of the tail first makes the table forget the batches from there on
  (ProducerStateTable.truncate), and so does becoming leader over a log shorter than the table
  (an uncommitted tail dropped before it was written);
- a replica that just opened records from its first write on, and reads the log's tail below
  it (PRODUCER_STATE_SCAN_BYTES) only when a produce first needs the table, as leader: a
  broker restarting with many partitions does not read every one of them at once. Only that
  read, after a restart, is bounded.
A retry that reaches a new leader after a failover therefore finds the batch the old leader
replicated and is answered, not written again.
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple, Optional

from distlog.consensus.hard_state_store import HardStateStore
from distlog.consensus.messages import Entry
from distlog.consensus.partition_storage import (
    PartitionStorage,
    leader_marker_batch,
    membership_batch,
    membership_in_batch,
    stamp_record_batch,
)
from distlog.consensus.raft import Config, RaftNode, Role
from distlog.log.batch import ATTR_CONTROL, HEADER_SIZE, peek_header
from distlog.log.partition_log import PartitionLog
from distlog.replication.producer_state import ProducerStateTable, batch_info

# How much of the log's tail a replica reads to rebuild its producer table (the first time an
# idempotent producer writes after this replica became leader): the batches a producer could
# still be retrying sit at the very end, and this bounds the pause it costs. Sized for several
# producers each with a full window in flight: WINDOW (16) batches of 1 MB, the default
# batch_size. Only batch headers are read, so the pause grows with the number of batches.
PRODUCER_STATE_SCAN_BYTES = 64 * 1024 * 1024

# Entry bytes per append a leader sends (Raft's max_bytes_per_msg; one bigger batch still goes
# alone). Big enough that a follower catching up gets whole megabytes per round trip.
APPEND_MAX_BYTES = 1024 * 1024


class ControlBatchRefusedError(ValueError):
    """A produce carried a control batch: only the system writes those (see ATTR_CONTROL)."""


class NotLeaderForPartitionError(Exception):
    """This replica is not the partition's leader (or is handing leadership over)."""

    def __init__(self, message: str, leader_id: Optional[int]):
        super().__init__(message)
        self.leader_id = leader_id


class Appended(NamedTuple):
    """Where one produced batch went: the Raft entry's (term, base_offset, last_offset)."""

    term: int
    base_offset: int
    last_offset: int


class RaftSettings(NamedTuple):
    """In ticks of manager.TICK_S (125 ms): a follower campaigns 0.5-0.9 s after it last heard
    its leader, which heartbeats every 250 ms (2-3 heartbeats per timeout; a follower that
    misses them only pre-votes, which the others refuse while they still hear the leader)."""

    election_timeout_ticks: int = 4
    heartbeat_ticks: int = 2


class PartitionReplica:
    """One topic-partition's replica on this broker: its log, Raft node and producer table."""

    def __init__(self, topic: str, partition: int, log: PartitionLog, broker_id: int, voters,
                 settings: RaftSettings = RaftSettings(), state_path: Optional[str] = None,
                 rng: Optional[random.Random] = None, store: Optional[HardStateStore] = None):
        self.topic = topic
        self.partition = partition
        self.key = (topic, partition)
        self.log = log
        self.broker_id = broker_id
        # The replicas the metadata assigns, the preferred leader first (the broker updates
        # them when a reassignment changes them); the group's own voters live in its log.
        self.assigned = tuple(voters)
        # Before this replica can acknowledge, vote for or commit anything its log holds, all of
        # it must be on disk, including what a killed predecessor wrote but never fsynced.
        log.make_recovered_durable()
        self.storage = PartitionStorage(log, state_path, store=store, name=f"{topic}-{partition}")
        hard_state = self.storage.hard_state()
        self.durable_vote = (hard_state.term, hard_state.vote)  # what the state file holds
        # The log is the state machine: everything committed is already "applied" to it.
        applied = min(max(hard_state.commit, log.log_start_offset - 1), log.log_end_offset - 1)
        self.node = RaftNode(Config(
            node_id=broker_id,
            peers=self.assigned,  # the bootstrap membership; the log's membership entries decide after it
            election_timeout_ticks=settings.election_timeout_ticks,
            heartbeat_ticks=settings.heartbeat_ticks,
            rng=rng or random.Random(int.from_bytes(os.urandom(8), "little")),  # tests pass a seeded one
            stamp_batch=stamp_record_batch,
            leader_marker=leader_marker_batch,
            applied_offset=applied,
            marker_only_when_needed=True,
            membership_entry=membership_batch,
            read_membership=membership_in_batch,
            deliver_committed_entries=False,  # the log is the state machine: nothing to apply
            # What the leader queues for a slow follower: 32 appends of at most 1 MiB (or one
            # bigger batch) each, not 32 x 64 one-megabyte batches of a flood (bench/producer_flood.py).
            max_bytes_per_msg=APPEND_MAX_BYTES,
        ), self.storage)
        self._producers: Optional[ProducerStateTable] = None
        # Set while the table knows only the batches written from this offset on (a follower
        # records from its first write after opening); the log's tail below it is read into
        # the table when a produce first needs it (see `producers`).
        self._known_from: Optional[int] = None
        self._leader_term: Optional[int] = None  # the term this replica last saw itself lead
        # The last offset this replica holds durably (written and fsynced); acks=1 waits on it.
        self.synced_offset = log.log_end_offset - 1

    # ---- the view the broker serves from --------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.node.role is Role.LEADER and self.node.lead_transferee is None

    @property
    def leader_id(self) -> Optional[int]:
        return self.node.leader_id

    @property
    def leader_epoch(self) -> int:
        return self.node.term

    @property
    def voters(self) -> tuple:
        """The group's voters now (the last membership entry of this replica's log)."""
        return self.node.voters

    @property
    def is_sole_copy(self) -> bool:
        """This broker is the group's only member: no other copy to replicate to or vote with."""
        return self.node.voters == (self.broker_id,) and not self.node.learners

    @property
    def preferred_leader(self) -> int:
        """The first assigned replica that votes in the group (a reassignment may not have
        made it a voter yet)."""
        voters = self.node.voters
        return next((b for b in self.assigned if b in voters), voters[0])

    @property
    def high_watermark(self) -> int:
        """The first offset not known committed: consumers read below it."""
        return self.node.commit + 1

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    def read(self, offset: int, max_bytes: int):
        """Whole batches from `offset`, never past the high watermark."""
        return self.log.read(offset, max_bytes, max_offset=self.high_watermark)

    def offset_for_timestamp(self, timestamp_ms: int):
        return self.log.offset_for_timestamp(timestamp_ms)

    def not_leader_error(self) -> NotLeaderForPartitionError:
        leader = self.node.lead_transferee or self.node.leader_id
        where = f"broker {leader} leads it" if leader is not None and leader != self.broker_id else "it has no leader right now (an election is under way)"
        return NotLeaderForPartitionError(
            f"broker {self.broker_id} is not the leader of {self.topic}-{self.partition}: {where}", leader)

    # ---- produce ----------------------------------------------------------------------------

    def propose(self, records) -> list:
        """Propose the batches in `records` as Raft entries; a list with, per batch, an Appended
        (a new entry) or the ProducerBatchInfo of the earlier write it duplicates.

        Every check that could refuse a batch runs before anything is proposed, so a refused
        produce leaves nothing in the log. Raises NotLeaderForPartitionError, CorruptBatchError,
        RecordTooLargeError, ControlBatchRefusedError or SequenceError."""
        if not self.is_leader:
            raise self.not_leader_error()
        self._notice_leadership()
        view = memoryview(records).cast("B")
        headers = self.log.verify_producer_batches(view)
        if any(header.attributes & ATTR_CONTROL for _, header in headers):
            raise ControlBatchRefusedError(
                "a batch in this produce is flagged as a control batch (attributes bit 5); only brokers "
                "write those: clear the bit")
        idempotent = any(header.producer_id >= 0 for _, header in headers)
        producers = self.producers if idempotent else None
        results = []
        for position, header in headers:  # one batch at a time: any of them may be a duplicate
            info = batch_info(header) if producers is not None else None
            earlier = producers.check(info) if info is not None else None
            if earlier is not None:
                results.append(earlier)
                continue
            entry: Entry = self.node.propose(view[position:position + header.batch_length], header.record_count)
            results.append(Appended(entry.term, entry.base_offset, entry.last_offset))
            if info is not None:
                producers.record(info._replace(base_offset=entry.base_offset, last_offset=entry.last_offset))
        return results

    @property
    def producers(self) -> ProducerStateTable:
        """The idempotent producers' table, complete: what was read of the log's tail below
        where recording began, then what was recorded (see the module docstring)."""
        if self._producers is None or self._known_from is not None:
            recorded, known_from = self._producers, self._known_from
            table = self._producers = ProducerStateTable(self.log.log_end_offset if recorded is None else known_from)
            self._known_from = None
            self._read_tail_into(table, below=known_from)
            if recorded is not None:
                for info in sorted(recorded.batches(), key=lambda batch: batch.base_offset):
                    table.record(info)
        return self._producers

    def _notice_leadership(self) -> None:
        """On becoming leader: the table must not describe more than the log holds (an
        uncommitted tail may have been dropped before it was written, see the module docstring)."""
        term = self.node.term if self.node.role is Role.LEADER else None
        if term != self._leader_term:
            self._leader_term = term
            if term is not None:
                self._forget_from(self.node.last_index + 1)

    def _forget_from(self, offset: int) -> None:
        """The log lost every batch from `offset` on: so does the table."""
        table = self._producers
        if table is None or offset >= table.end_offset:
            return
        if self._known_from is None:
            table.truncate(offset)
        else:  # it records again from the cut; the tail read then covers everything below it
            self._known_from = offset
            self._producers = ProducerStateTable(offset)

    # ---- writing what the Raft node hands over (Ready) ------------------------------------

    def write_entries(self, entries) -> None:
        """Append Raft entries to the log (replacing any tail at or past the first one's offset)
        and keep the producer table in step with what the log now holds."""
        self.storage.append(entries)
        if self._producers is None:  # it records from here on; the tail below is read when needed
            self._known_from = entries[0].base_offset
            self._producers = ProducerStateTable(self._known_from)
        leading_term = self._leader_term
        for entry in entries:
            if entry.base_offset < self._producers.end_offset:
                if entry.term == leading_term:
                    continue  # this leader's own proposal: recorded when proposed
                self._forget_from(entry.base_offset)  # the entries from here on replace what it knew
            info = batch_info(peek_header(entry.data, 0))
            if info is not None:
                self._producers.record(info)
            else:
                self._producers.end_offset = entry.last_offset + 1

    def start_over(self, log_start_offset: int, start_term: int, membership) -> None:
        """The log starts over empty at log_start_offset (a follower behind the leader's log
        start): nothing it held describes the producers any longer."""
        self.storage.reset(log_start_offset, start_term, membership)
        self._producers = self._known_from = None

    def leadership_changed(self) -> None:
        """The manager saw this node's role or term change."""
        self._notice_leadership()

    def _read_tail_into(self, table: ProducerStateTable, below: Optional[int] = None) -> None:
        """Record the producer fields of the batches in the log's last PRODUCER_STATE_SCAN_BYTES
        (only those before `below`, if given)."""
        offset = self.log.tail_start_offset(PRODUCER_STATE_SCAN_BYTES)
        end = self.log.log_end_offset if below is None else min(below, self.log.log_end_offset)
        while offset < end:
            view = self.log.read(offset, 1024 * 1024)
            if not len(view):
                return
            headers = _headers_of(view)
            if not headers:
                return
            for _, header in headers:
                if header.base_offset >= end:
                    return
                info = batch_info(header)
                if info is not None:
                    table.record(info)
                offset = header.last_offset + 1

    # ---- housekeeping -------------------------------------------------------------------

    def run_housekeeping(self, now_ms: int) -> None:
        """Retention and compaction, bounded by what is committed and applied (Raft may only
        forget or rewrite entries every replica has agreed on)."""
        settled = min(self.node.commit, self.node.applied)
        self.storage.apply_retention(settled, now_ms)
        if self.log.config.cleanup_policy == "compact":
            self.storage.compact(settled, now_ms)

    def close(self) -> None:
        self.storage.close()

    def delete(self) -> None:
        self.log.delete()
        self.storage.forget()


def _headers_of(view: memoryview) -> list:
    """(position, header) of every whole batch in view; only the fixed headers are read."""
    headers, position = [], 0
    while position + HEADER_SIZE <= len(view):
        header = peek_header(view, position)
        if position + header.batch_length > len(view):
            break
        headers.append((position, header))
        position += header.batch_length
    return headers

