"""The Raft core: one node's consensus state machine, with no I/O, clock, thread or global RNG.

Theory of operation
===================

A RaftNode is driven by three inputs and produces one output:

  tick()                 one unit of logical time passed (the caller owns the clock)
  step(message)          a message from another node arrived
  propose(data, count)   (leader only) append a record batch of `count` records
  ready() -> Ready       what the caller must now do, then advance(ready) when done

Handling a Ready, in order:
  1. send ready.messages (the leader's appends and heartbeats: safe before persisting,
     thesis §10.2.1 — the leader counts itself only once its own entries are stable);
  2. if ready.start_over: reset the log to an empty log at that offset;
     append ready.entries (removing any tail at or after the first one's base_offset);
     persist ready.hard_state; then storage.sync(), so all of it is durable (a driver of
     many groups writes every Ready of a loop turn first and syncs each storage once);
  3. send ready.messages_after_persist (votes and acks: they promise what was just written);
  4. apply ready.committed_entries (none are delivered with Config.deliver_committed_entries off);
  5. call advance(ready). Do not call tick/step/propose between ready() and advance().

Positions are record offsets: an entry is a batch [base_offset, last_offset] and its index
is its last_offset (see messages.py). The leader assigns offsets on propose and stamps the
base offset and its term into the batch through the injected `stamp_batch`, so the core
never decodes a batch. A new leader appends a one-record leader marker batch (as Kafka's
KRaft writes a LeaderChange control record), which is the "no-op" of §8 that lets it commit
entries of earlier terms: a leader commits by counting replicas only entries of its own
term (§5.4.2); earlier ones become committed with them.

The log the core sees is the caller's stable Storage plus an in-memory unstable suffix
(entries appended but not yet persisted) and possibly a pending start-over. The core never
writes Storage; the caller does, from the Ready.

Every message carries a term; step() handles it in one place (§5.1): a higher term makes
this node a follower of it, a lower one is dropped (or answered, so a stale leader learns
the newer term: with a MsgAppResp that matches nothing, because the same node may later
lead exactly that newer term, and a reply claiming our last index would then count as a
match it never checked). Then the message goes to the handler table of the current role, swapped
on every role change, as in etcd's raft.

Elections (§5.2) start after a randomized election timeout of [T, 2T) ticks drawn from the
node's injected RNG. With pre_vote (thesis §9.6) a node first asks whether it could win
without changing any term, so a partitioned node that rejoins does not depose a working
leader. With check_quorum a leader that has not heard from a majority during an election
timeout steps down, and followers that heard a leader within the timeout ignore vote
requests (leader lease), so only the majority side of a partition accepts writes.

Replication (§5.3): the leader keeps a Progress per follower. In PROBE it sends one append
at a time and waits; a rejection carries a hint (the follower's last index at or below the
probe whose term is <= the probe's term) so the leader skips a whole conflicting term per
round trip. In REPLICATE it streams appends optimistically. When the entries a follower
needs are below the leader's log start (retention removed them, all committed), the leader
sends MsgStartOver and the follower continues from an empty log at the log start.
A follower truncates its tail from the first entry that conflicts with the leader's, and
never below its commit index (that would be a safety bug, so it raises).

Leadership transfer (thesis §3.10): the leader stops accepting proposals, brings the
target up to date, sends MsgTimeoutNow; the target campaigns at once, skipping pre-vote
and the lease check. The transfer is abandoned after one election timeout.

Membership changes (thesis §4, single-server changes)
=====================================================

A group has voters, who elect, count for commit and for check-quorum, and learners, who
receive the log and the commit index like followers but never campaign (not even a
pre-vote) and are never counted. The leader keeps a Progress for each learner too, so a
driver watches match_index(learner) to decide when it has caught up. Reassigning a replica
is four steps, each a membership entry: add_learner(new), wait until it has caught up,
promote_learner(new), remove_member(old). Each changes one server, so any majority of the
old voters overlaps any majority of the new ones (thesis §4.1).

A membership entry is a one-record batch holding the whole new membership, written by the
injected Config.membership_entry and recognised by Config.read_membership (a broker makes
it a control batch, like the leader marker), so the core still never decodes a batch. The
bootstrap membership (Config.peers and learners) is what is in effect below the first
entry; a node joining later is given the same bootstrap and learns the rest from the log.

A membership takes effect when its entry is appended to a node's log, committed or not, as
in the dissertation (§4.1), not when it is committed as etcd does. Why: the membership is
then a pure function of the log the core holds, so it reverts by itself when a conflicting
tail is truncated (the membership becomes the last membership entry left, see
membership.MembershipLog), and on restart it is recovered from the log alone: no separately
persisted "applied configuration" to keep in step with a driver's apply progress. It also
makes removing the leader straightforward: the leader uses the new membership at once, so it
replicates the entry removing it and commits it by a majority of the new voters, without
counting itself, and steps down once it is committed (§4.2.2), handing over with
MsgTimeoutNow to a voter that holds the whole log. Safety needs two rules, both enforced by
the leader: at most one membership entry uncommitted at a time (a second change raises
MembershipChangePendingError), and a new leader accepts a change only once it has committed
an entry of its own term (Ongaro's fix of the single-server change bug: an uncommitted change
of an earlier leader could otherwise survive beside the new one and elect a second leader).

Every node answers vote requests whatever its own membership says (a learner too): the
candidate's log may already make it a voter, and a group whose newly promoted voter refused
to vote could have a majority of its voters up and still elect nobody (etcd PR 10998). A
candidate counts only the votes of voters in its own membership. A removed node never
learns of its removal (the leader stops sending to it when the entry is appended), so it
times out and keeps campaigning; pre-vote keeps it from raising any term, and the voters'
leader lease (check_quorum) makes them ignore it while they hear the leader (§4.2.3).

Repair (protocol-aware recovery, Alagappan et al., FAST '18)
===========================================================

A node whose storage lost entries it may have acknowledged (corruption its recovery cut off and
quarantined; storage.repair_until names the last such offset) must not vote until it holds that
far again: a committed entry it lost may then be on fewer than a majority, and its vote could
elect a leader without it. So while repairing, a node neither campaigns nor grants a vote or a
pre-vote; it still appends, and acknowledges what it really holds, so it is repaired by the
ordinary log repair. Withholding votes is enough: every majority of the non-repairing voters
still overlaps every committed entry's majority in a node that holds it (if the repairing ones
were all of that majority, no majority can elect at all, and the group waits for a healthy
node). Once its log is durable up to repair_until, every entry past the damage came from a
leader, and it votes again.

A leader still remembers the old match index of a node that lost entries, and would never send
below it. Such a node says so: its rejection's hint (the end of what it holds that can match)
lies below the leader's match for it, and the leader lowers the match to the hint and probes
from there (lowering a match is always safe: it can only delay a commit). A node that hears a
heartbeat whose commit index lies past its log answers with such a rejection too, since an
idle leader would otherwise send it nothing.

Restart: the core asks the storage for its membership entries and base_membership (the
membership below the log start, moved by retention and by a start-over; MsgStartOver carries
the leader's). See log_store.Storage for what a durable storage must provide.
"""

