"""Deterministic simulator: RaftNodes on a seeded faulty network, invariants checked every tick.

One seed fixes everything: cluster size (3 or 5), append size, storage (MemoryStorage, or for
a share of the seeds PartitionStorage over real PartitionLogs in a temporary directory),
network behaviour (delay, loss, duplication as late resends, reordering by random delay, slow
messages that take longer than an election timeout, and a new leader's appends of earlier
terms turning up again while it catches its followers up), the fault schedule (partitions: halves, isolate the
leader, bridge, one-way; crashes that lose what was not synced, including in the middle of
handling a Ready and right around a vote, often followed by a restart 1-3 ticks later;
pauses, in which a node neither ticks nor receives while its messages queue; damage to a
crashed node's log (see below); retention on a
node's log; leadership transfers; leader churn: new leaders crashed or cut off soon after
winning or right after their first commit), membership changes (see below) and the clients
that propose all the time. After
`fault_ticks` every fault heals, and an entry proposed after that must be applied by every
node within `liveness_ticks`; the run then goes on for `settle_ticks` to watch the leader.

A crash keeps exactly what storage.sync() made durable (a Ready's writes are synced before
its votes and acks go out): SimMemoryStorage restores its last synced copy; over a
PartitionLog, each segment file is cut back to the bytes an fsync covered, plus, half the
time, a random prefix of the rest (possibly a torn batch, for recovery to cut off).

Damage while a node is down (issue #12, protocol-aware repair): in half the seeds (an RNG of
their own), a crash damages the node's log 30% of the time, as long as the damaged nodes not
yet repaired stay a minority of the voters (at most f of 2f+1; with membership changes, only
with 3 or more voters and no change pending, and the group is not shrunk to 2 voters while a
log is repaired, nor does a leader remove itself then): a majority that lost committed
entries can only wait for a node that holds them, expected unavailability this does not
generate. Over a PartitionLog, one closed segment gets a bit flipped in a batch's header or
payload, or is emptied, or cut in the middle of a batch. Recovery quarantines what it finds
(a cut, a bad header); a flip that only the crc shows is found by the first read of that
batch, which stops the replica, quarantines and reopens it, as the broker does
(ReplicationManager.report_damage). The leader term is in the crc (it once was not: these
seeds found that a flipped term elected a leader without a committed entry). Over
MemoryStorage, the entries from a random one on are lost and repair_until set to
the last offset held before. Either way the node comes back repairing (raft.py, "Repair"):
no votes, no campaigns, until its log holds that far again. Its own log has lost committed
entries meanwhile, so the checks that committed entries never vanish judge the nodes that
are not repairing (a repairing node never leads, nor truncates below its commit); its
persisted commit may go back once, to its clamped commit; damage a read finds after the heal
stops a replica, so the settled-leader check starts over from there. The run waits for
repair: every member must hold and apply what it lost again, and at the end every member's
log holds exactly the committed entries up to the post-heal one, a repaired node as any other.

Checked after every step: at most one leader per term; log matching (checked inductively:
every (last_offset, term) ever persisted anywhere names one (base_offset, data, previous
term)); a committed entry is never truncated, every new leader holds all of them, and the
commit index a node persisted never goes back; every node applies the same entries in offset
order (a start-over may skip a committed prefix, nothing else). Disruption: once, after the
heal, every node follows one leader in one term, no term changes again. Terms do not run
away: no term exceeds 1 + ticks // election_timeout_ticks. Pre-vote makes each new term
cost a majority that heard no leader for a whole election timeout, so a term a timeout is
already generous (the seeds stay far below it); without pre-vote, a node cut off for the
whole fault phase campaigns every 1-2 timeouts and breaks it.

Membership changes: a quarter of the seeds, memory and disk alike (chosen by an RNG of their
own, so the other seeds run exactly as they did before; on disk, membership entries are the
brokers' control batches and PartitionStorage records them), start 3 voters and 2 spare
nodes and reassign replicas on the leader while the faults go on: add a spare as a learner, promote it (mostly
once caught up), or abandon it, remove a voter (the leader a third of the time), between 2
and 4 voters; refused changes (one still uncommitted, a new leader with nothing committed in
its term) are logged. Checked as well: a leader's log never holds two membership entries
above the highest commit index any node had; each node applying a committed offset has the
membership the committed log says is in effect there; every member of that membership (not
the spares or removed nodes) must apply the post-heal entry; and the settled-leader check
watches the members while the removed nodes, alive and connected, keep campaigning.

Bug injection (--inject-bug) puts one known bug back, to show the simulator finds it:
vote-before-persist (the driver sends a vote before syncing it), forget-vote-on-restart
(storage loses the vote on restart), leader-counts-unpersisted (the driver advances a
leader without syncing its entries, so the leader counts entries a crash can take back),
stale-append-ack (an append of an older term is answered as an ack of the follower's last
index), no-pre-vote (the nodes run without pre-vote: terms run away), repair-votes (a node
whose log was damaged votes and campaigns as if whole: it elects a leader that lacks entries
it had acknowledged, and a committed entry is lost).

    python -m distlog.consensus.sim --seeds 2000 --json
    python -m distlog.consensus.sim --seed 17 --trace
    python -m distlog.consensus.sim --seeds 2000 --inject-bug stale-append-ack --json
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import json
import logging
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import weakref
from collections import deque
from bisect import bisect_right
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

import click

from distlog.consensus.log_store import MemoryStorage
from distlog.consensus.membership import Membership, MembershipChangePendingError
from distlog.consensus.messages import (
    Entry,
    HardState,
    Message,
    MsgApp,
    MsgAppResp,
    MsgHeartbeat,
    MsgStartOver,
    MsgVoteResp,
)
from distlog.consensus.partition_storage import (
    PartitionStorage,
    leader_marker_batch,
    membership_batch,
    membership_in_batch,
    stamp_record_batch,
)
from distlog.consensus.raft import Config, NotLeaderError, RaftNode, Role
from distlog.log.batch import HEADER_SIZE, peek_header
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.log.errors import CorruptDataError
from distlog.log.partition_log import PartitionLog

INJECTABLE_BUGS = ("vote-before-persist", "forget-vote-on-restart", "leader-counts-unpersisted",
                   "stale-append-ack", "no-pre-vote", "repair-votes")


class Violation(Exception):
    """A safety invariant broke; the message says which and where."""


@dataclass
class SimConfig:
    """Run length and fault rates; defaults keep 2,000 seeds within a minute on 2 cores."""

    fault_ticks: int = 400
    liveness_ticks: int = 250
    # How long to keep watching a settled leader (see _check_settled_leader_is_left_alone).
    settle_ticks: int = 20
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 2
    fault_probability: float = 1 / 25
    propose_probability: float = 0.4
    crash_in_ready_probability: float = 0.002
    # A Ready that grants a vote: crash around it this often (the vote's persistence is the
    # point), and come back within 1-3 ticks, while the election is still on.
    crash_around_vote_probability: float = 0.1
    # A slow message takes 1 to this many election timeouts.
    slow_timeouts_max: int = 3
    # Seeds that run over PartitionStorage and real PartitionLogs rather than MemoryStorage.
    disk_share: float = 0.15
    # Memory seeds whose group changes membership: 3 voters and 2 spare nodes, reassigned
    # (add a learner, promote it, remove a voter, the leader too) this often per tick.
    membership_share: float = 0.25
    membership_change_probability: float = 1 / 15
    # Seeds whose crashed nodes may find their log damaged when they come back (chosen by an
    # RNG of their own), and how often a crash there damages the log, within the budget (see
    # Simulation._may_damage: a minority of the voters unrepaired at a time).
    damage_share: float = 0.5
    damage_probability: float = 0.3
    inject_bug: Optional[str] = None


@dataclass
class SeedResult:
    seed: int
    ticks: int
    violation: Optional[str] = None
    liveness_failure: Optional[str] = None
    trace: list[str] = field(default_factory=list)
    disk: bool = False
    max_term: int = 0
    damaged_logs: int = 0


class Network:
    """Messages in flight, each delivered after a random delay unless dropped or blocked."""

    def __init__(self, rng: random.Random, election_timeout_ticks: int, slow_timeouts_max: int,
                 copy_entries: bool):
        self.rng = rng
        self.loss = 0.0
        self.duplication = 0.0
        self.delay_ticks_max = 3
        # This share of messages takes 1 or more election timeouts: a reply can then reach a node
        # that has since won a newer term, as a stale answer to an old request.
        self.slow = 0.0
        self.slow_ticks_max = slow_timeouts_max * election_timeout_ticks
        self.election_timeout_ticks = election_timeout_ticks
        # Over PartitionLogs an entry's data is a view of the sender's mapped segment, which a
        # crash may cut back: a message carries a copy, as a real network would.
        self.copy_entries = copy_entries
        self.blocked: set[tuple[int, int]] = set()
        # What was sent lately, so a fault can deliver an old message again, very late.
        self.recent: deque = deque(maxlen=256)
        self._in_flight: list[tuple[int, int, Message]] = []
        self._seq = 0

    def send(self, m: Message, now: int) -> None:
        if (m.frm, m.to) in self.blocked or (self.loss and self.rng.random() < self.loss):
            return
        if self.copy_entries and isinstance(m, MsgApp) and m.entries:
            m = dataclasses.replace(m, entries=tuple(_plain(e) for e in m.entries))
        self.recent.append(m)
        if self.slow and self.rng.random() < self.slow:
            delay = self.rng.randint(self.election_timeout_ticks, self.slow_ticks_max)
        else:
            delay = self.rng.randint(1, self.delay_ticks_max)
        self._push(m, now + delay)
        if self.duplication and self.rng.random() < self.duplication:
            # A duplicate is a resend (a retry after a reconnect): it may come much later.
            self._push(m, now + self.rng.randint(1, self.slow_ticks_max))

    def replay_old(self, frm: int, term: int, now: int) -> int:
        """Deliver again, over the next few ticks, what `frm` sent as leader before `term`
        (appends lost in some buffer for longer than an election timeout); returns how many."""
        old = [m for m in self.recent if m.frm == frm and m.term < term and isinstance(m, (MsgApp, MsgHeartbeat))]
        for m in old:
            self._push(m, now + self.rng.randint(1, 2 * self.delay_ticks_max))
        return len(old)

    def _push(self, m: Message, due: int) -> None:
        self._seq += 1
        heapq.heappush(self._in_flight, (due, self._seq, m))

    def due(self, now: int) -> list[Message]:
        out = []
        while self._in_flight and self._in_flight[0][0] <= now:
            m = heapq.heappop(self._in_flight)[2]
            if (m.frm, m.to) not in self.blocked:
                out.append(m)
        return out


def _plain(entry: Entry) -> Entry:
    """The entry with its data as bytes (not a view of some node's mapped segment)."""
    if isinstance(entry.data, memoryview):
        return Entry(entry.term, entry.base_offset, entry.last_offset, bytes(entry.data))
    return entry


class SimMemoryStorage(MemoryStorage):
    """MemoryStorage whose writes since the last sync vanish in a crash.

    sync() is two steps, as PartitionStorage's is (the log's fsync, then the hard state
    file), so a crash can fall between them."""

    def __init__(self) -> None:
        super().__init__()
        self._durable_log = self._log_state()
        self._durable_hard_state = self.hard_state()

    def _log_state(self) -> tuple:
        return (list(self._entries), list(self._last_offsets), self._log_start_offset, self._start_term,
                self._base_membership)

    def sync_log(self) -> None:
        self._durable_log = self._log_state()
        if self.repair_until is not None and self.last_index >= self.repair_until:
            self.repair_until = None  # holds what it lost again, durably (as PartitionStorage notes it)

    def sync(self) -> None:
        self.sync_log()
        self._durable_hard_state = self.hard_state()

    def compact(self, index: int) -> None:
        """Retention is durable when it returns."""
        self.sync()
        super().compact(index)
        self.sync()

    def crash(self, rng: random.Random) -> "SimMemoryStorage":
        entries, last_offsets, self._log_start_offset, self._start_term, self._base_membership = self._durable_log
        self._entries, self._last_offsets = list(entries), list(last_offsets)
        self._hard_state = self._durable_hard_state
        return self

    def damage(self, rng: random.Random) -> Optional[str]:
        """Damage found on restart, as recovery over a PartitionLog handles it: every entry from
        a random one on is gone (a bad batch and what follows it, quarantined), and repair_until
        remembers the last offset held before, which this node may have acknowledged. Only on a
        crashed node (what it holds is what was synced); None if there is nothing to lose."""
        if not self._entries:
            return None
        held_until = self.last_index
        cut = rng.randrange(len(self._entries))
        lost_from = self._entries[cut].base_offset
        del self._entries[cut:]
        del self._last_offsets[cut:]
        self.repair_until = held_until if self.repair_until is None else max(self.repair_until, held_until)
        self.sync_log()
        return f"offsets {lost_from}..{held_until} lost"


class SimDiskStorage(PartitionStorage):
    """PartitionStorage over a real PartitionLog that remembers, per segment, how many bytes
    an fsync made durable, so that a crash can cut each file back to them."""

    def __init__(self, directory: str, config: LogConfig):
        self.directory = directory
        self.config = config
        # Before opening: finishing a start-over a crash interrupted syncs, and sync() notes this.
        self._durable_bytes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        super().__init__(PartitionLog.open(directory, config))
        self._note_durable()

    def _note_durable(self) -> None:
        for segment in self.log.segments:
            if not segment.dirty:
                self._durable_bytes[segment] = segment.size_bytes

    def append(self, entries) -> None:
        base_offset = entries[0].base_offset
        if base_offset < self.log.log_end_offset:
            self.log.truncate_to(base_offset)  # durable on return (PartitionStorage does the same)
            self._note_durable()
        super().append(entries)
        self._note_durable()  # a roll fsynced the segment it closed

    def reset(self, log_start_offset: int, start_term: int, membership=None) -> None:
        super().reset(log_start_offset, start_term, membership)
        self._note_durable()

    def sync_log(self) -> None:
        self.log.flush()
        self._note_durable()

    def sync(self) -> None:
        super().sync()
        self._note_durable()

    def apply_retention(self, upto_offset: int, now_ms: int) -> int:
        count = super().apply_retention(upto_offset, now_ms)
        self._note_durable()
        return count

    def crash(self, rng: random.Random) -> "SimDiskStorage":
        """Power loss: what no fsync covered may vanish; returns the storage reopened."""
        for segment in self.log.segments:
            if segment.dirty:
                durable = self._durable_bytes.get(segment, 0)
                keep = durable if rng.random() < 0.5 else rng.randint(durable, segment.size_bytes)
                _cut_file(segment.log_path, keep)
        # Abandoned, not closed: close() would flush. Its mappings keep the old inodes alive.
        return SimDiskStorage(self.directory, self.config)

    def damage(self, rng: random.Random) -> Optional[str]:
        """Damage one closed segment's file the way disks do (a flipped bit in a batch's header
        or payload, the file cut to nothing or in the middle of a batch); None if no segment
        is closed. The caller reopens the log: recovery finds the damage then, or a read does."""
        closed = [segment for segment in self.log.segments[:-1] if segment.size_bytes]
        if not closed:
            return None
        segment = rng.choice(closed)
        with open(segment.log_path, "rb") as f:
            data = bytearray(f.read())
        starts, position = [], 0
        while position < len(data):
            starts.append(position)
            position += peek_header(data, position).batch_length
        start = rng.choice(starts)
        length = peek_header(data, start).batch_length
        name = os.path.basename(segment.log_path)
        how = rng.choice(("header", "payload", "empty", "cut"))
        if how == "empty":
            del data[:]
            what = f"{name} emptied"
        elif how == "cut":
            del data[rng.randint(start + 1, start + length - 1):]
            what = f"{name} cut to {len(data)} bytes, in its batch at byte {start}"
        else:
            at = start + (rng.choice(_FLIPPABLE_HEADER_BYTES) if how == "header"
                          else rng.randrange(HEADER_SIZE, length))
            data[at] ^= 1 << rng.randrange(8)
            what = f"a bit flipped in {name} at byte {at} (the {how} of its batch at byte {start})"
        with open(segment.log_path + ".tmp", "wb") as f:  # swapped in: a mapped file is never changed
            f.write(data)
        os.replace(segment.log_path + ".tmp", segment.log_path)
        return what

    @property
    def entries(self) -> list[Entry]:
        return [_plain(e) for e in self.entries_from(self.log_start_offset, 1 << 30)]

    def compact(self, index: int) -> None:
        raise NotImplementedError("retention over a PartitionLog goes through apply_retention")


# Header bytes a flip may hit: every one, the leader term (bytes 13-16) included.
_FLIPPABLE_HEADER_BYTES = tuple(range(HEADER_SIZE))


def _cut_file(path: str, length: int) -> None:
    """Keep the first `length` bytes of the file, swapped in (a mapped file is never shrunk)."""
    with open(path, "rb") as f:
        kept = f.read(length)
    with open(path + ".tmp", "wb") as f:
        f.write(kept)
    os.replace(path + ".tmp", path)


class _StaleAckRaftNode(RaftNode):
    """The bug issue #9 found: an append of an older term answered as an ack of our last index."""

    def step(self, m: Message) -> None:
        if m.term < self.term and isinstance(m, (MsgApp, MsgHeartbeat, MsgStartOver)):
            self._check_not_in_ready()
            self._send(MsgAppResp(self.node_id, m.frm, self.term, index=self.last_index))
            return
        super().step(m)


class SimNode:
    """One node: its durable storage survives crashes; the RaftNode (volatile) does not."""

    def __init__(self, node_id: int, storage):
        self.node_id = node_id
        self.storage = storage
        self.raft: Optional[RaftNode] = None
        self.applied_last = -1
        self.paused_until = 0  # while now < paused_until the node neither ticks nor receives
        self.inbox: list[Message] = []  # what arrived while paused
        self.received_at = -1  # the last tick a message was stepped into it
        # Set when its log was damaged: the last offset it held then. It counts as unrepaired
        # until it holds and has applied that far again, with no damage left on record.
        self.repair_target: Optional[int] = None
        # A damaged node's commit, clamped to its log on restart: what its persisted commit may
        # go back to, once (the commit it persisted before the damage is out of its reach).
        self.commit_floor: Optional[int] = None

    def paused(self, now: int) -> bool:
        return now < self.paused_until


class Simulation:
    """One seeded run. run() returns a SeedResult; with trace=True it records what happened."""

    def __init__(self, seed: int, config: SimConfig = SimConfig(), trace: bool = False,
                 tmp_root: Optional[str] = None):
        """tmp_root: where a disk seed's directory goes (default tmpfs, or the system's temp dir)."""
        self.seed = seed
        self.config = config
        self.bug = config.inject_bug
        if self.bug is not None and self.bug not in INJECTABLE_BUGS:
            raise ValueError(f"unknown bug {self.bug!r}: choose one of {', '.join(INJECTABLE_BUGS)}")
        self.rng = random.Random(seed)
        self.size = self.rng.choice((3, 5))
        # Small appends make followers acknowledge old-term entries without the new leader's
        # marker, which is what exposes committing earlier-term entries by counting (§5.4.2).
        self.max_entries_per_msg = self.rng.choice((1, 1, 4, 64))
        # Leader churn: a new leader may crash or be cut off a few ticks after winning, and come
        # back later; that is how logs diverge across terms (the paper's Figure 8).
        self.leader_churn_probability = self.rng.choice((0.0, 0.3, 0.6, 0.9))
        self.scheduled: dict[int, list] = {}
        self.cut_after_first_commit_probability = self.rng.choice((0.0, 0.5, 0.9))
        # A new leader's old-term appends may turn up again while it catches its followers up.
        self.replay_when_elected_probability = self.rng.choice((0.0, 0.5))
        self.disk = self.rng.random() < config.disk_share
        # A byte cap per append, on disk where entries are real batches; an RNG of its own, so
        # every seed runs as it did before the cap existed. 1 byte: one entry per append.
        self.max_bytes_per_msg = (random.Random(f"bytes-{seed}").choice((None, 1, 2048, 1 << 20))
                                  if self.disk else None)
        # Decided by an RNG of its own, so that every other seed runs exactly as it did before
        # membership changes existed.
        self.membership = (config.inject_bug is None
                           and random.Random(f"membership-{seed}").random() < config.membership_share)
        if self.membership:
            self.size = 5
        # Damage to a crashed node's log: an RNG of its own too, so that seeds it spares run as
        # before (and a damaged one differs only from the first damage on).
        self.damage_rng = random.Random(f"damage-{seed}")
        self.damage_logs = self.damage_rng.random() < config.damage_share
        self.damaged_logs = 0
        self.live_members: tuple[int, ...] = ()
        self.live_offset = -1
        # Damage a read finds after the heal is a fault the heal could not heal: the replica stops
        # and restarts (a leader steps down), so the settled-leader check starts over from then.
        self.settle_after = config.fault_ticks
        self.bootstrap_voters = (0, 1, 2) if self.membership else tuple(range(self.size))
        # Committed membership entries (offset, membership), as first applied anywhere.
        self.committed_memberships: list[tuple[int, Membership]] = []
        # Every membership entry a leader appended, (term, offset), and the highest commit index
        # any node ever had (a committed index): for "at most one change uncommitted".
        self.proposed_memberships: list[tuple[int, int]] = []
        self.max_commit_seen = -1
        self.settled_members: Optional[tuple[int, ...]] = None
        self._commit_when_elected: dict[int, Optional[int]] = {}  # None once it moved
        self.net = Network(self.rng, config.election_timeout_ticks, config.slow_timeouts_max, copy_entries=self.disk)
        self.tmp_dir = (tempfile.mkdtemp(prefix=f"distlog-sim-{seed}-", dir=tmp_root or _fast_tmp_dir())
                        if self.disk else None)
        # Small segments, so appends roll and retention has closed segments to delete.
        self.log_config = LogConfig(segment_bytes=1024, retention_bytes=1)
        self.nodes = [SimNode(i, self._new_storage(i)) for i in range(self.size)]
        self.now = 0
        self.healed = False
        self.tracing = trace
        self.trace: list[str] = []
        self.leader_of_term: dict[int, int] = {}
        self._leaders_seen = 0
        # Inductive log matching: (last_offset, term) -> (base_offset, data, previous term).
        self.entry_identity: dict[tuple[int, int], tuple[int, object, int]] = {}
        # Committed entries by last_offset, as first applied anywhere, and by when (a term).
        self.committed: dict[int, Entry] = {}
        self.committed_by_term: dict[int, int] = {}
        self.next_payload = 1
        self.proposed_at: dict[object, int] = {}
        self.applied_by: dict[int, set] = {}
        self.live_at: Optional[int] = None
        self.settled: Optional[tuple[int, int]] = None  # (term, leader) once all follow one leader
        self.settled_at: Optional[int] = None
        self.max_term = 0
        self._cut_off_term: dict[int, int] = {}  # node -> its term when it last began to hear nobody
        self._roles: dict[int, tuple] = {}
        for node in self.nodes:
            self._start(node)
        self._log(f"seed {seed}: {self.size} nodes on {'PartitionLogs' if self.disk else 'memory'}"
                  + (f" (voters {list(self.bootstrap_voters)}, membership changes)" if self.membership else "") + ", "
                  f"<= {self.max_entries_per_msg} entries per append, leader churn "
                  f"{self.leader_churn_probability}, cut after first commit {self.cut_after_first_commit_probability}"
                  + (f", injected bug {self.bug}" if self.bug else ""))

    def _new_storage(self, node_id: int):
        if self.disk:
            return SimDiskStorage(os.path.join(self.tmp_dir, f"n{node_id}"), self.log_config)
        return SimMemoryStorage()

    # ---- running ---------------------------------------------------------------------

    def run(self) -> SeedResult:
        try:
            return self._run()
        finally:
            if self.tmp_dir is not None:
                shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _run(self) -> SeedResult:
        cfg = self.config
        end = cfg.fault_ticks + cfg.liveness_ticks
        result = functools.partial(SeedResult, self.seed, trace=self.trace, disk=self.disk)
        try:
            while self.now < end and not (self.live_at and self.settled_at
                                          and self.now >= self.settled_at + cfg.settle_ticks
                                          and not self._unrepaired(self.live_members)):
                self.now += 1
                try:
                    if self.now == cfg.fault_ticks:
                        self._heal_all()
                    elif not self.healed and self.rng.random() < cfg.fault_probability:
                        self._inject_fault()
                    if self.membership and not self.healed and self.rng.random() < cfg.membership_change_probability:
                        self._change_membership()
                    self._step_once()
                except CorruptDataError as error:
                    self._damage_found(error)
            if self.live_at is not None:
                self._check_replicas_converged()
        except Violation as v:
            self._log(f"VIOLATION: {v}")
            return result(self.now, violation=str(v), max_term=self.max_term, damaged_logs=self.damaged_logs)
        except Exception as e:  # the core refusing an input is a failure the seed must report
            what = f"{type(e).__name__} raised: {e}"
            self._log(f"VIOLATION: {what}")
            return result(self.now, violation=what, max_term=self.max_term, damaged_logs=self.damaged_logs)
        why = None
        if self.live_at is None:
            why = (f"no entry proposed after the faults healed at tick {cfg.fault_ticks} was applied "
                   f"by all its group's nodes within {cfg.liveness_ticks} ticks")
        elif self._unrepaired(self.live_members):
            why = (f"n{', n'.join(map(str, self._unrepaired(self.live_members)))} still repairing "
                   f"{cfg.liveness_ticks} ticks after the heal")
        if why is not None:
            self._log(f"LIVENESS FAILURE: {why}")
            return result(self.now, liveness_failure=why, max_term=self.max_term, damaged_logs=self.damaged_logs)
        return result(self.now, max_term=self.max_term, damaged_logs=self.damaged_logs)

    def _step_once(self) -> None:
        for action, node, *how in self.scheduled.pop(self.now, ()):
            if self.healed or (action == self._crash and node.raft is None) or (
                    action == self._start and node.raft is not None):
                continue
            action(node, *how)
        for node in self.nodes:
            if node.inbox and not node.paused(self.now):
                inbox, node.inbox = node.inbox, []
                for m in inbox:
                    self._deliver(m)
        for m in self.net.due(self.now):
            self._deliver(m)
        for node in self.nodes:
            if node.raft is not None and not node.paused(self.now):
                node.raft.tick()
        if self.rng.random() < self.config.propose_probability:
            self._client_propose()
        for node in self.nodes:
            if node.raft is not None and not node.paused(self.now):
                self._handle_ready(node)
        self._check_leaders()

    def _deliver(self, m: Message) -> None:
        node = self.nodes[m.to]
        if node.raft is None:
            return
        if node.paused(self.now):
            node.inbox.append(m)
        else:
            node.received_at = self.now
            node.raft.step(m)

    def _handle_ready(self, node: SimNode) -> None:
        raft = node.raft
        storage = node.storage
        rounds = 0
        while raft.has_ready():
            rounds += 1
            if rounds > 1000:
                raise Violation(f"n{node.node_id} keeps producing Ready without making progress")
            rd = raft.ready()
            after_persist = list(rd.messages_after_persist)
            grants_vote = any(isinstance(m, MsgVoteResp) and not m.reject for m in after_persist)
            for m in rd.messages:
                self.net.send(m, self.now)
            if self.bug == "vote-before-persist":
                for m in [m for m in after_persist if isinstance(m, MsgVoteResp)]:
                    after_persist.remove(m)
                    self.net.send(m, self.now)
            if self._crash_now(grants_vote):
                self._crash(node, "before persisting a Ready", quick_restart=grants_vote)
                return
            if rd.start_over:
                storage.reset(*rd.start_over, *([rd.start_membership] if rd.start_membership else []))
                node.applied_last = rd.start_over[0] - 1
                self._log(f"n{node.node_id} starts over at offset {rd.start_over[0]}")
            if rd.entries:
                self._persist_entries(node, rd.entries)
            if rd.hard_state is not None:
                before = storage.hard_state().commit
                if node.commit_floor is not None:  # damage cut its log below what it had committed
                    before = min(before, node.commit_floor)
                if rd.hard_state.commit < before:
                    raise Violation(f"n{node.node_id} persisted commit {rd.hard_state.commit} "
                                    f"below its earlier {before}")
                storage.set_hard_state(rd.hard_state)
                node.commit_floor = None
            if self._crash_now():
                self._crash(node, "after writing a Ready, before syncing it")
                return
            if self.bug == "leader-counts-unpersisted" and raft.role is Role.LEADER and not after_persist:
                pass  # the bug: advance() below tells the leader its entries are durable
            elif rd.entries and rd.hard_state is not None and self._crash_now():
                storage.sync_log()
                self._crash(node, "after syncing the entries of a Ready, before its hard state")
                return
            else:
                storage.sync()
            for m in after_persist:
                self.net.send(m, self.now)
            if grants_vote and self._crash_now(grants_vote):
                self._crash(node, "right after granting a vote", quick_restart=True)
                return
            for entry in rd.committed_entries:
                self._apply(node, _plain(entry))
            raft.advance(rd)

    # ---- invariants --------------------------------------------------------------------

    def _persist_entries(self, node: SimNode, entries: tuple[Entry, ...]) -> None:
        storage = node.storage
        base_offset = entries[0].base_offset
        if base_offset <= storage.last_index:
            commit = storage.hard_state().commit
            if base_offset <= commit:
                raise Violation(f"n{node.node_id} truncates its log at {base_offset}, at or below "
                                f"its persisted commit {commit}")
            for old in map(_plain, storage.entries_from(base_offset, 1 << 30)):
                if self.committed.get(old.last_offset) == old:
                    raise Violation(f"n{node.node_id} truncates committed entry {old}")
            self._log(f"n{node.node_id} truncates its log from offset {base_offset}")
        storage.append(entries)
        if base_offset - 1 == storage.log_start_offset - 1:
            prev_term = storage.start_term
        else:
            prev_term = storage.span_at(base_offset - 1).term
        for e in map(_plain, entries):
            identity = (e.base_offset, e.data, prev_term)
            seen = self.entry_identity.setdefault((e.last_offset, e.term), identity)
            if seen != identity:
                raise Violation(f"log matching: n{node.node_id} holds {e} after term {prev_term}, "
                                f"another node holds (base, data, previous term) {seen} there")
            prev_term = e.term

    def _apply(self, node: SimNode, entry: Entry) -> None:
        if entry.base_offset != node.applied_last + 1:
            raise Violation(f"n{node.node_id} applies {entry} after offset {node.applied_last}")
        first = entry.last_offset not in self.committed
        if first:
            # Whoever learns of a commit is in the committing leader's term or later, so this is
            # at least the term in which the entry was committed.
            self.committed_by_term[entry.last_offset] = max(n.raft.term for n in self.nodes if n.raft is not None)
        known = self.committed.setdefault(entry.last_offset, entry)
        if known != entry:
            raise Violation(f"n{node.node_id} applies {entry}, but {known} was committed there")
        node.applied_last = entry.last_offset
        members = range(self.size)
        if self.membership:
            members = self._check_membership_at(node, entry, first)
        # (term, last_offset) names one entry (log matching), whatever its data looks like.
        proposed_at = self.proposed_at.get((entry.term, entry.last_offset))
        if proposed_at is not None and proposed_at >= self.config.fault_ticks:
            applied_by = self.applied_by.setdefault(entry.last_offset, set())
            applied_by.add(node.node_id)
            if self.live_at is None and applied_by.issuperset(members):
                self.live_at = self.now
                self.live_members, self.live_offset = tuple(members), entry.last_offset
                self._log(f"entry {entry.last_offset} (term {entry.term}) proposed after healing "
                          f"is applied everywhere")

    def _check_membership_at(self, node: SimNode, entry: Entry, first: bool) -> tuple[int, ...]:
        """Every node agrees on the membership at each committed offset: the one the committed
        log says. Returns its members (who must all apply the entry)."""
        membership = node.raft.config.read_membership(entry.data)
        if first and membership is not None:
            self.committed_memberships.append((entry.last_offset, membership))
            self._log(f"committed at {entry.last_offset}: {membership}")
        i = bisect_right(self.committed_memberships, entry.last_offset, key=lambda item: item[0])
        expected = self.committed_memberships[i - 1][1] if i else Membership(self.bootstrap_voters)
        seen = node.raft.membership_at(entry.last_offset)
        if seen != expected:
            raise Violation(f"n{node.node_id} applies offset {entry.last_offset} with {seen}, but the committed "
                            f"log says {expected} there")
        return expected.voters + expected.learners

    def _churn(self, leader: SimNode) -> None:
        """Crash or cut off a new leader soon (dropping what it has in flight), restore it later."""
        at = self.now + self.rng.randint(0, 20)
        back = at + self.rng.randint(3, 30)
        if self.rng.random() < 0.5:
            self.scheduled.setdefault(at, []).append((self._crash, leader, "(leader churn)"))
            self.scheduled.setdefault(back, []).append((self._start, leader))
        else:
            self.scheduled.setdefault(at, []).append((self._cut_off, leader, True))
            self.scheduled.setdefault(back, []).append((self._cut_off, leader, False))

    def _cut_off(self, node: SimNode, cut: bool) -> None:
        pairs = {(node.node_id, i) for i in range(self.size)} | {(i, node.node_id) for i in range(self.size)}
        if cut:
            self.net.blocked |= pairs
        else:
            self.net.blocked -= pairs
        self._log(f"{'cut off' if cut else 'reconnect'} n{node.node_id} (leader churn)")

    def _check_leader_completeness(self, leader: SimNode) -> None:
        """A new leader holds every entry committed in an earlier term (§5.4.1), except what
        retention removed. (A leader of an older term may still win late, with votes that were
        delayed, after a newer leader committed entries: it need not hold those, and cannot
        commit anything, every majority having moved on to the newer term.)"""
        raft = leader.raft
        for last_offset, entry in self.committed.items():
            if (last_offset >= raft.log_start_offset and self.committed_by_term[last_offset] < raft.term
                    and raft.term_at(last_offset) != entry.term):
                raise Violation(f"n{leader.node_id} leads term {raft.term} without committed {entry}")

    def _crash_now(self, around_vote: bool = False) -> bool:
        probability = (self.config.crash_around_vote_probability if around_vote
                       else self.config.crash_in_ready_probability)
        return not self.healed and self.rng.random() < probability

    def _check_leaders(self) -> None:
        for node in self.nodes:
            raft = node.raft
            if raft is None:
                continue
            if raft.term > self.max_term:
                self.max_term = raft.term
                bound = 1 + self.now // self.config.election_timeout_ticks
                if raft.term > bound:
                    raise Violation(f"terms run away: n{node.node_id} is in term {raft.term} at tick "
                                    f"{self.now}, above 1 + ticks / election timeout = {bound}")
            if self.membership:
                self.max_commit_seen = max(self.max_commit_seen, raft.commit)
                if raft.role is Role.LEADER:
                    self._check_one_change_uncommitted(node)
            if raft.role is Role.LEADER:
                leader = self.leader_of_term.setdefault(raft.term, node.node_id)
                if leader != node.node_id:
                    raise Violation(f"two leaders in term {raft.term}: n{leader} and n{node.node_id}")
                if len(self.leader_of_term) != self._leaders_seen:
                    self._leaders_seen = len(self.leader_of_term)
                    self._check_leader_completeness(node)
                    if not self.healed and self.rng.random() < self.leader_churn_probability:
                        self._churn(node)
                    if not self.healed and self.rng.random() < self.replay_when_elected_probability:
                        count = self.net.replay_old(node.node_id, raft.term, self.now)
                        self._log(f"replay {count} appends n{node.node_id} sent before term {raft.term}")
                elected_commit = self._commit_when_elected.setdefault(raft.term, raft.commit)
                if elected_commit is not None and raft.commit > elected_commit:
                    self._commit_when_elected[raft.term] = None
                    if not self.healed and self.rng.random() < self.cut_after_first_commit_probability:
                        # A new leader's first commit ends its catch-up of the followers: cut it
                        # off right there, losing whatever it has in flight.
                        self._cut_off(node, True)
                        self.scheduled.setdefault(self.now + self.rng.randint(15, 40), []).append(
                            (self._cut_off, node, False))
            if self.tracing:
                state = (raft.role, raft.term, raft.commit)
                if self._roles.get(node.node_id) != state:
                    self._roles[node.node_id] = state
                    self._log(f"n{node.node_id} {raft.role.value} term={raft.term} "
                              f"commit={raft.commit} last={raft.last_index}")
        self._check_cut_off_nodes_keep_their_term()
        if self.healed:
            self._check_settled_leader_is_left_alone()

    def _check_one_change_uncommitted(self, leader: SimNode) -> None:
        """A leader's log holds at most one membership entry that is not committed (by what any
        node ever knew committed)."""
        raft = leader.raft
        uncommitted = [offset for term, offset in self.proposed_memberships
                       if offset > self.max_commit_seen and raft.term_at(offset) == term]
        if len(uncommitted) > 1:
            raise Violation(f"n{leader.node_id} leads term {raft.term} with membership entries {uncommitted} "
                            f"uncommitted (highest commit seen {self.max_commit_seen})")

    def _check_cut_off_nodes_keep_their_term(self) -> None:
        """A node that hears nobody cannot win a pre-vote, so its term stays where it is (the
        term inflation pre-vote exists to prevent, thesis §9.6)."""
        for node in self.nodes:
            cut_off = node.raft is not None and node.received_at < self.now and all(
                (other, node.node_id) in self.net.blocked for other in range(self.size) if other != node.node_id)
            if not cut_off:
                self._cut_off_term.pop(node.node_id, None)
                continue
            term = self._cut_off_term.setdefault(node.node_id, node.raft.term)
            if node.raft.term != term:
                raise Violation(f"term inflation: n{node.node_id}, hearing no other node, went from "
                                f"term {term} to {node.raft.term}")

    def _check_settled_leader_is_left_alone(self) -> None:
        """After the heal, once every node follows one leader in one term, nothing (a node
        rejoining, a restarted one, a late message) may start another term or depose it.

        Only from two election timeouts after the heal: until then a leader may still step
        down, rightly, at the end of a check-quorum window that began while it was cut off. (Or
        after damage a read found: see settle_after.)"""
        members = self.settled_members or self._settling_members()
        if members is None:
            return
        view = {(self.nodes[i].raft.term, self.nodes[i].raft.leader_id) for i in members}
        if self.settled is None:
            if self.now < self.settle_after + 2 * self.config.election_timeout_ticks:
                return
            (term, leader), = view if len(view) == 1 else ((None, None),)
            if leader is not None and self.nodes[leader].raft.role is Role.LEADER:
                self.settled, self.settled_at = (term, leader), self.now
                self.settled_members = members
                self._log(f"settled: every node follows n{leader} in term {term}")
        elif view != {self.settled}:
            raise Violation(f"leader disruption: every node followed n{self.settled[1]} in term "
                            f"{self.settled[0]} after the heal, now (term, leader) are {sorted(view, key=str)}")

    def _settling_members(self) -> Optional[tuple[int, ...]]:
        """The nodes that must settle on one leader: all of them, or with membership changes the
        members of the leader's membership once it is committed (the others — spares, removed
        nodes — hear no leader and may campaign as they like, but must disrupt nothing)."""
        if not self.membership:
            return tuple(range(self.size))
        leader = self._leader()
        if leader is None or self.nodes[leader].raft.membership_change_pending:
            return None
        membership = self.nodes[leader].raft.membership
        return membership.voters + membership.learners

    # ---- clients and faults -------------------------------------------------------------

    def _client_propose(self) -> None:
        node = self.nodes[self.rng.randrange(self.size)]
        for _ in range(2):  # ask one node; follow its NOT_LEADER hint once
            if node.raft is None or node.paused(self.now):
                return
            try:
                payload = self.next_payload
                count = self.rng.randint(1, 3)
                data = build_batch([b"%d" % payload] * count) if self.disk else payload
                entry = node.raft.propose(data, count)
            except NotLeaderError as e:
                if e.leader_id is None:
                    return
                node = self.nodes[e.leader_id]
                continue
            self.next_payload += 1
            self.proposed_at[(entry.term, entry.last_offset)] = self.now
            if self.tracing:
                self._log(f"n{node.node_id} proposes {payload} at [{entry.base_offset}, {entry.last_offset}] "
                          f"term {entry.term}")
            return

    def _inject_fault(self) -> None:
        fault = self.rng.choice((
            self._partition_halves, self._isolate_leader, self._bridge, self._one_way, self._heal_network,
            self._crash_random, self._restart_random, self._restart_random, self._retention,
            self._transfer, self._network_weather, self._pause,
        ))
        fault()

    def _partition_halves(self) -> None:
        ids = list(range(self.size))
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, self.size - 1)
        self._cut(ids[:cut], ids[cut:])
        self._log(f"partition {sorted(ids[:cut])} | {sorted(ids[cut:])}")

    def _isolate_leader(self) -> None:
        leader = self._leader()
        if leader is not None:
            self._cut([leader], [i for i in range(self.size) if i != leader])
            self._log(f"isolate leader n{leader}")

    def _bridge(self) -> None:
        ids = list(range(self.size))
        self.rng.shuffle(ids)
        bridge, rest = ids[0], ids[1:]
        half = len(rest) // 2
        self._cut(rest[:half], rest[half:])
        self._log(f"bridge n{bridge} between {sorted(rest[:half])} and {sorted(rest[half:])}")

    def _one_way(self) -> None:
        node = self._leader()
        if node is None:
            node = self.rng.randrange(self.size)
        others = [i for i in range(self.size) if i != node]
        if self.rng.random() < 0.5:
            self.net.blocked.update((node, o) for o in others)
            self._log(f"one-way: n{node} cannot send")
        else:
            self.net.blocked.update((o, node) for o in others)
            self._log(f"one-way: n{node} cannot receive")

    def _cut(self, side_a: list[int], side_b: list[int]) -> None:
        self.net.blocked.clear()
        for a in side_a:
            for b in side_b:
                self.net.blocked.add((a, b))
                self.net.blocked.add((b, a))

    def _heal_network(self) -> None:
        self.net.blocked.clear()
        self._log("heal the network")

    def _network_weather(self) -> None:
        self.net.loss = self.rng.choice((0.0, 0.05, 0.2, 0.4))
        self.net.duplication = self.rng.choice((0.0, 0.05, 0.2))
        self.net.delay_ticks_max = self.rng.randint(1, 6)
        self.net.slow = self.rng.choice((0.0, 0.0, 0.02, 0.1))
        self._log(f"network loss={self.net.loss} duplication={self.net.duplication} "
                  f"delay<= {self.net.delay_ticks_max} ticks, slow={self.net.slow}")

    def _pause(self) -> None:
        """A node stops (GC pause, stalled disk, SIGSTOP) while the others go on; what is sent
        to it queues and arrives, stale, when it resumes. The leader, half the time."""
        leader = self._leader()
        node = self.nodes[leader if leader is not None and self.rng.random() < 0.5
                          else self.rng.randrange(self.size)]
        if node.raft is not None and not node.paused(self.now):
            node.paused_until = self.now + self.rng.randint(1, 5) * self.config.election_timeout_ticks
            self._log(f"pause n{node.node_id} until t={node.paused_until}")

    def _crash_random(self) -> None:
        alive = [n for n in self.nodes if n.raft is not None]
        if alive:
            self._crash(self.rng.choice(alive), "", quick_restart=self.rng.random() < 0.3)

    def _crash(self, node: SimNode, how: str, quick_restart: bool = False) -> None:
        """The node dies, losing whatever it had not synced; quick_restart brings it back in
        1-3 ticks (while the election or append it was part of is still going on)."""
        if self.membership:
            self.max_commit_seen = max(self.max_commit_seen, node.raft.commit)
        node.raft = None
        node.storage = node.storage.crash(self.rng)
        node.inbox.clear()
        node.paused_until = 0
        self._roles.pop(node.node_id, None)
        self._log(f"crash n{node.node_id} {how}".rstrip())
        if self.damage_logs and self._may_damage(node) and self.damage_rng.random() < self.config.damage_probability:
            self._damage(node)
        if quick_restart:
            self.scheduled.setdefault(self.now + self.rng.randint(1, 3), []).append((self._start, node))

    def _restart_random(self) -> None:
        down = [n for n in self.nodes if n.raft is None]
        if down:
            self._start(self.rng.choice(down))

    def _start(self, node: SimNode) -> None:
        stamps = (dict(stamp_batch=stamp_record_batch, leader_marker=leader_marker_batch,
                       membership_entry=membership_batch, read_membership=membership_in_batch) if self.disk else
                  dict(leader_marker=lambda base_offset, term: ("leader", term)))
        config = Config(
            node_id=node.node_id,
            peers=self.bootstrap_voters,
            election_timeout_ticks=self.config.election_timeout_ticks,
            heartbeat_ticks=self.config.heartbeat_ticks,
            pre_vote=self.bug != "no-pre-vote",
            max_entries_per_msg=self.max_entries_per_msg,
            max_bytes_per_msg=self.max_bytes_per_msg,
            rng=random.Random(self.rng.getrandbits(64)),
            **stamps,
        )
        if self.bug == "forget-vote-on-restart":
            hard_state = node.storage.hard_state()
            node.storage.set_hard_state(HardState(hard_state.term, None, hard_state.commit))
            node.storage.sync()
        node_class = _StaleAckRaftNode if self.bug == "stale-append-ack" else RaftNode
        while True:
            try:
                node.raft = node_class(config, node.storage)
                break
            except CorruptDataError as error:  # reading its membership entries found the damage
                self._quarantine(node, error)
        node.applied_last = node.storage.log_start_offset - 1
        if node.repair_target is not None and node.storage.hard_state().commit > node.raft.commit:
            node.commit_floor = node.raft.commit
        if self.bug == "repair-votes":
            node.raft.repair_until = None  # the bug: a damaged node votes and campaigns as if whole
        if self.now:
            repairing = "" if node.raft.repair_until is None else f", repairing up to {node.raft.repair_until}"
            self._log(f"restart n{node.node_id} term={node.raft.term} last={node.raft.last_index}{repairing}")

    # ---- damage ------------------------------------------------------------------------

    def _may_damage(self, node: SimNode) -> bool:
        """Whether damaging this node's log keeps the unrepaired nodes a minority of the voters:
        the case the repair protocol keeps safe and available (raft.py, "Repair"). A majority
        that lost committed entries can only wait for a node that still holds them, which
        after the heal may be none; that is expected unavailability, not generated here."""
        if self.membership:
            leader = self._leader()
            if leader is None or self.nodes[leader].raft.membership_change_pending:
                return False
            voters = self.nodes[leader].raft.membership.voters
        else:
            voters = self.bootstrap_voters
        unrepaired = set(self._unrepaired(range(self.size))) | {node.node_id}
        # Every node counts, voter or not: a learner may be promoted while it repairs.
        return len(voters) >= 3 and len(unrepaired) <= (len(voters) - 1) // 2

    def _unrepaired(self, node_ids) -> list[int]:
        """Those of node_ids whose damaged log is not whole and applied again yet."""
        out = []
        for i in node_ids:
            node = self.nodes[i]
            if node.repair_target is None:
                continue
            if (node.raft is not None and node.raft.repair_until is None and node.storage.repair_until is None
                    and node.applied_last >= node.repair_target):
                self._log(f"n{i} is repaired: it holds and has applied up to {node.repair_target} again")
                node.repair_target = None
                continue
            out.append(i)
        return out

    def _damage(self, node: SimNode) -> None:
        """Damage a crashed node's log (a disk's bit flips and lost writes), then reopen it as a
        restart will: recovery quarantines what it finds damaged, or a later read finds it."""
        held = node.storage.last_index
        what = node.storage.damage(self.damage_rng)
        if what is None:
            return
        self.damaged_logs += 1
        node.repair_target = held if node.repair_target is None else max(node.repair_target, held)
        if self.disk:
            node.storage = SimDiskStorage(node.storage.directory, node.storage.config)
        damage = node.storage.repair_until
        self._log(f"damage n{node.node_id}'s log: {what}; "
                  + (f"it now ends at {node.storage.last_index}, repairing up to {damage}" if damage is not None
                     else "recovery finds nothing wrong (a read will)"))

    def _damage_found(self, error: CorruptDataError) -> None:
        """A node read damaged bytes (a batch recovery cannot vet cheaply: its crc is checked
        when read). As the broker does (ReplicationManager.report_damage): stop the replica,
        quarantine the damage, reopen it, repairing."""
        node = self._node_of(error)
        if self.membership and node.raft is not None:
            self.max_commit_seen = max(self.max_commit_seen, node.raft.commit)
        node.raft = None
        node.inbox.clear()
        node.paused_until = 0
        self._roles.pop(node.node_id, None)
        self._quarantine(node, error)
        self._start(node)
        if self.healed:
            self.settle_after, self.settled, self.settled_at, self.settled_members = self.now, None, None, None

    def _quarantine(self, node: SimNode, error: CorruptDataError) -> None:
        """Quarantine what a read found damaged and reopen the node's storage over what is left.
        Damage the simulator did not make is a violation: the log served or wrote bad bytes."""
        if node.repair_target is None:
            raise Violation(f"n{node.node_id} found damage the simulator never made: {error}")
        node.storage.log.quarantine_damaged(error)
        node.storage = SimDiskStorage(node.storage.directory, node.storage.config)
        self._log(f"n{node.node_id} reads damage at offset {error.offset}, quarantines it: its log ends at "
                  f"{node.storage.last_index}, repairing up to {node.storage.repair_until}")

    def _node_of(self, error: CorruptDataError) -> SimNode:
        directory = os.path.dirname(os.path.abspath(error.path))
        for node in self.nodes:
            if self.disk and os.path.abspath(node.storage.directory) == directory:
                return node
        raise Violation(f"damage in a file of no node's log: {error}")

    def _check_replicas_converged(self) -> None:
        """At the end, every member holds exactly the committed entries up to the entry that
        proved liveness, from its log start on: a repaired node as much as any other."""
        for i in self.live_members:
            storage = self.nodes[i].storage
            held = [_plain(e) for e in storage.entries_from(storage.log_start_offset, 1 << 30)
                    if e.last_offset <= self.live_offset]
            if not held or held[-1].last_offset != self.live_offset:
                raise Violation(f"n{i} does not hold offset {self.live_offset}, which it applied")
            for entry in held:
                if self.committed.get(entry.last_offset) != entry:
                    raise Violation(f"n{i} ends holding {entry}, but {self.committed.get(entry.last_offset)} "
                                    f"was committed there")

    def _retention(self) -> None:
        """Drop a committed prefix of one node's log, as time or size retention would."""
        node = self.nodes[self.rng.randrange(self.size)]
        if self.disk:
            if node.raft is not None:  # the bound the broker passes: committed and applied
                upto = min(node.raft.commit, node.raft.applied)
                if node.storage.apply_retention(upto, now_ms=0):
                    self._log(f"retention on n{node.node_id} up to {upto}: log starts at "
                              f"{node.storage.log_start_offset}")
            return
        commit = node.storage.hard_state().commit
        held = node.storage.entries_from(node.storage.log_start_offset, 1 << 30)
        committed = [e for e in held if e.last_offset <= min(commit, node.applied_last)]
        if len(committed) > 2:
            upto = committed[self.rng.randrange(len(committed) - 1)].last_offset
            node.storage.compact(upto)
            self._log(f"retention on n{node.node_id}: log starts at {upto + 1}")

    def _transfer(self) -> None:
        leader = self._leader()
        if leader is not None:
            voters = self.nodes[leader].raft.voters
            to = self.rng.choice([i for i in range(self.size) if i != leader and i in voters])
            self.nodes[leader].raft.transfer_leadership(to)
            self._log(f"n{leader} transfers leadership to n{to}")

    def _change_membership(self) -> None:
        """One step of a reassignment on the leader: add a spare as a learner, promote it (most
        often once it has caught up), or abandon it; with 4 voters, remove one (the leader a
        third of the time); sometimes go down to 2 voters. Between 2 and 4 voters."""
        leader = self._leader()
        if leader is None:
            return
        raft = self.nodes[leader].raft
        membership = raft.membership
        spares = [i for i in range(self.size) if i not in membership]
        voters = list(membership.voters)
        removed = leader if self.rng.random() < 1 / 3 else self.rng.choice(voters)
        if membership.learners:
            learner = membership.learners[0]
            caught_up = raft.match_index(learner) >= raft.commit
            steps = [(raft.promote_learner, learner)] * (4 if caught_up else 1) + [(raft.remove_member, learner)]
        elif len(voters) > 3:
            steps = [(raft.remove_member, removed)]
        else:
            steps = [(raft.add_learner, self.rng.choice(spares))] * 3 if spares else []
            # Not down to 2 voters while a log is repaired: 1 of 2 is no minority (_may_damage).
            if len(voters) > 2 and not (len(voters) == 3 and self._unrepaired(range(self.size))):
                steps += [(raft.remove_member, removed)]
        if (removed == leader and self._unrepaired(range(self.size))
                and (raft.remove_member, leader) in steps):
            # Not while a log is repaired: a leader that removed itself no longer campaigns, and
            # holds an entry the others lack, so it grants them no vote either until it is
            # committed; with a repairing voter too, that is two of four voters out (_may_damage).
            steps = [step for step in steps if step != (raft.remove_member, leader)]
        if not steps:
            return
        change, node_id = self.rng.choice(steps)
        self.max_commit_seen = max(self.max_commit_seen, raft.commit)
        try:
            entry = change(node_id)
        except (MembershipChangePendingError, NotLeaderError) as refused:
            self._log(f"n{leader} refuses {change.__name__}({node_id}): {refused}")
            return
        self.proposed_memberships.append((entry.term, entry.last_offset))
        self._log(f"n{leader} {change.__name__}({node_id}) at {entry.last_offset}: {raft.membership}")

    def _heal_all(self) -> None:
        self.healed = True
        self.net.blocked.clear()
        self.net.loss = 0.0
        self.net.duplication = 0.0
        self.net.slow = 0.0
        for node in self.nodes:
            node.paused_until = 0
            if node.raft is None:
                self._start(node)
        self._log("heal everything: network, crashed nodes; liveness clock starts")

    def _leader(self) -> Optional[int]:
        leaders = [n for n in self.nodes if n.raft is not None and n.raft.role is Role.LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.raft.term).node_id

    def _log(self, text: str) -> None:
        if self.tracing:
            self.trace.append(f"t={self.now:5d} {text}")


