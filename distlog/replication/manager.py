"""ReplicaManager: every Raft group on one broker, driven from the broker's loop.

Theory of operation
===================

The broker's loop calls, each turn:

  receive(frame)   for every RaftRequest that arrived (a peer's messages for all groups);
  tick(now)        which ticks every group once per TICK_S of the monotonic clock;
  process(now)     which handles the Ready of every group that may have one:
                     1. take node.ready(); queue ready.messages at once (a leader's appends may
                        leave before its own write: it counts itself only once persisted), and
                        send them before the fsync below when they carry entries;
                     2. write: start-over, entries, hard state (PartitionStorage, no fsync yet);
                     3. group commit: one sync() per written group, all groups of the turn
                        together, so many partitions and producers share the fsync wait;
                     4. queue ready.messages_after_persist (votes and acks promise what step 3
                        made durable), then advance();
                   a few rounds, since advance can produce more (a leader that commits tells
                   its followers at once);
  flush_outgoing() which sends every peer one frame set (wire.py) with all of it.

acks: the broker's ProduceWaiters (acks.py) look at `synced_offset` (acks=1) and the commit
index (acks=all) after process(), and only then are replies sent.

Durability decision: a replicated group (more than one voter) fsyncs its Raft entries and
hard state before any ack or vote, whatever the topic's flush.policy says: a vote or commit
never counts an entry that could vanish in a crash of that node. flush.policy keeps its
meaning for single-replica partitions, where it is the only copy's durability knob (as before
replication: `always` fsyncs before the ack, `interval:<ms>` and `never` trade the last
moments of writes for throughput). Hard-state changes (term, vote) are always durable first.
The topic config `unsafe.skip.raft.fsync=true` (log/config.py) gives a replicated group the
sole copy's rule: its flush.policy decides when entries reach the disk, so under `never` a
follower acknowledges what is only in its page cache and a power loss on a majority can take
back an acks=all write. It is for chaos control runs only; term and vote stay durable first.

Leadership bookkeeping lives here too: in-sync replicas (a follower is in sync while it has
caught up with the leader's log end of some moment within REPLICA_LAG_TIME_MAX_S, Kafka's
replica.lag.time.max.ms), reports of the groups this broker leads to every peer
(leadership.py), preferred-leader restoration (a group led elsewhere than by its first replica
hands leadership back once that replica has been caught up for PREFERRED_LEADER_DELAY_S), and
the leadership hand-off of a broker shutting down.

The manager never touches a socket: it is given a `send(peer_id, body, entry_frames) -> bool`
callable (False: the frame set could not leave), so tests drive whole clusters of managers in
memory.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from distlog.consensus.hard_state_store import HardStateStore
from distlog.consensus.messages import MsgHeartbeat, MsgHeartbeatResp
from distlog.consensus.raft import Role
from distlog.log.errors import CorruptDataError
from distlog.consensus.membership import MembershipChangePendingError
from distlog.replication import reassignment
from distlog.replication.leadership import LeaderBook
from distlog.replication.replica import NotLeaderForPartitionError, PartitionReplica
from distlog.replication.wire import PeerFrame, encode_frame

# One Raft tick. With the settings in replica.RaftSettings (4 ticks to an election, a
# heartbeat every 2) a follower starts an election 0.5-0.9 s after its leader went quiet, and
# an idle group costs one heartbeat per follower every 250 ms. Every group is ticked and
# heartbeats, so the tick is most of what many idle partitions cost (bench/idle.py).
TICK_S = 0.125
# After a stall (a paused process, a long fsync) tick at most this many times in one turn, so a
# broker that wakes up does not time out every group at once before hearing from anyone.
MAX_TICKS_PER_TURN = 3
# Rounds of Ready handling per turn (see the module docstring).
READY_ROUNDS = 3
HEARTBEAT_FULL_EVERY_S = 2.0
LEADER_REPORT_EVERY_S = 1.0
ISR_CHECK_EVERY_S = 0.5
REPLICA_LAG_TIME_MAX_S = 10.0
PREFERRED_LEADER_DELAY_S = 3.0
PREFERRED_LEADER_CHECK_EVERY_S = 1.0
# A peer heard from within this long counts as alive (leadership is handed only to live ones).
PEER_ALIVE_S = 1.0


class ReplicaManager:
    """All PartitionReplicas of one broker and the Raft traffic between them and their peers."""

    def __init__(self, broker_id: int, send: Callable[[int, bytes, list], None],
                 logger=None, clock: Callable[[], float] = time.monotonic,
                 hard_state_store: Optional[HardStateStore] = None):
        self.broker_id = broker_id
        # Where the groups' hard states live (one file per broker), flushed once per round.
        self.hard_state_store = hard_state_store
        self._send = send
        self._logger = logger
        self._clock = clock
        self.incarnation = int.from_bytes(os.urandom(4), "little")
        self.groups: dict = {}  # (topic, partition) -> PartitionReplica
        self.peers: set = set()  # every other broker of the cluster (leader reports go to all)
        self.leaders = LeaderBook()
        # For the broker: groups whose high watermark moved in the last process() (wake parked
        # fetches), and groups that failed (a write, a sync, a core safety check) and were
        # dropped, with why, until take_failed() hands them over.
        self.hw_advanced: set = set()
        self.failed: dict = {}
        self.damaged: dict = {}  # key -> (replica, CorruptDataError): see report_damage
        # Single-replica groups under flush.policy=interval with writes not yet flushed.
        self.unflushed: set = set()
        self._touched: set = set()
        self._outgoing: dict = {}  # peer -> PeerFrame
        self._last_tick_s = clock()
        self._hw: dict = {}
        self._role: dict = {}  # key -> (role, term) last seen, to notice changes
        # Heartbeat coalescing (wire.py): values last sent to / heard from each peer.
        self._hb_sent: dict = {}
        self._hbr_sent: dict = {}
        self._hb_heard: dict = {}
        self._hbr_heard: dict = {}
        self._peer_incarnation: dict = {}
        self._heard_at: dict = {}  # peer -> when its last frame arrived
        self._next_hb_reset_s = 0.0
        # In-sync tracking: key -> {peer: when last caught up}; key -> (last index, when).
        self._caught_up: dict = {}
        self._isr_mark: dict = {}
        self._next_isr_check_s = 0.0
        self._reported: dict = {}  # key -> (epoch, isr) last reported
        self._next_full_report_s = 0.0
        self._preferred_ready_since: dict = {}
        self._next_preferred_check_s = 0.0
        self.shutting_down = False
        # For the broker's metrics: counts it reads, and a callable given each fsync's seconds.
        self.stats = {"leader_elections": 0, "term_changes": 0}
        self.on_fsync: Optional[Callable[[float], None]] = None

    # ---- membership of groups ----------------------------------------------------------

    def add(self, replica: PartitionReplica, campaign: bool = False) -> None:
        """Drive `replica` from now on; `campaign` starts an election at once (its preferred
        leader does so when the group is created or the broker starts, so a new topic has
        leaders without waiting out an election timeout; pre-vote keeps it from disrupting a
        working leader)."""
        self.groups[replica.key] = replica
        self._hw[replica.key] = replica.high_watermark
        if campaign:
            replica.node.campaign()
        self._touched.add(replica.key)

    def remove(self, key) -> Optional[PartitionReplica]:
        replica = self.groups.pop(key, None)
        self._touched.discard(key)
        self.unflushed.discard(key)
        for table in (self._hw, self._role, self._caught_up, self._isr_mark, self._reported,
                      self._preferred_ready_since):
            table.pop(key, None)
        return replica

    def set_peers(self, broker_ids) -> None:
        self.peers = {b for b in broker_ids if b != self.broker_id}

    # ---- inputs ----------------------------------------------------------------------

    def receive(self, frame: PeerFrame) -> None:
        """Step every message of one peer's frame into its group (unknown groups: dropped)."""
        now_s = self._clock()
        sender = frame.sender
        self._heard_at[sender] = now_s
        if self._peer_incarnation.get(sender) != frame.incarnation:
            # The peer (re)started: neither side's remembered heartbeat values hold any more.
            self._peer_incarnation[sender] = frame.incarnation
            for table in (self._hb_sent, self._hbr_sent, self._hb_heard, self._hbr_heard):
                table.pop(sender, None)
        for group, m in frame.messages:
            self._step(group, m)
        heard = self._hb_heard.setdefault(sender, {})
        for group, term, commit in frame.heartbeats:
            heard[group] = (term, commit)
            self._heartbeat(group, sender, term, commit)
        for group in frame.heartbeats_same:
            values = heard.get(group)
            if values is not None:
                self._heartbeat(group, sender, *values)
        heard_resp = self._hbr_heard.setdefault(sender, {})
        for group, term in frame.heartbeat_resps:
            heard_resp[group] = term
            self._heartbeat_resp(group, sender, term)
        for group in frame.heartbeat_resps_same:
            term = heard_resp.get(group)
            if term is not None:
                self._heartbeat_resp(group, sender, term)
        if frame.leaders or frame.leaders_full:
            self.leaders.record(sender, frame.leaders, frame.leaders_full, now_s)

    def _heartbeat(self, group, sender: int, term: int, commit: int) -> None:
        """An idle group's heartbeat skips Ready handling altogether (RaftNode's fast path):
        most of what many idle partitions cost was stepping, readying and advancing these."""
        replica = self.groups.get(group)
        if replica is not None and replica.node.heartbeat_from_leader(sender, term, commit):
            self._queue(group, (MsgHeartbeatResp(self.broker_id, sender, term),))
        else:
            self._step(group, MsgHeartbeat(sender, self.broker_id, term, commit))

    def _heartbeat_resp(self, group, sender: int, term: int) -> None:
        replica = self.groups.get(group)
        if replica is None or not replica.node.heartbeat_response_from(sender, term):
            self._step(group, MsgHeartbeatResp(sender, self.broker_id, term))

    def _step(self, group, m) -> None:
        replica = self.groups.get(group)
        if replica is None or m.to != self.broker_id:
            return
        try:
            replica.node.step(m)
        except CorruptDataError as error:  # a read for a follower found damage: repair this replica
            self.report_damage(group, error)
            return
        except Exception as error:  # a safety check in the core fired: stop this group, not the broker
            self._fail(group, f"raft refused a message ({type(error).__name__}: {error})")
            return
        self._touched.add(group)

    def propose(self, replica: PartitionReplica, records) -> list:
        """replica.propose(records), and have this turn's process() write and send it."""
        try:
            return replica.propose(records)
        except CorruptDataError as error:
            # Sending the new entry on, the leader read damage in its own log: it stops leading
            # and repairs. Whether this write is kept is not known, as after any lost leadership.
            self.report_damage(replica.key, error)
            raise NotLeaderForPartitionError(f"the leader of {replica.topic}-{replica.partition} found its own log "
                                             f"damaged ({error}) and stepped down", None) from None
        finally:
            self._touched.add(replica.key)  # even a failed produce may have proposed its first batches

    def tick(self, now_s: Optional[float] = None) -> None:
        now_s = self._clock() if now_s is None else now_s
        ticks = int((now_s - self._last_tick_s) / TICK_S)
        if ticks <= 0:
            return
        self._last_tick_s += ticks * TICK_S
        follower = Role.FOLLOWER
        touched = self._touched
        nodes = [(key, replica.node) for key, replica in self.groups.items()]
        for _ in range(min(ticks, MAX_TICKS_PER_TURN)):
            for key, node in nodes:
                was = node.role
                node.tick()
                # A follower's tick only counts towards an election (which makes it a
                # pre-candidate), so only groups that were or now are something else can have a
                # Ready: checking every idle follower each tick was most of the idle cost.
                if was is not follower or node.role is not follower:
                    touched.add(key)
        self._leadership_housekeeping(now_s)

    def next_tick_s(self) -> float:
        return self._last_tick_s + TICK_S

    @property
    def has_work(self) -> bool:
        return bool(self._touched)

    # ---- Ready handling --------------------------------------------------------------

    def process(self, now_ms: Optional[int] = None) -> None:
        """Handle the Ready of every group that may have one (see the module docstring)."""
        self.hw_advanced = set()
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        for key in list(self.unflushed):
            replica = self.groups.get(key)
            try:
                if replica is None or replica.log.maybe_flush(now_ms):
                    self.unflushed.discard(key)
            except OSError as error:
                self._fail(key, f"flushing its log to disk failed ({error})")
        visited = set()  # every group this call looked at: only those can have moved
        for _ in range(READY_ROUNDS):
            keys, self._touched = self._touched, set()
            visited |= keys
            written = []
            for key in keys:
                replica = self.groups.get(key)
                if replica is None:
                    continue
                node = replica.node
                self._queue(key, node.take_messages())  # an idle leader's heartbeats need no Ready
                if not node.has_ready():
                    continue
                try:
                    rd = node.ready()
                except CorruptDataError as error:  # reading committed entries found damage
                    self.report_damage(key, error)
                    continue
                self._queue(key, rd.messages)
                try:
                    if rd.start_over:
                        replica.start_over(*rd.start_over, rd.start_membership)
                    if rd.entries:
                        replica.write_entries(rd.entries)
                    if rd.hard_state is not None:
                        replica.storage.set_hard_state(rd.hard_state)
                except CorruptDataError as error:
                    # The write read damage in the log: a truncation scanning a damaged batch, or
                    # the producer table rebuilt from the tail. Damage is repaired from the other
                    # replicas, as when any read finds it; nothing of this Ready was acknowledged.
                    self.report_damage(key, error)
                    continue
                except Exception as error:  # disk full or failing: this partition goes offline
                    self._fail(key, f"writing its Raft log failed ({error})")
                    continue
                written.append((key, replica, rd))
            if not written:
                break
            if any(rd.entries and rd.messages for _, _, rd in written):
                # A leader's appends leave before its own fsync, not after: the followers then
                # write and fsync while it does, instead of after it.
                self.flush_outgoing()
            for key, replica, rd in written:  # group commit: every write of this round, then acks
                if not (rd.entries or rd.start_over or rd.hard_state):
                    continue
                try:
                    self._sync(replica, rd, now_ms)
                except Exception as error:
                    self._fail(key, f"flushing its Raft log to disk failed ({error})")
            if not self._flush_hard_states(written):
                continue
            for key, replica, rd in written:
                if key in self.failed:
                    continue
                self._queue(key, rd.messages_after_persist)
                try:
                    replica.node.advance(rd)
                except CorruptDataError as error:  # a leader, sending on what it committed, found damage
                    self.report_damage(key, error)
                    continue
                if rd.entries or rd.start_over:
                    replica.synced_offset = replica.log.log_end_offset - 1
                self._touched.add(key)
        for key in visited:
            replica = self.groups.get(key)
            if replica is None:
                continue
            hw = replica.high_watermark
            if hw != self._hw[key]:
                self._hw[key] = hw
                self.hw_advanced.add(key)
            state = (replica.node.role, replica.node.term)
            before = self._role.get(key)
            if before != state:
                self._role[key] = state
                if before is not None and before[1] != state[1]:
                    self.stats["term_changes"] += 1
                if state[0] is Role.LEADER:
                    self.stats["leader_elections"] += 1
                self._on_role_change(key, replica)

    def _sync(self, replica: PartitionReplica, rd, now_ms: int) -> None:
        hard_state = rd.hard_state
        vote = (hard_state.term, hard_state.vote) if hard_state is not None else replica.durable_vote
        config = replica.log.config
        if ((replica.is_sole_copy or config.unsafe_skip_raft_fsync) and config.flush_policy != "always"
                and not rd.start_over and vote == replica.durable_vote):
            # The only copy (or a group told to be unsafe), no new term or vote to make durable:
            # its topic's flush.policy decides when the log reaches the disk (module docstring).
            if not replica.log.maybe_flush(now_ms) and config.flush_policy != "never":
                self.unflushed.add(replica.key)
            return
        started_s = time.perf_counter()
        replica.storage.sync()
        if self.on_fsync is not None:
            self.on_fsync(time.perf_counter() - started_s)
        replica.durable_vote = vote
        self.unflushed.discard(replica.key)

    def _flush_hard_states(self, written: list) -> bool:
        """Make this round's terms and votes durable (one write for every group); False, with
        each of those groups failed, if that cannot be done."""
        store = self.hard_state_store
        if store is None or not store.dirty:
            return True
        try:
            store.flush()
        except OSError as error:
            for key, _, _ in written:
                self._fail(key, f"writing the Raft hard state failed ({error})")
            return False
        return True

    def report_damage(self, key, error: CorruptDataError) -> None:
        """A read of this group's log found damage: stop driving it; the broker quarantines the
        damage and reopens the replica, which repairs from the others (take_damaged)."""
        replica = self.remove(key)
        if replica is not None:
            self.damaged[key] = (replica, error)

    def take_damaged(self) -> dict:
        """Groups stopped for damage since the last call: key -> (replica, CorruptDataError)."""
        damaged, self.damaged = self.damaged, {}
        return damaged

    def take_failed(self) -> dict:
        """Groups dropped since the last call, with why (the broker marks them offline)."""
        failed, self.failed = self.failed, {}
        return failed

    def _fail(self, key, why: str) -> None:
        replica = self.remove(key)
        if replica is not None:
            self.failed[key] = why
            if self._logger is not None:
                self._logger.error("partition_failed", partition=f"{key[0]}-{key[1]}", error=why)

    def _queue(self, key, messages) -> None:
        for m in messages:
            frame = self._frame_to(m.to)
            if isinstance(m, MsgHeartbeat):
                values = (m.term, m.commit)
                if self._hb_sent.get(m.to, {}).get(key) == values:
                    frame.heartbeats_same.append(key)
                else:
                    frame.sent_heartbeats[key] = values
                    frame.heartbeats.append((key, m.term, m.commit))
            elif isinstance(m, MsgHeartbeatResp):
                if self._hbr_sent.get(m.to, {}).get(key) == m.term:
                    frame.heartbeat_resps_same.append(key)
                else:
                    frame.sent_heartbeat_resps[key] = m.term
                    frame.heartbeat_resps.append((key, m.term))
            else:
                frame.messages.append((key, m))

    def _frame_to(self, peer: int) -> PeerFrame:
        frame = self._outgoing.get(peer)
        if frame is None:
            frame = self._outgoing[peer] = PeerFrame(self.broker_id, self.incarnation)
        return frame

    def flush_outgoing(self) -> None:
        """Send each peer everything queued for it this turn, as one frame set."""
        outgoing, self._outgoing = self._outgoing, {}
        for peer, frame in outgoing.items():
            if frame.is_empty():
                continue
            body, entries = encode_frame(frame)
            if self._send(peer, body, entries):
                self._hb_sent.setdefault(peer, {}).update(frame.sent_heartbeats)
                self._hbr_sent.setdefault(peer, {}).update(frame.sent_heartbeat_resps)
            else:  # lost: the peer may have missed values it will be told are "the same"
                self._hb_sent.pop(peer, None)
                self._hbr_sent.pop(peer, None)

    # ---- leadership ------------------------------------------------------------------

    def _on_role_change(self, key, replica: PartitionReplica) -> None:
        replica.leadership_changed()
        node = replica.node
        if node.role is Role.LEADER:
            now_s = self._clock()
            self._caught_up[key] = {peer: now_s for peer in replica.voters if peer != self.broker_id}
            self._isr_mark[key] = (node.last_index, now_s)
        else:
            self._caught_up.pop(key, None)
            self._isr_mark.pop(key, None)
        if self._logger is not None:
            self._logger.info("leadership", partition=f"{key[0]}-{key[1]}", role=node.role.value,
                              term=node.term, leader=node.leader_id)

    def peer_alive(self, peer: int, now_s: Optional[float] = None) -> bool:
        """Whether a frame from `peer` arrived within PEER_ALIVE_S."""
        now_s = self._clock() if now_s is None else now_s
        return now_s - self._heard_at.get(peer, float("-inf")) <= PEER_ALIVE_S

    def in_sync_replicas(self, key, now_s: Optional[float] = None) -> list:
        """(Leader only) this broker and the followers caught up within REPLICA_LAG_TIME_MAX_S."""
        now_s = self._clock() if now_s is None else now_s
        caught_up = self._caught_up.get(key, {})
        never = float("-inf")
        # Caught up is not enough: on an idle partition a dead follower stays "caught up" for
        # good, so it must also have been heard from within the lag time.
        return [b for b in self.groups[key].voters
                if b == self.broker_id or (now_s - caught_up.get(b, never) <= REPLICA_LAG_TIME_MAX_S
                                           and now_s - self._heard_at.get(b, never) <= REPLICA_LAG_TIME_MAX_S)]

    def leader_info(self, key, now_s: Optional[float] = None):
        """(leader id or None, leader epoch, in-sync replicas, high watermark, log end offset)
        for any partition: from the local group if hosted here, else from peers' reports."""
        now_s = self._clock() if now_s is None else now_s
        replica = self.groups.get(key)
        if replica is not None:
            node = replica.node
            if node.role is Role.LEADER:
                return (self.broker_id, node.term, self.in_sync_replicas(key, now_s),
                        replica.high_watermark, replica.log_end_offset)
            report = self.leaders.get(key, now_s)
            if node.leader_id is not None and self.peer_alive(node.leader_id, now_s):
                # (A leader not heard from for a while is not named: it is likely gone or cut
                # off, and clients sent to it would only wait; they look again shortly.)
                if report is not None and report.leader == node.leader_id and report.epoch == node.term:
                    return (node.leader_id, node.term, list(report.in_sync), report.high_watermark,
                            report.log_end_offset)
                return node.leader_id, node.term, [node.leader_id], replica.high_watermark, -1
        report = self.leaders.get(key, now_s)
        if report is None or (replica is not None and report.epoch <= replica.node.term
                              and report.leader == replica.node.leader_id):
            return None, -1, [], -1, -1  # nothing newer than what this replica already doubts
        return report.leader, report.epoch, list(report.in_sync), report.high_watermark, report.log_end_offset

    def _leadership_housekeeping(self, now_s: float) -> None:
        if now_s >= self._next_isr_check_s:
            self._next_isr_check_s = now_s + ISR_CHECK_EVERY_S
            self._check_in_sync(now_s)
            self._report_leadership(now_s)
        if now_s >= self._next_hb_reset_s:
            self._next_hb_reset_s = now_s + HEARTBEAT_FULL_EVERY_S
            self._hb_sent.clear()
            self._hbr_sent.clear()
        if now_s >= self._next_preferred_check_s:
            self._next_preferred_check_s = now_s + PREFERRED_LEADER_CHECK_EVERY_S
            if self.shutting_down:
                self.hand_off_leadership()
            else:
                self._restore_preferred_leaders(now_s)

    def _check_in_sync(self, now_s: float) -> None:
        """A follower whose match reached the leader's log end of the previous check was caught
        up at that check's time (so a follower trailing by one turn under load stays in sync)."""
        for key, (mark_index, mark_s) in list(self._isr_mark.items()):
            replica = self.groups[key]
            node = replica.node
            caught_up = self._caught_up[key]
            for peer, progress in node.progress.items():
                if peer != self.broker_id and progress.match >= mark_index:
                    caught_up[peer] = mark_s
            self._isr_mark[key] = (node.last_index, now_s)

    def _report_leadership(self, now_s: float) -> None:
        full = now_s >= self._next_full_report_s
        if full:
            self._next_full_report_s = now_s + LEADER_REPORT_EVERY_S
        rows = []
        for key in self._caught_up:
            replica = self.groups[key]
            isr = tuple(self.in_sync_replicas(key, now_s))
            state = (replica.node.term, isr)
            if full or self._reported.get(key) != state:
                self._reported[key] = state
                rows.append((key, replica.node.term, isr, replica.high_watermark, replica.log_end_offset))
        for key in [k for k in self._reported if k not in self._caught_up]:
            del self._reported[key]
        if not rows and not full:
            return
        for peer in self.peers:
            frame = self._frame_to(peer)
            frame.leaders.extend(rows)
            frame.leaders_full = frame.leaders_full or full

    def _restore_preferred_leaders(self, now_s: float) -> None:
        for key in list(self._caught_up):
            replica = self.groups[key]
            # _caught_up is from before this tick's Ready handling: a leader that stepped down
            # since (check-quorum after a SIGSTOP, say) must not be asked to transfer, which
            # raises NotLeaderError and took the whole broker down in a chaos run.
            if replica.node.role is not Role.LEADER or replica.preferred_leader == self.broker_id \
                    or replica.node.lead_transferee is not None or not self._preferred_caught_up(key, now_s):
                self._preferred_ready_since.pop(key, None)
                continue
            since = self._preferred_ready_since.setdefault(key, now_s)
            if now_s - since >= PREFERRED_LEADER_DELAY_S:
                self._preferred_ready_since.pop(key, None)
                replica.node.transfer_leadership(replica.preferred_leader)
                self._touched.add(key)

    def _preferred_caught_up(self, key, now_s: float) -> bool:
        """Whether the preferred replica of a group led here is in sync, heard from just now and
        caught up right now. (Not recent_active: check-quorum clears that at the start of every
        election timeout.)"""
        replica = self.groups[key]
        preferred = replica.preferred_leader
        progress = replica.node.progress.get(preferred)
        return (progress is not None and progress.match >= replica.node.last_index
                and preferred in self.in_sync_replicas(key, now_s) and self.peer_alive(preferred, now_s))

    def elect_preferred_leaders(self, topics=None) -> tuple:
        """(moving, not_ready): groups led here, of `topics` (None: all), whose leadership now
        goes to their preferred replica at once (`distlog cluster rebalance-leaders`), and those
        whose preferred replica cannot take it yet (down or behind), as (key, preferred) pairs."""
        now_s = self._clock()
        moving, not_ready = [], []
        for key in list(self._caught_up):
            replica = self.groups[key]
            preferred = replica.preferred_leader
            if (topics is not None and key[0] not in topics) or preferred == self.broker_id:
                continue
            if replica.node.lead_transferee is None and self._preferred_caught_up(key, now_s):
                replica.node.transfer_leadership(preferred)
                self._touched.add(key)
                moving.append((key, preferred))
            elif replica.node.lead_transferee != preferred:
                not_ready.append((key, preferred))
        return moving, not_ready

    # ---- reassignment -----------------------------------------------------------------

    def drive_reassignments(self, targets: dict) -> list:
        """Take the next step (reassignment.py) of every group led here that `targets` (key ->
        target voters) moves; returns [(key, voters)] of those whose committed membership is
        their target now, for the controller to record."""
        done = []
        for key, target in targets.items():
            replica = self.groups.get(key)
            if replica is None or not replica.is_leader:
                continue
            node = replica.node
            match = {peer: pr.match for peer, pr in node.progress.items()}
            step = reassignment.next_step(self.broker_id, node.voters, node.learners, node.membership_change_pending,
                                          match, node.commit, target)
            if step.action == reassignment.DONE:
                done.append((key, list(node.voters)))
                continue
            if step.action == reassignment.WAIT:
                continue
            try:
                if step.action == reassignment.ADD_LEARNER:
                    node.add_learner(step.node)
                elif step.action == reassignment.PROMOTE:
                    node.promote_learner(step.node)
                elif step.action == reassignment.REMOVE:
                    node.remove_member(step.node)
                else:
                    node.transfer_leadership(step.node)
            except (MembershipChangePendingError, ValueError) as error:  # raced a change of role: next time
                if self._logger is not None:
                    self._logger.warning("reassignment_step_refused", partition=f"{key[0]}-{key[1]}",
                                         step=step.action, member=step.node, error=str(error))
                continue
            self._touched.add(key)
            if self._logger is not None:
                self._logger.info("reassignment_step", partition=f"{key[0]}-{key[1]}", step=step.action,
                                  member=step.node, voters=list(node.voters), learners=list(node.learners))
        return done

    def begin_shutdown(self) -> None:
        """Hand every group this broker leads to a caught-up follower (a planned restart must
        cost no failed write); the broker keeps serving until leads_anything() is False or
        its deadline passes."""
        self.shutting_down = True
        self.hand_off_leadership()

    def hand_off_leadership(self) -> None:
        for key, replica in self.groups.items():
            node = replica.node
            if node.role is not Role.LEADER or len(replica.voters) == 1 or node.lead_transferee is not None:
                continue
            followers = [(pr.recent_active, pr.match, peer) for peer, pr in node.progress.items()
                         if peer != self.broker_id and peer in node.voters]  # (not to a learner)
            target = max(followers)[2]
            node.transfer_leadership(target)
            self._touched.add(key)

    def leads_anything_replicated(self) -> bool:
        return any(r.node.role is Role.LEADER and len(r.voters) > 1 for r in self.groups.values())