from __future__ import annotations

import enum
import random
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from distlog.consensus.log_store import Span, Storage
from distlog.consensus.membership import (
    Membership,
    MembershipChangePendingError,
    MembershipLog,
    membership_as_data,
    membership_in_data,
)
from distlog.consensus.messages import (
    Entry,
    HardState,
    Message,
    MsgApp,
    MsgAppResp,
    MsgHeartbeat,
    MsgHeartbeatResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgStartOver,
    MsgTimeoutNow,
    MsgVote,
    MsgVoteResp,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeaderError(Exception):
    """The node cannot accept a proposal; `leader_id` is who to ask instead (None if unknown)."""

    def __init__(self, node_id: int, leader_id: Optional[int]):
        super().__init__(f"node {node_id} is not the leader (try node {leader_id})"
                         if leader_id is not None else
                         f"node {node_id} is not the leader and knows no leader (retry later)")
        self.leader_id = leader_id


def _within_bytes(entries: list, budget: int) -> list:
    """The longest prefix of entries whose data fits in budget bytes, the first one always."""
    total = 0
    for count, entry in enumerate(entries):
        total += len(entry.data)
        if total > budget and count:
            return entries[:count]
    return entries


def _no_stamp(data: object, base_offset: int, leader_term: int) -> object:
    return data


def _empty_marker(base_offset: int, leader_term: int) -> object:
    return b""


@dataclass
class Config:
    """How one node behaves. `peers` and `learners` are the bootstrap membership: the voters and
    learners in effect below the first entry the group ever wrote. Every node of a group is
    given the same bootstrap membership, a node added later too (it is not in it, so it waits
    to be sent the log); after that, membership entries in the log decide."""

    node_id: int
    peers: tuple[int, ...]
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 2
    pre_vote: bool = True
    check_quorum: bool = True
    max_entries_per_msg: int = 64
    # At most this many bytes of entry data per append, the first entry always (None: no cap).
    # With max_in_flight_msgs it bounds what a leader holds queued for a slow follower: 32
    # appends of 64 one-megabyte batches would be 2 GiB (etcd's MaxSizePerMsg).
    max_bytes_per_msg: Optional[int] = None
    max_in_flight_msgs: int = 32
    # Give every node its own seed: equal seeds mean equal election timeouts and split votes.
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    # (data, base_offset, leader_term) -> data stamped with both (distlog.log.batch.stamp_batch).
    stamp_batch: Callable[[object, int, int], object] = _no_stamp
    # (base_offset, leader_term) -> data of the one-record batch a new leader appends.
    leader_marker: Callable[[int, int], object] = _empty_marker
    # Where the state machine already is; None means it is rebuilt from the log start.
    applied_offset: Optional[int] = None
    # Append a leader marker only where it is needed (see _become_leader): not on an empty
    # log, not in a single-voter group. Off, every new leader appends one (the tests of §8).
    marker_only_when_needed: bool = False
    learners: tuple[int, ...] = ()
    # (base_offset, leader_term, membership) -> data of the one-record batch holding a
    # membership entry (for a broker: a control batch, as leader_marker writes).
    membership_entry: Callable[[int, int, Membership], object] = membership_as_data
    # data -> the Membership a membership entry holds; None for every other batch. Called
    # once per entry a follower appends and per proposal, so it must be cheap for the others.
    read_membership: Callable[[object], Optional[Membership]] = membership_in_data
    # Whether ready() hands the newly committed entries over (read back from storage) for the
    # caller to apply. A log whose state machine is the log itself (a broker's partition:
    # readers read the log) has nothing to apply, and reading every batch back, crc-checked,
    # cost a follower a tenth of its time; then Ready.committed_entries stays empty and
    # Ready.applied_to alone says how far the commit moved.
    deliver_committed_entries: bool = True


@dataclass(frozen=True, slots=True)
class Ready:
    """What the caller must do now (order in the module comment), then advance(ready)."""

    hard_state: Optional[HardState]
    start_over: Optional[tuple[int, int]]  # (log_start_offset, start_term) to reset to first
    entries: tuple[Entry, ...]
    messages: tuple[Message, ...]
    messages_after_persist: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    # With start_over: the membership in effect below the new log start, for storage.reset's
    # third argument; None when that is the bootstrap membership (reset with two arguments).
    start_membership: Optional[Membership] = None
    # The index applied once this Ready is handled: the last committed entry's, also when
    # committed_entries is not delivered (Config.deliver_committed_entries); None: unchanged.
    applied_to: Optional[int] = None


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    START_OVER = "start-over"


@dataclass
class Progress:
    """The leader's view of one follower: `match` is the last index known replicated there.

    In REPLICATE, `in_flight` holds the last index of each unacknowledged append, so at most
    max_in_flight_msgs are outstanding (flow control, as etcd's Inflights).
    """

    match: int
    next: int
    state: ProgressState = ProgressState.PROBE
    paused: bool = False
    recent_active: bool = True
    in_flight: deque = field(default_factory=deque)

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.paused = False
        self.in_flight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = max(self.next, self.match + 1)
        self.paused = False
        self.in_flight.clear()

    def acknowledged(self, index: int) -> None:
        while self.in_flight and self.in_flight[0] <= index:
            self.in_flight.popleft()


class _RaftLog:
    """Stable storage plus the unstable suffix (and pending start-over) not yet persisted."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.unstable: list[Entry] = []
        self.unstable_lasts: list[int] = []
        self.start_over: Optional[tuple[int, int]] = None

    def log_start_offset(self) -> int:
        return self.start_over[0] if self.start_over else self.storage.log_start_offset

    def start_term(self) -> int:
        return self.start_over[1] if self.start_over else self.storage.start_term

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable_lasts[-1]
        if self.start_over:
            return self.start_over[0] - 1
        return self.storage.last_index

    def stable_last_index(self) -> int:
        if self.start_over:
            return self.start_over[0] - 1
        last = self.storage.last_index
        return min(last, self.unstable[0].base_offset - 1) if self.unstable else last

    def last_term(self) -> int:
        return self.term_at(self.last_index())

    def span_covering(self, offset: int) -> Optional[Span]:
        if self.unstable and offset >= self.unstable[0].base_offset:
            i = bisect_left(self.unstable_lasts, offset)
            if i == len(self.unstable):
                return None
            e = self.unstable[i]
            return Span(e.term, e.base_offset, e.last_offset)
        if self.start_over:
            return None
        return self.storage.span_at(offset)

    def term_at(self, index: int) -> Optional[int]:
        """The term of the entry ending exactly at `index`; None if no entry ends there."""
        if index == self.log_start_offset() - 1:
            return self.start_term()
        span = self.span_covering(index)
        if span is None or span.last_offset != index:
            return None
        return span.term

    def entries_from(self, base_offset: int, max_count: int) -> list[Entry]:
        if self.unstable and base_offset >= self.unstable[0].base_offset:
            i = bisect_left(self.unstable_lasts, base_offset)
            return self.unstable[i:i + max_count]
        if self.start_over:
            return []
        out = self.storage.entries_from(base_offset, max_count)
        if self.unstable:
            unstable_base = self.unstable[0].base_offset
            out = [e for e in out if e.last_offset < unstable_base]
            if len(out) < max_count and (out[-1].last_offset if out else base_offset - 1) == unstable_base - 1:
                out.extend(self.unstable[:max_count - len(out)])
        return out

    def append(self, entries: list[Entry]) -> None:
        base_offset = entries[0].base_offset
        if self.unstable and base_offset > self.unstable[0].base_offset:
            keep = bisect_left(self.unstable_lasts, base_offset)
            del self.unstable[keep:]
            del self.unstable_lasts[keep:]
        else:
            self.unstable.clear()
            self.unstable_lasts.clear()
        self.unstable.extend(entries)
        self.unstable_lasts.extend(e.last_offset for e in entries)

    def restart_at(self, log_start_offset: int, start_term: int) -> None:
        self.unstable.clear()
        self.unstable_lasts.clear()
        self.start_over = (log_start_offset, start_term)

    def mark_stable(self) -> None:
        self.unstable = []
        self.unstable_lasts = []
        self.start_over = None

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The last index <= `index` whose entry's term is <= `term` (log start - 1 at worst)."""
        start = self.log_start_offset()
        index = min(index, self.last_index())
        while index >= start:
            span = self.span_covering(index)
            if span.last_offset == index and span.term <= term:
                return index
            index = span.base_offset - 1
        return start - 1


def _stored_memberships(storage: Storage, bootstrap: Membership,
                        read_membership: Callable[[object], Optional[Membership]]) -> MembershipLog:
    """The membership entries of the stable log over the membership below its start. A
    storage without membership support holds a fixed membership."""
    base = getattr(storage, "base_membership", None) or bootstrap
    entries = storage.membership_entries() if hasattr(storage, "membership_entries") else ()
    return MembershipLog(base, [(e.last_offset, read_membership(e.data)) for e in entries])


_IMMEDIATE = (MsgApp, MsgHeartbeat, MsgStartOver, MsgTimeoutNow)
# The index of the empty log: a MsgAppResp claiming it tells the leader nothing but its term.
NOTHING_MATCHED = -1


class RaftNode:
    """One Raft node. See the module comment for how to drive it."""

    def __init__(self, config: Config, storage: Storage):
        self.config = config
        self.node_id = config.node_id
        self._log = _RaftLog(storage)
        self._bootstrap = Membership(config.peers, config.learners)
        self._memberships = _stored_memberships(storage, self._bootstrap, config.read_membership)
        self._quorum = 0
        self._is_voter = False
        self._voter_progress: list[Progress] = []  # (leader) the Progress of each voter
        hard_state = storage.hard_state()
        self.term = max(hard_state.term, self._log.last_term() or 0)
        self.vote = hard_state.vote if hard_state.term == self.term else None
        # Everything below the log start is committed; a log that lost its unflushed tail may
        # end below the persisted commit, and a commit index is only ever safe to lower.
        self.commit = min(max(hard_state.commit, storage.log_start_offset - 1), self._log.last_index())
        self.applied = (config.applied_offset if config.applied_offset is not None
                        else storage.log_start_offset - 1)
        # The last offset this node may have acknowledged and lost; None once it holds it (Repair).
        repair_until = getattr(storage, "repair_until", None)
        self.repair_until: Optional[int] = (repair_until if repair_until is not None
                                            and repair_until > self._log.last_index() else None)
        self._persisted_hard_state = hard_state
        self.role = Role.FOLLOWER
        self.leader_id: Optional[int] = None
        self.lead_transferee: Optional[int] = None
        self.progress: dict[int, Progress] = {}
        self._votes: dict[int, bool] = {}
        self._msgs: list[Message] = []
        self._msgs_after_persist: list[Message] = []
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._ready_pending = False
        self._handlers = self._follower_handlers
        self._membership_changed()
        self._reset_randomized_timeout()

    # ---- public view ---------------------------------------------------------------

    @property
    def high_watermark(self) -> int:
        """The commit index: the last offset known committed (consumers read up to it)."""
        return self.commit

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def log_start_offset(self) -> int:
        return self._log.log_start_offset()

    def term_at(self, index: int) -> Optional[int]:
        """The term of the entry ending at offset `index` (persisted or not); None if no entry
        ends there. At log_start_offset - 1 it is the term of the last removed entry."""
        return self._log.term_at(index)

    def match_index(self, peer: int) -> int:
        """(Leader only) the last offset known replicated on `peer`, a voter or a learner: a
        learner has caught up when its match index is close enough to last_index to promote."""
        return self.progress[peer].match

    @property
    def membership(self) -> Membership:
        """The membership in effect: the last membership entry in this node's log."""
        return self._memberships.latest

    @property
    def voters(self) -> tuple[int, ...]:
        return self._memberships.latest.voters

    @property
    def learners(self) -> tuple[int, ...]:
        return self._memberships.latest.learners

    @property
    def membership_change_pending(self) -> bool:
        """Whether the last membership entry in this node's log is not known committed yet (a
        leader then refuses another change)."""
        return self._memberships.latest_offset > self.commit

    def membership_at(self, offset: int) -> Membership:
        """The membership in effect at `offset` (the last membership entry at or below it)."""
        return self._memberships.at(offset)

    # ---- inputs ----------------------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time passed."""
        self._check_not_in_ready()
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout and self._may_campaign():
            self._election_elapsed = 0
            self._campaign(pre=self.config.pre_vote)

    def campaign(self) -> None:
        """Start an election now, as an election timeout would (pre-vote first if enabled).
        A node that is not a voter (a learner, a removed node) or is repairing never campaigns."""
        self._check_not_in_ready()
        if self.role is not Role.LEADER and self._may_campaign():
            self._election_elapsed = 0
            self._campaign(pre=self.config.pre_vote)

    def propose(self, data: object, record_count: int) -> Entry:
        """Append a batch of record_count records; returns the entry with its offsets.

        Raises NotLeaderError when this node is not the leader or is handing leadership off.
        """
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.node_id, self.leader_id)
        if self.lead_transferee is not None:
            raise NotLeaderError(self.node_id, self.lead_transferee)
        if record_count < 1:
            raise ValueError(f"a batch holds at least one record, got record_count={record_count}")
        if self.config.read_membership(data) is not None:
            raise ValueError("a membership entry cannot be proposed as data: use add_learner, "
                             "promote_learner or remove_member")
        return self._append_as_leader(data, record_count, self.config.stamp_batch)

    def add_learner(self, node_id: int) -> Entry:
        """(Leader only) append a membership entry adding node_id as a learner; returns it.

        Raises NotLeaderError, MembershipChangePendingError (another change is not committed
        yet, or this leader has not committed an entry of its own term: retry later), or
        ValueError (node_id is already a member)."""
        return self._propose_membership(lambda m: m.with_learner(node_id))

    def promote_learner(self, node_id: int) -> Entry:
        """(Leader only) append a membership entry making learner node_id a voter (once its
        match_index has caught up); raises as add_learner does."""
        return self._propose_membership(lambda m: m.promoted(node_id))

    def remove_member(self, node_id: int) -> Entry:
        """(Leader only) append a membership entry removing voter or learner node_id, this
        leader included (it steps down once the entry is committed); raises as add_learner."""
        return self._propose_membership(lambda m: m.without(node_id))

    def transfer_leadership(self, to: int) -> None:
        """(Leader only) hand leadership to `to` once it has caught up (thesis §3.10)."""
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.node_id, self.leader_id)
        if to not in self._memberships.latest.voters or to == self.node_id:
            raise ValueError(f"cannot transfer leadership of node {self.node_id} to {to} (voters: "
                             f"{list(self._memberships.latest.voters)})")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self._election_elapsed = 0
        if self.progress[to].match == self._log.last_index():
            self._send(MsgTimeoutNow(self.node_id, to, self.term))
        else:
            self._send_append(to)

    def heartbeat_from_leader(self, frm: int, term: int, commit: int) -> bool:
        """A fast path for a coalesced heartbeat (a driver with many groups receives most of them
        as "nothing new"). When it changes nothing but the election timer — a follower hearing
        the leader it already follows, in its own term, with no new commit — reset the timer and
        return True: the caller answers with MsgHeartbeatResp(term) itself, exactly what
        step(MsgHeartbeat) would have queued. Otherwise return False and change nothing; the
        caller then step()s the MsgHeartbeat."""
        if (self._ready_pending or self.role is not Role.FOLLOWER or term != self.term or self.leader_id != frm
                or commit > self.commit):
            # A commit past ours either moves it or lies past our log (we lost entries the
            # leader counts us for, see "Repair"): step() handles both.
            return False
        self._election_elapsed = 0
        return True

    def heartbeat_response_from(self, frm: int, term: int) -> bool:
        """The leader's fast path for a coalesced heartbeat response: when it only says the
        follower is alive (in this term, replicating, nothing in flight to unblock, nothing to
        send it), mark the follower active and return True; otherwise return False and change
        nothing (the caller step()s the MsgHeartbeatResp)."""
        if self._ready_pending or self.role is not Role.LEADER or term != self.term:
            return False
        pr = self.progress.get(frm)
        if (pr is None or frm == self.node_id or pr.state is not ProgressState.REPLICATE or pr.paused
                or len(pr.in_flight) >= self.config.max_in_flight_msgs or pr.match < self._log.last_index()):
            return False
        pr.recent_active = True
        return True

    def step(self, m: Message) -> None:
        """Handle one message. The term is checked here, once, for every message type."""
        self._check_not_in_ready()
        if m.term > self.term:
            if isinstance(m, (MsgVote, MsgPreVote)):
                in_lease = (self.config.check_quorum and self.leader_id is not None
                            and self._election_elapsed < self.config.election_timeout_ticks)
                if in_lease and not m.transfer:
                    # Heard from a live leader recently: this candidate is disruptive (§6 thesis 4.2.3).
                    return
            if isinstance(m, MsgPreVote) or (isinstance(m, MsgPreVoteResp) and not m.reject):
                pass  # a pre-vote changes no term; a granted one is answered at term + 1
            else:
                leader = m.frm if isinstance(m, (MsgApp, MsgHeartbeat, MsgStartOver)) else None
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            if isinstance(m, (MsgApp, MsgHeartbeat, MsgStartOver)):
                # A deposed leader: tell it the newer term so it steps down. The reply claims
                # only the empty prefix every log shares: its sender may win exactly this term
                # later and must not count our log, never checked against its own, as a match.
                self._send(MsgAppResp(self.node_id, m.frm, self.term, index=NOTHING_MATCHED))
            elif isinstance(m, MsgPreVote):
                self._send(MsgPreVoteResp(self.node_id, m.frm, self.term, reject=True))
            return
        if isinstance(m, (MsgVote, MsgPreVote)):
            self._handle_vote_request(m)
            return
        handler = self._handlers.get(type(m))
        if handler is not None:
            handler(self, m)

    # ---- output ----------------------------------------------------------------------

    def has_ready(self) -> bool:
        """Whether ready() has anything for the caller to do."""
        persisted = self._persisted_hard_state  # compared field by field: this runs per group per turn
        return bool(self._msgs or self._msgs_after_persist or self._log.unstable
                    or self._log.start_over or self.commit > self.applied
                    or self.term != persisted.term or self.vote != persisted.vote
                    or self.commit != persisted.commit)

    def take_messages(self) -> list:
        """Take the messages that may leave before anything is persisted (a leader's appends,
        heartbeats, start-overs and timeout-nows: the ones ready().messages would carry), so a
        driver of many groups sends an idle leader's heartbeats without building a Ready for
        them. What must wait for persistence stays for ready()."""
        self._check_not_in_ready()
        messages, self._msgs = self._msgs, []
        return messages

    def ready(self) -> Ready:
        """Collect what must be persisted, sent and applied; call advance() after doing it."""
        self._check_not_in_ready()
        hard_state = self._hard_state()
        committed: list[Entry] = []
        applied_to = None
        if self.commit > self.applied:
            if self.applied < self._log.log_start_offset() - 1:
                raise RuntimeError(
                    f"node {self.node_id}: retention removed entries {self.applied + 1}.."
                    f"{self._log.log_start_offset() - 1} before they were applied; bound retention "
                    f"and compaction by min(commit, applied)")
            if self.config.deliver_committed_entries:
                committed = [e for e in self._log.entries_from(self.applied + 1, self.commit - self.applied)
                             if e.last_offset <= self.commit]
                applied_to = committed[-1].last_offset if committed else None
            else:
                applied_to = self.commit  # an entry's index is its last offset: commit ends an entry
        rd = Ready(
            hard_state=hard_state if hard_state != self._persisted_hard_state else None,
            start_over=self._log.start_over,
            entries=tuple(self._log.unstable),
            messages=tuple(self._msgs),
            messages_after_persist=tuple(self._msgs_after_persist),
            committed_entries=tuple(committed),
            start_membership=(self._memberships.base if self._log.start_over
                              and self._memberships.base != self._bootstrap else None),
            applied_to=applied_to,
        )
        self._msgs = []
        self._msgs_after_persist = []
        self._ready_pending = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The caller persisted, sent and applied `rd`."""
        self._ready_pending = False
        if rd.start_over or rd.entries:
            self._log.mark_stable()
            if self.repair_until is not None and self._log.stable_last_index() >= self.repair_until:
                self.repair_until = None  # everything it may have acknowledged is durable again: it votes
        if rd.hard_state is not None:
            self._persisted_hard_state = rd.hard_state
        if rd.applied_to is not None:
            self.applied = rd.applied_to
        if self.role is Role.LEADER:
            me = self.progress[self.node_id]
            me.match = me.next - 1 if rd.entries else self._log.stable_last_index()
            if self._maybe_commit():
                self._leader_committed()

    # ---- roles -----------------------------------------------------------------------

    def _become_follower(self, term: int, leader_id: Optional[int]) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self.lead_transferee = None
        self._handlers = self._follower_handlers
        self._election_elapsed = 0
        self._reset_randomized_timeout()

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self.role = Role.PRE_CANDIDATE
            self._handlers = self._pre_candidate_handlers
            vote_term = self.term + 1
        else:
            self.term += 1
            self.vote = self.node_id
            self.role = Role.CANDIDATE
            self._handlers = self._candidate_handlers
            vote_term = self.term
        self.leader_id = None
        self._votes = {self.node_id: True}
        # Each round (pre-vote, then vote) gets a whole timeout for its round trips.
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        if self._quorum == 1:
            self._won_election()
            return
        msg_type = MsgPreVote if pre else MsgVote
        last_index, last_term = self._log.last_index(), self._log.last_term()
        for peer in self._memberships.latest.voters:
            if peer != self.node_id:
                self._send(msg_type(self.node_id, peer, vote_term, last_index, last_term, transfer))

    def _won_election(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._campaign(pre=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self.lead_transferee = None
        self._handlers = self._leader_handlers
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        self.progress = {}
        self._track_members()
        self.progress[self.node_id].match = self._log.stable_last_index()
        # The marker is this term's first entry; committing it commits every earlier one (§5.4.2).
        # With marker_only_when_needed it is skipped where it commits nothing, so a partition's
        # offsets hold only records (a new partition's first record is at offset 0, as Kafka users
        # expect, and a single-replica partition gains no gap per restart):
        # - a leader whose log holds no entry has no earlier entries to commit (a majority's logs
        #   are no more up to date than its own, so none holds an entry it lacks);
        # - the only voter of a group is a majority by itself: every entry it holds durably is
        #   committed, and no other leader can ever replace one.
        if self.config.marker_only_when_needed and self._quorum == 1:
            self.commit = max(self.commit, self._log.stable_last_index())
        elif not (self.config.marker_only_when_needed and self._log.last_index() < self._log.log_start_offset()):
            self._append_marker()

    def _append_marker(self) -> None:
        self._append_as_leader(None, 1, lambda _d, base, term: self.config.leader_marker(base, term))

    def _append_as_leader(self, data, record_count, stamp, membership: Optional[Membership] = None) -> Entry:
        base_offset = self._log.last_index() + 1
        entry = Entry(self.term, base_offset, base_offset + record_count - 1,
                      stamp(data, base_offset, self.term))
        self._log.append([entry])
        self.progress[self.node_id].next = entry.last_offset + 1
        if membership is not None:
            # In effect from now on, on the leader as on every node that appends it.
            self._memberships.append(entry.last_offset, membership)
            self._membership_changed()
        self._broadcast_append()
        return entry

    # ---- handlers shared by roles ----------------------------------------------------

    def _handle_vote_request(self, m) -> None:
        pre = isinstance(m, MsgPreVote)
        can_vote = self.repair_until is None and (
                    self.vote == m.frm
                    or (self.vote is None and self.leader_id is None)
                    or (pre and m.term > self.term))
        up_to_date = (m.last_term, m.last_index) >= (self._log.last_term(), self._log.last_index())
        if can_vote and up_to_date:
            if pre:
                self._send(MsgPreVoteResp(self.node_id, m.frm, m.term, reject=False))
            else:
                self._election_elapsed = 0
                self.vote = m.frm
                self._send(MsgVoteResp(self.node_id, m.frm, self.term, reject=False))
        else:
            resp = MsgPreVoteResp if pre else MsgVoteResp
            self._send(resp(self.node_id, m.frm, self.term, reject=True))

    def _tally(self, m) -> None:
        if m.frm not in self._memberships.latest.voters:
            return  # a learner answers when asked (it may be a voter in the asker's log), but only voters count
        self._votes.setdefault(m.frm, not m.reject)
        granted = sum(self._votes.values())
        if granted >= self._quorum:
            self._won_election()
        elif len(self._votes) - granted >= self._quorum:
            self._become_follower(self.term, None)

    # ---- follower --------------------------------------------------------------------

    def _follower_heard_leader(self, m) -> None:
        self._election_elapsed = 0
        self.leader_id = m.frm

    def _follower_append(self, m: MsgApp) -> None:
        self._follower_heard_leader(m)
        self._handle_append(m)

    def _handle_append(self, m: MsgApp) -> None:
        log = self._log
        if m.prev_index < self.commit:
            # Everything up to our commit index is committed, hence identical on the leader.
            self._send(MsgAppResp(self.node_id, m.frm, self.term, index=self.commit))
            return
        if log.term_at(m.prev_index) != m.prev_term:
            hint_index = log.find_conflict_by_term(min(m.prev_index, log.last_index()), m.prev_term)
            self._send(MsgAppResp(self.node_id, m.frm, self.term, index=m.prev_index, reject=True,
                                  hint_index=hint_index, hint_term=log.term_at(hint_index)))
            return
        last_new = m.entries[-1].last_offset if m.entries else m.prev_index
        for i, entry in enumerate(m.entries):
            if log.term_at(entry.last_offset) != entry.term:
                # First conflicting (or new) entry: everything from here on is replaced (§5.3).
                if entry.base_offset <= self.commit:
                    raise AssertionError(
                        f"node {self.node_id}: entry at {entry.base_offset} conflicts with a committed "
                        f"entry (commit {self.commit})")
                log.append(list(m.entries[i:]))
                self._note_appended(m.entries[i:])
                break
        self._commit_to(min(m.commit, last_new))
        self._send(MsgAppResp(self.node_id, m.frm, self.term, index=last_new))

    def _follower_heartbeat(self, m: MsgHeartbeat) -> None:
        self._follower_heard_leader(m)
        log = self._log
        last_index = log.last_index()
        self._commit_to(min(m.commit, last_index))
        self._send(MsgHeartbeatResp(self.node_id, m.frm, self.term))
        if m.commit > last_index:
            # The leader thinks we hold entries we lost (see "Repair"): tell it where we end.
            self._send(MsgAppResp(self.node_id, m.frm, self.term, index=m.commit, reject=True,
                                  hint_index=last_index, hint_term=log.term_at(last_index)))

    def _follower_start_over(self, m: MsgStartOver) -> None:
        self._follower_heard_leader(m)
        boundary = m.log_start_offset - 1
        if boundary <= self.commit or self._log.term_at(boundary) == m.start_term:
            # We already hold the log up to the leader's start: nothing to discard.
            self._send(MsgAppResp(self.node_id, m.frm, self.term, index=max(boundary, self.commit)))
            return
        # Our entry at the boundary differs or is missing, so nothing after it matches either.
        self._log.restart_at(m.log_start_offset, m.start_term)
        self._memberships.restart(m.membership or self._bootstrap)
        self._membership_changed()
        self.commit = boundary
        self.applied = boundary
        self._send(MsgAppResp(self.node_id, m.frm, self.term, index=boundary))

    def _follower_timeout_now(self, m: MsgTimeoutNow) -> None:
        if self._may_campaign():
            self._campaign(pre=False, transfer=True)

    # ---- candidates ------------------------------------------------------------------

    def _candidate_hears_leader(self, m) -> None:
        # Same term (a higher one was handled in step): someone else won this election.
        self._become_follower(self.term, m.frm)
        self._handlers[type(m)](self, m)

    def _candidate_vote_resp(self, m: MsgVoteResp) -> None:
        self._tally(m)

    # ---- leader ----------------------------------------------------------------------

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_timeout_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum:
                # Voters only; this leader counts itself unless the entry removing it is pending.
                active = sum(peer == self.node_id or pr.recent_active
                             for peer, pr in zip(self._memberships.latest.voters, self._voter_progress))
                for peer, pr in self.progress.items():
                    pr.recent_active = peer == self.node_id
                if active < self._quorum:
                    self._become_follower(self.term, None)
                    return
            self.lead_transferee = None
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            for peer, pr in self.progress.items():
                if peer != self.node_id:
                    self._send(MsgHeartbeat(self.node_id, peer, self.term, min(pr.match, self.commit)))

    def _leader_app_resp(self, m: MsgAppResp) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            if self._maybe_decrease_next(pr, m):
                self._send_append(m.frm)
            return
        if m.index > pr.match:
            pr.match = m.index
            if pr.state is not ProgressState.REPLICATE:
                pr.become_replicate()
            pr.acknowledged(m.index)
            if self._maybe_commit():
                self._leader_committed()
            elif pr.match < self._log.last_index():
                self._send_append(m.frm)
        elif pr.state is ProgressState.PROBE:
            pr.paused = False
        if m.frm == self.lead_transferee and pr.match == self._log.last_index():
            self._send(MsgTimeoutNow(self.node_id, m.frm, self.term))

    def _maybe_decrease_next(self, pr: Progress, m: MsgAppResp) -> bool:
        """Move next back after a rejection; False if the rejection is stale."""
        if m.hint_index < pr.match:
            # The follower holds less than it acknowledged (see "Repair"), or this rejection is
            # older than its acknowledgement: either way its match may only be lowered, to an
            # entry boundary of ours at or below its hint (the hint may fall inside one of our
            # entries), or to the hint itself below our log start (the next send is then a
            # MsgStartOver). Never raised: find_conflict_by_term answers no lower than our start.
            start = self._log.log_start_offset()
            lowered = (m.hint_index if m.hint_index < start - 1
                       else self._log.find_conflict_by_term(m.hint_index, m.hint_term))
            pr.match = min(pr.match, lowered)
            pr.become_probe()
            return True
        if pr.state is ProgressState.REPLICATE:
            if m.index <= pr.match:
                return False
            pr.become_probe()
            return True
        if pr.state is ProgressState.START_OVER or pr.next - 1 != m.index:
            return False
        probe = self._log.find_conflict_by_term(m.hint_index, m.hint_term)
        if probe >= m.index:
            # Only at our log start: the follower needs entries retention removed, so the
            # next send goes below the log start and becomes a MsgStartOver.
            probe = m.index - 1
        pr.next = max(min(m.index, probe) + 1, pr.match + 1)
        pr.paused = False
        return True

    def _leader_heartbeat_resp(self, m: MsgHeartbeatResp) -> None:
        pr = self.progress.get(m.frm)
        if pr is None:
            return
        pr.recent_active = True
        pr.paused = False
        if pr.state is ProgressState.START_OVER:
            pr.become_probe()  # the start-over or its answer may be lost: try again
        elif len(pr.in_flight) >= self.config.max_in_flight_msgs:
            pr.in_flight.popleft()  # appends may be lost: let one more through to find out
        if pr.match < self._log.last_index():
            self._send_append(m.frm)

    def _maybe_commit(self) -> bool:
        matches = sorted((pr.match for pr in self._voter_progress), reverse=True)
        index = matches[self._quorum - 1]
        if index > self.commit and self._log.term_at(index) == self.term:
            self.commit = index
            return True
        return False

    def _leader_committed(self) -> None:
        """The commit index moved: tell the followers. Once the entry removing this leader is
        committed, step down (thesis §4.2.2), handing over to a voter holding the whole log so
        the group need not wait an election timeout for its next leader."""
        self._broadcast_append()
        if self._is_voter or self._memberships.latest_offset > self.commit:
            return
        last_index = self._log.last_index()
        caught_up = [peer for peer in self._memberships.latest.voters if self.progress[peer].match == last_index]
        if caught_up:
            self._send(MsgTimeoutNow(self.node_id, caught_up[0], self.term))
        self._become_follower(self.term, None)

    def _broadcast_append(self) -> None:
        for peer in self.progress:
            if peer != self.node_id:
                self._send_append(peer)

    def _send_append(self, to: int) -> None:
        pr = self.progress[to]
        if pr.paused or pr.state is ProgressState.START_OVER:
            return
        log = self._log
        prev_index = pr.next - 1
        start = log.log_start_offset()
        if prev_index < start - 1:
            pr.state = ProgressState.START_OVER
            membership = self._memberships.at(start - 1)
            self._send(MsgStartOver(self.node_id, to, self.term, start, log.start_term(), self.commit,
                                    None if membership == self._bootstrap else membership))
            return
        last_index = log.last_index()
        while True:
            if len(pr.in_flight) >= self.config.max_in_flight_msgs:
                return
            prev_term = log.term_at(prev_index)
            assert prev_term is not None, f"leader {self.node_id}: next {pr.next} is not after an entry"
            entries = log.entries_from(pr.next, self.config.max_entries_per_msg)
            if self.config.max_bytes_per_msg is not None:
                entries = _within_bytes(entries, self.config.max_bytes_per_msg)
            self._send(MsgApp(self.node_id, to, self.term, prev_index, prev_term, tuple(entries),
                              self.commit))
            if pr.state is not ProgressState.REPLICATE:
                pr.paused = True
                return
            if not entries:
                return
            pr.next = entries[-1].last_offset + 1
            pr.in_flight.append(pr.next - 1)
            if pr.next > last_index:
                return
            prev_index = pr.next - 1

    # ---- membership ------------------------------------------------------------------

    def _propose_membership(self, change: Callable[[Membership], Membership]) -> Entry:
        self._check_not_in_ready()
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.node_id, self.leader_id)
        if self.lead_transferee is not None:
            raise NotLeaderError(self.node_id, self.lead_transferee)
        pending = self._memberships.latest_offset
        if pending > self.commit:
            raise MembershipChangePendingError(
                f"node {self.node_id}: the membership change at offset {pending} is not committed yet "
                f"(high watermark {self.commit}); one change at a time: retry once it is", pending)
        if self._log.term_at(self.commit) != self.term:
            if self._log.last_term() != self.term:
                self._append_marker()  # skipped on election (marker_only_when_needed): needed now
            last_index = self._log.last_index()
            raise MembershipChangePendingError(
                f"leader {self.node_id} has committed no entry of its term {self.term} yet, and until it "
                f"has, a change could conflict with an uncommitted one of an earlier leader; retry once "
                f"offset {last_index} is committed", last_index)
        membership = change(self._memberships.latest)
        return self._append_as_leader(
            None, 1, lambda _d, base, term: self.config.membership_entry(base, term, membership), membership)

    def _note_appended(self, entries) -> None:
        """Keep the membership in step with the log: `entries` replaced everything from their
        base offset, so a membership entry cut off with the old tail is reverted."""
        changed = self._memberships.truncate_from(entries[0].base_offset)
        read_membership = self.config.read_membership
        for entry in entries:
            membership = read_membership(entry.data)
            if membership is not None:
                self._memberships.append(entry.last_offset, membership)
                changed = True
        if changed:
            self._membership_changed()

    def _membership_changed(self) -> None:
        membership = self._memberships.latest
        self._quorum = len(membership.voters) // 2 + 1
        self._is_voter = self.node_id in membership.voters
        if self.role is Role.LEADER:
            self._track_members()

    def _track_members(self) -> None:
        """(Leader) a Progress for every voter and learner, and for itself even once its removal
        is appended (it replicates that entry until it is committed, thesis §4.2.2)."""
        membership = self._memberships.latest
        for peer in [peer for peer in self.progress if peer not in membership and peer != self.node_id]:
            del self.progress[peer]
        next_index = self._log.last_index() + 1
        for peer in membership.voters + membership.learners:
            if peer not in self.progress:
                self.progress[peer] = Progress(match=-1, next=next_index)
        self.progress.setdefault(self.node_id, Progress(match=-1, next=next_index))
        self._voter_progress = [self.progress[peer] for peer in membership.voters]
        if self.lead_transferee is not None and self.lead_transferee not in membership.voters:
            self.lead_transferee = None

    # ---- helpers ---------------------------------------------------------------------

    def _commit_to(self, index: int) -> None:
        if index > self.commit:
            self.commit = index

    def _send(self, m: Message) -> None:
        if self.role is Role.LEADER and isinstance(m, _IMMEDIATE):
            self._msgs.append(m)
        else:
            self._msgs_after_persist.append(m)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.commit)

    def _may_campaign(self) -> bool:
        return self._is_voter and self.repair_until is None

    def _reset_randomized_timeout(self) -> None:
        timeout = self.config.election_timeout_ticks
        self._randomized_timeout = timeout + self.config.rng.randrange(timeout)

    def _check_not_in_ready(self) -> None:
        if self._ready_pending:
            raise RuntimeError("call advance() for the last Ready before feeding the node more input")

    _follower_handlers = {
        MsgApp: _follower_append,
        MsgHeartbeat: _follower_heartbeat,
        MsgStartOver: _follower_start_over,
        MsgTimeoutNow: _follower_timeout_now,
    }
    _pre_candidate_handlers = {
        MsgApp: _candidate_hears_leader,
        MsgHeartbeat: _candidate_hears_leader,
        MsgStartOver: _candidate_hears_leader,
        MsgPreVoteResp: _candidate_vote_resp,
    }
    _candidate_handlers = {
        MsgApp: _candidate_hears_leader,
        MsgHeartbeat: _candidate_hears_leader,
        MsgStartOver: _candidate_hears_leader,
        MsgVoteResp: _candidate_vote_resp,
    }
    _leader_handlers = {
        MsgAppResp: _leader_app_resp,
        MsgHeartbeatResp: _leader_heartbeat_resp,
    }