def run_seed(seed: int, trace: bool = False, config: SimConfig = SimConfig(),
             tmp_root: Optional[str] = None) -> SeedResult:
    """Run one seed; the same seed always produces the same run."""
    return Simulation(seed, config, trace, tmp_root).run()


def _fast_tmp_dir() -> Optional[str]:
    """tmpfs when there is one: the crash model cuts files back itself, so real fsyncs only cost."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@dataclass
class Sweep:
    """What a run of many seeds found."""

    failures: list[SeedResult] = field(default_factory=list)
    steps: int = 0
    disk_seeds: int = 0
    max_term: int = 0
    damaged_seeds: int = 0  # seeds in which some node's log was damaged
    damaged_logs: int = 0


def run_seeds(seeds: list[int], workers: int, fail_fast: bool = False, config: SimConfig = SimConfig()) -> Sweep:
    """Run seeds (on `workers` processes); returns the failures (by seed) and totals.

    fail_fast stops at the first failing seed, in seed order (the workers may have run a few
    seeds past it, which are not counted).
    """
    sweep = Sweep()
    # Every disk seed's directory goes under one of the sweep's own: stopping early terminates
    # the workers mid-seed, before a seed removes its own, and this removes them all.
    tmp_root = tempfile.mkdtemp(prefix="distlog-sim-sweep-", dir=_fast_tmp_dir())
    run = functools.partial(run_seed, config=config, tmp_root=tmp_root)
    try:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = (pool.imap(run, seeds, chunksize=4) if fail_fast
                           else pool.imap_unordered(run, seeds, chunksize=25))
                for result in results:
                    _count(sweep, result)
                    if fail_fast and (result.violation or result.liveness_failure):
                        break
        else:
            for seed in seeds:
                result = run(seed)
                _count(sweep, result)
                if fail_fast and (result.violation or result.liveness_failure):
                    break
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    sweep.failures.sort(key=lambda r: r.seed)
    return sweep


def _count(sweep: Sweep, result: SeedResult) -> None:
    sweep.steps += result.ticks
    sweep.disk_seeds += result.disk
    sweep.damaged_seeds += bool(result.damaged_logs)
    sweep.damaged_logs += result.damaged_logs
    sweep.max_term = max(sweep.max_term, result.max_term)
    if result.violation or result.liveness_failure:
        sweep.failures.append(result)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seeds", type=click.IntRange(min=1), default=200, show_default=True, help="run seeds FIRST..FIRST+SEEDS-1")
@click.option("--first-seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), help="run exactly this seed (replay a failure)")
@click.option("--trace", is_flag=True, help="with --seed: print what happened, tick by tick")
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary object")
@click.option("--workers", type=click.IntRange(min=1), default=min(2, multiprocessing.cpu_count()), show_default=True,
              help="processes running seeds in parallel")
@click.option("--fail-fast", is_flag=True, help="stop at the first failing seed")
@click.option("--inject-bug", type=click.Choice(INJECTABLE_BUGS),
              help="put a known bug back, to check that the seeds catch it")
def sim(seeds, first_seed, seed, trace, as_json, workers, fail_fast, inject_bug):
    """Run the Raft simulator over seeded failure scenarios (exit 1 if any seed fails)."""
    args = SimpleNamespace(seeds=seeds, first_seed=first_seed, seed=seed, trace=trace, json=as_json,
                              workers=workers, fail_fast=fail_fast, inject_bug=inject_bug)
    sys.exit(_run(args))


def main(argv: Optional[list[str]] = None, prog_name: str = "python -m distlog.consensus.sim") -> int:
    """`python -m distlog.consensus.sim` (and `distlog sim`): the sim command's exit code."""
    try:
        sim.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as exiting:
        return exiting.code if isinstance(exiting.code, int) else 1
    return 0


