"""Deterministic simulator: RaftNodes on a seeded faulty network, invariants checked every tick.

One seed fixes everything: cluster size (3 or 5), append size, network behaviour (delay,
loss, duplication, reordering by random delay), the fault schedule (partitions: halves,
isolate the leader, bridge, one-way; crashes that lose what was not persisted, including in
the middle of handling a Ready; restarts; retention on a node's log; leadership transfers;
leader churn: new leaders crashed or cut off soon after winning or right after their first
commit) and the clients that propose all the time. After `fault_ticks` every fault heals, and
an entry proposed after that must be applied by every node within `liveness_ticks`.

Checked after every step: at most one leader per term; log matching (checked inductively:
every (last_offset, term) ever persisted anywhere names one (base_offset, data, previous
term)); a committed entry is never truncated, every new leader holds all of them, and the
commit index a node persisted never goes back; every node applies the same entries in offset
order (a start-over may skip a committed prefix, nothing else).

    python -m distlog.consensus.sim --seeds 2000 --json
    python -m distlog.consensus.sim --seed 17 --trace
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from distlog.consensus.log_store import MemoryStorage
from distlog.consensus.messages import Entry, Message
from distlog.consensus.raft import Config, NotLeaderError, RaftNode, Role


class Violation(Exception):
    """A safety invariant broke; the message says which and where."""


@dataclass
class SimConfig:
    """Run length and fault rates; defaults keep 2,000 seeds within a minute on 2 cores."""

    fault_ticks: int = 400
    liveness_ticks: int = 250
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 2
    fault_probability: float = 1 / 25
    propose_probability: float = 0.4
    crash_in_ready_probability: float = 0.002


@dataclass
class SeedResult:
    seed: int
    ticks: int
    violation: Optional[str] = None
    liveness_failure: Optional[str] = None
    trace: list[str] = field(default_factory=list)


class Network:
    """Messages in flight, each delivered after a random delay unless dropped or blocked."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.loss = 0.0
        self.duplication = 0.0
        self.delay_ticks_max = 3
        self.blocked: set[tuple[int, int]] = set()
        self._in_flight: list[tuple[int, int, Message]] = []
        self._seq = 0

    def send(self, m: Message, now: int) -> None:
        if (m.frm, m.to) in self.blocked or (self.loss and self.rng.random() < self.loss):
            return
        copies = 2 if self.duplication and self.rng.random() < self.duplication else 1
        for _ in range(copies):
            self._seq += 1
            heapq.heappush(self._in_flight, (now + self.rng.randint(1, self.delay_ticks_max), self._seq, m))

    def due(self, now: int) -> list[Message]:
        out = []
        while self._in_flight and self._in_flight[0][0] <= now:
            m = heapq.heappop(self._in_flight)[2]
            if (m.frm, m.to) not in self.blocked:
                out.append(m)
        return out


class SimNode:
    """One node: its durable storage survives crashes; the RaftNode (volatile) does not."""

    def __init__(self, node_id: int):
        self.node_id = node_id
        self.storage = MemoryStorage()
        self.raft: Optional[RaftNode] = None
        self.applied_last = -1