def _run(args) -> int:
    config = SimConfig(inject_bug=args.inject_bug)
    # Recovery cutting off a torn tail after a simulated crash, or quarantining the damage the
    # simulator made, is expected, not news.
    logging.getLogger("distlog.log").setLevel(logging.CRITICAL)

    if args.seed is not None:
        result = run_seed(args.seed, trace=args.trace, config=config)
        if args.trace:
            print("\n".join(result.trace))
        failed = bool(result.violation or result.liveness_failure)
        summary = {"seeds": 1, "violations": int(bool(result.violation)),
                   "liveness_failures": int(bool(result.liveness_failure)), "steps": result.ticks,
                   "disk_seeds": int(result.disk), "damaged_seeds": int(bool(result.damaged_logs)),
                   "damaged_logs": result.damaged_logs, "max_term": result.max_term}
        print(json.dumps(summary) if args.json else
              f"seed {args.seed}: {'FAILED: ' + (result.violation or result.liveness_failure) if failed else 'ok'}"
              f" after {result.ticks} ticks")
        return 1 if failed else 0

    started = time.monotonic()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    sweep = run_seeds(seeds, args.workers, args.fail_fast, config)
    elapsed_s = round(time.monotonic() - started, 2)
    failures = sweep.failures
    for failure in failures[:3]:
        replay = run_seed(failure.seed, trace=True, config=config)
        print(f"seed {failure.seed} FAILED at tick {failure.ticks}: "
              f"{failure.violation or failure.liveness_failure}", file=sys.stderr)
        print("\n".join(replay.trace[-80:]), file=sys.stderr)
        bug = f" --inject-bug {args.inject_bug}" if args.inject_bug else ""
        print(f"replay: python -m distlog.consensus.sim --seed {failure.seed}{bug} --trace", file=sys.stderr)
    if failures:
        print("failing seeds: " + " ".join(str(f.seed) for f in failures), file=sys.stderr)
    summary = {
        "seeds": len(seeds),
        "violations": sum(1 for f in failures if f.violation),
        "liveness_failures": sum(1 for f in failures if f.liveness_failure),
        "steps": sweep.steps,
        "elapsed_s": elapsed_s,
        "disk_seeds": sweep.disk_seeds,
        "damaged_seeds": sweep.damaged_seeds,
        "damaged_logs": sweep.damaged_logs,
        "max_term": sweep.max_term,
        "inject_bug": args.inject_bug,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(", ".join(f"{k}={v}" for k, v in summary.items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