class Simulation:
    """One seeded run. run() returns a SeedResult; with trace=True it records what happened."""

    def __init__(self, seed: int, config: SimConfig = SimConfig(), trace: bool = False):
        self.seed = seed
        self.config = config
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
        self._commit_when_elected: dict[int, Optional[int]] = {}  # None once it moved
        self.net = Network(self.rng)
        self.nodes = [SimNode(i) for i in range(self.size)]
        self.now = 0
        self.healed = False
        self.tracing = trace
        self.trace: list[str] = []
        self.leader_of_term: dict[int, int] = {}
        self._leaders_seen = 0
        # Inductive log matching: (last_offset, term) -> (base_offset, data, previous term).
        self.entry_identity: dict[tuple[int, int], tuple[int, object, int]] = {}
        # Committed entries by last_offset, as first applied anywhere.
        self.committed: dict[int, Entry] = {}
        self.next_payload = 1
        self.proposed_at: dict[object, int] = {}
        self.applied_count: dict[object, int] = {}
        self.live_at: Optional[int] = None
        self._roles: dict[int, tuple] = {}
        for node in self.nodes:
            self._start(node)
        self._log(f"seed {seed}: {self.size} nodes, <= {self.max_entries_per_msg} entries per append, "
                  f"leader churn {self.leader_churn_probability}, cut after first commit "
                  f"{self.cut_after_first_commit_probability}")

    # ---- running ---------------------------------------------------------------------

    def run(self) -> SeedResult:
        cfg = self.config
        end = cfg.fault_ticks + cfg.liveness_ticks
        try:
            while self.now < end and self.live_at is None:
                self.now += 1
                if self.now == cfg.fault_ticks:
                    self._heal_all()
                elif not self.healed and self.rng.random() < cfg.fault_probability:
                    self._inject_fault()
                self._step_once()
        except Violation as v:
            self._log(f"VIOLATION: {v}")
            return SeedResult(self.seed, self.now, violation=str(v), trace=self.trace)
        except Exception as e:  # the core refusing an input is a failure the seed must report
            what = f"{type(e).__name__} raised: {e}"
            self._log(f"VIOLATION: {what}")
            return SeedResult(self.seed, self.now, violation=what, trace=self.trace)
        if self.live_at is None:
            why = (f"no entry proposed after the faults healed at tick {cfg.fault_ticks} was applied "
                   f"by all {self.size} nodes within {cfg.liveness_ticks} ticks")
            self._log(f"LIVENESS FAILURE: {why}")
            return SeedResult(self.seed, self.now, liveness_failure=why, trace=self.trace)
        return SeedResult(self.seed, self.now, trace=self.trace)

    def _step_once(self) -> None:
        for action, node, *how in self.scheduled.pop(self.now, ()):
            if self.healed or (action == self._crash and node.raft is None) or (
                    action == self._start and node.raft is not None):
                continue
            action(node, *how)
        for m in self.net.due(self.now):
            raft = self.nodes[m.to].raft
            if raft is not None:
                raft.step(m)
        for node in self.nodes:
            if node.raft is not None:
                node.raft.tick()
        if self.rng.random() < self.config.propose_probability:
            self._client_propose()
        for node in self.nodes:
            if node.raft is not None:
                self._handle_ready(node)
        self._check_leaders()

    def _handle_ready(self, node: SimNode) -> None:
        raft = node.raft
        storage = node.storage
        rounds = 0
        while raft.has_ready():
            rounds += 1
            if rounds > 1000:
                raise Violation(f"n{node.node_id} keeps producing Ready without making progress")
            rd = raft.ready()
            for m in rd.messages:
                self.net.send(m, self.now)
            if self._crash_now():
                self._crash(node, "before persisting a Ready")
                return
            if rd.start_over:
                storage.reset(*rd.start_over)
                node.applied_last = rd.start_over[0] - 1
                self._log(f"n{node.node_id} starts over at offset {rd.start_over[0]}")
            if rd.entries:
                self._persist_entries(node, rd.entries)
                if rd.hard_state is not None and self._crash_now():
                    # PartitionStorage writes entries before the hard state file.
                    self._crash(node, "after persisting entries, before the hard state")
                    return
            if rd.hard_state is not None:
                before = storage.hard_state().commit
                if rd.hard_state.commit < before:
                    raise Violation(f"n{node.node_id} persisted commit {rd.hard_state.commit} "
                                    f"below its earlier {before}")
                storage.set_hard_state(rd.hard_state)
            for m in rd.messages_after_persist:
                self.net.send(m, self.now)
            for entry in rd.committed_entries:
                self._apply(node, entry)
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
            for old in storage.entries_from(base_offset, 1 << 30):
                if self.committed.get(old.last_offset) == old:
                    raise Violation(f"n{node.node_id} truncates committed entry {old}")
            self._log(f"n{node.node_id} truncates its log from offset {base_offset}")
        storage.append(entries)
        if base_offset - 1 == storage.log_start_offset - 1:
            prev_term = storage.start_term
        else:
            prev_term = storage.span_at(base_offset - 1).term
        for e in entries:
            identity = (e.base_offset, e.data, prev_term)
            seen = self.entry_identity.setdefault((e.last_offset, e.term), identity)
            if seen != identity:
                raise Violation(f"log matching: n{node.node_id} holds {e} after term {prev_term}, "
                                f"another node holds (base, data, previous term) {seen} there")
            prev_term = e.term

    def _apply(self, node: SimNode, entry: Entry) -> None:
        if entry.base_offset != node.applied_last + 1:
            raise Violation(f"n{node.node_id} applies {entry} after offset {node.applied_last}")
        known = self.committed.setdefault(entry.last_offset, entry)
        if known != entry:
            raise Violation(f"n{node.node_id} applies {entry}, but {known} was committed there")
        node.applied_last = entry.last_offset
        if entry.data in self.proposed_at and self.proposed_at[entry.data] >= self.config.fault_ticks:
            count = self.applied_count.get(entry.data, 0) + 1
            self.applied_count[entry.data] = count
            if count == self.size:
                self.live_at = self.now
                self._log(f"entry {entry.data} proposed after healing is applied everywhere")

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
        """A new leader holds every entry committed so far (§5.4.1), except what retention removed."""
        raft = leader.raft
        for last_offset, entry in self.committed.items():
            if last_offset >= raft.log_start_offset and raft.term_at(last_offset) != entry.term:
                raise Violation(f"n{leader.node_id} leads term {raft.term} without committed {entry}")

    def _crash_now(self) -> bool:
        return not self.healed and self.rng.random() < self.config.crash_in_ready_probability

    def _check_leaders(self) -> None:
        for node in self.nodes:
            raft = node.raft
            if raft is None:
                continue
            if raft.role is Role.LEADER:
                leader = self.leader_of_term.setdefault(raft.term, node.node_id)
                if leader != node.node_id:
                    raise Violation(f"two leaders in term {raft.term}: n{leader} and n{node.node_id}")
                if len(self.leader_of_term) != self._leaders_seen:
                    self._leaders_seen = len(self.leader_of_term)
                    self._check_leader_completeness(node)
                    if not self.healed and self.rng.random() < self.leader_churn_probability:
                        self._churn(node)
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

    # ---- clients and faults -------------------------------------------------------------

    def _client_propose(self) -> None:
        node = self.nodes[self.rng.randrange(self.size)]
        for _ in range(2):  # ask one node; follow its NOT_LEADER hint once
            if node.raft is None:
                return
            try:
                payload = self.next_payload
                entry = node.raft.propose(payload, self.rng.randint(1, 3))
            except NotLeaderError as e:
                if e.leader_id is None:
                    return
                node = self.nodes[e.leader_id]
                continue
            self.next_payload += 1
            self.proposed_at[payload] = self.now
            if self.tracing:
                self._log(f"n{node.node_id} proposes {payload} at [{entry.base_offset}, {entry.last_offset}] "
                          f"term {entry.term}")
            return

    def _inject_fault(self) -> None:
        fault = self.rng.choice((
            self._partition_halves, self._isolate_leader, self._bridge, self._one_way, self._heal_network,
            self._crash_random, self._restart_random, self._restart_random, self._retention,
            self._transfer, self._network_weather,
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
        self._log(f"network loss={self.net.loss} duplication={self.net.duplication} "
                  f"delay<= {self.net.delay_ticks_max} ticks")

    def _crash_random(self) -> None:
        alive = [n for n in self.nodes if n.raft is not None]
        if alive:
            self._crash(self.rng.choice(alive), "")

    def _crash(self, node: SimNode, how: str) -> None:
        node.raft = None
        self._roles.pop(node.node_id, None)
        self._log(f"crash n{node.node_id} {how}".rstrip())

    def _restart_random(self) -> None:
        down = [n for n in self.nodes if n.raft is None]
        if down:
            self._start(self.rng.choice(down))

    def _start(self, node: SimNode) -> None:
        config = Config(
            node_id=node.node_id,
            peers=tuple(range(self.size)),
            election_timeout_ticks=self.config.election_timeout_ticks,
            heartbeat_ticks=self.config.heartbeat_ticks,
            max_entries_per_msg=self.max_entries_per_msg,
            rng=random.Random(self.rng.getrandbits(64)),
            leader_marker=lambda base_offset, term: ("leader", term),
        )
        node.raft = RaftNode(config, node.storage)
        node.applied_last = node.storage.log_start_offset - 1
        if self.now:
            self._log(f"restart n{node.node_id} term={node.raft.term} last={node.raft.last_index}")

    def _retention(self) -> None:
        """Drop a committed prefix of one node's log, as time or size retention would."""
        node = self.nodes[self.rng.randrange(self.size)]
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
            to = self.rng.choice([i for i in range(self.size) if i != leader])
            self.nodes[leader].raft.transfer_leadership(to)
            self._log(f"n{leader} transfers leadership to n{to}")

    def _heal_all(self) -> None:
        self.healed = True
        self.net.blocked.clear()
        self.net.loss = 0.0
        self.net.duplication = 0.0
        for node in self.nodes:
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


def run_seed(seed: int, trace: bool = False, config: SimConfig = SimConfig()) -> SeedResult:
    """Run one seed; the same seed always produces the same run."""
    return Simulation(seed, config, trace).run()


def _run_quiet(seed: int) -> SeedResult:
    return run_seed(seed)


def run_seeds(seeds: list[int], workers: int, fail_fast: bool = False) -> tuple[list[SeedResult], int]:
    """Run seeds (on `workers` processes); returns the failures and the total ticks.

    fail_fast runs the seeds in order on one process and stops at the first failure.
    """
    failures, steps = [], 0
    if workers > 1 and not fail_fast:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.imap_unordered(_run_quiet, seeds, chunksize=25)
            for result in results:
                steps += result.ticks
                if result.violation or result.liveness_failure:
                    failures.append(result)
    else:
        for seed in seeds:
            result = _run_quiet(seed)
            steps += result.ticks
            if result.violation or result.liveness_failure:
                failures.append(result)
                if fail_fast:
                    break
    return sorted(failures, key=lambda r: r.seed), steps


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distlog.consensus.sim",
                                     description="Run the Raft simulator over seeded failure scenarios.")
    parser.add_argument("--seeds", type=int, default=200, help="run seeds 0..SEEDS-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, help="run exactly this seed")
    parser.add_argument("--trace", action="store_true", help="print what happened, tick by tick")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.add_argument("--workers", type=int, default=min(2, multiprocessing.cpu_count()))
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing seed")
    args = parser.parse_args(argv)

    if args.seed is not None:
        result = run_seed(args.seed, trace=args.trace)
        if args.trace:
            print("\n".join(result.trace))
        failed = bool(result.violation or result.liveness_failure)
        summary = {"seeds": 1, "violations": int(bool(result.violation)),
                   "liveness_failures": int(bool(result.liveness_failure)), "steps": result.ticks}
        print(json.dumps(summary) if args.json else
              f"seed {args.seed}: {'FAILED: ' + (result.violation or result.liveness_failure) if failed else 'ok'}"
              f" after {result.ticks} ticks")
        return 1 if failed else 0

    started = time.monotonic()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    failures, steps = run_seeds(seeds, args.workers, args.fail_fast)
    elapsed_s = round(time.monotonic() - started, 2)
    for failure in failures[:3]:
        replay = run_seed(failure.seed, trace=True)
        print(f"seed {failure.seed} FAILED at tick {failure.ticks}: "
              f"{failure.violation or failure.liveness_failure}", file=sys.stderr)
        print("\n".join(replay.trace[-80:]), file=sys.stderr)
        print(f"replay: python -m distlog.consensus.sim --seed {failure.seed} --trace", file=sys.stderr)
    if failures:
        print("failing seeds: " + " ".join(str(f.seed) for f in failures), file=sys.stderr)
    summary = {
        "seeds": len(seeds),
        "violations": sum(1 for f in failures if f.violation),
        "liveness_failures": sum(1 for f in failures if f.liveness_failure),
        "steps": steps,
        "elapsed_s": elapsed_s,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(", ".join(f"{k}={v}" for k, v in summary.items()))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
