"""An in-memory cluster of ReplicaManagers over real partition logs: no sockets, a fake clock.

Each "broker" is a ReplicaManager whose send() puts the encoded frame set on a shared queue;
deliver() decodes and hands every queued frame to its receiver (unless the pair is cut), so the
wire format is exercised too. run() turns the loop the way the broker does: receive, tick,
process, flush_outgoing.
"""

from __future__ import annotations

import os
import random

from distlog.consensus.hard_state_store import HardStateStore
from distlog.consensus.raft import Role
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.replication.manager import TICK_S, ReplicaManager
from distlog.replication.replica import PartitionReplica
from distlog.replication.wire import decode_frame


class FakeClock:
    def __init__(self):
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


class MemoryCluster:
    def __init__(self, root: str, broker_ids=(1, 2, 3), seed: int = 0):
        self.root = root
        self.seed = seed
        self._opened = 0
        self.clock = FakeClock()
        self.queue: list = []
        self.cut: set = set()  # (from, to) pairs whose frames are dropped
        self.down: set = set()
        self.managers = {b: self._manager(b) for b in broker_ids}

    def _manager(self, broker_id: int) -> ReplicaManager:
        def send(peer, body, entries):
            self.queue.append((broker_id, peer, body, entries))
            return True

        store = HardStateStore(os.path.join(self.root, f"broker-{broker_id}", "raft-state.json"))
        os.makedirs(os.path.dirname(store.path), exist_ok=True)
        manager = ReplicaManager(broker_id, send, clock=self.clock, hard_state_store=store)
        manager.set_peers(self.broker_ids_all())
        return manager

    def broker_ids_all(self):
        return sorted(getattr(self, "managers", {}) or (1, 2, 3))

    def open_partition(self, broker_id: int, topic: str, partition: int, voters, config: LogConfig = LogConfig(),
                       campaign: bool = False) -> PartitionReplica:
        directory = os.path.join(self.root, f"broker-{broker_id}", f"{topic}-{partition}")
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        self._opened += 1  # every replica its own election timeouts, the same ones for a seed
        rng = random.Random(f"{self.seed}-{broker_id}-{topic}-{partition}-{self._opened}")
        replica = PartitionReplica(topic, partition, PartitionLog.open(directory, config), broker_id, voters, rng=rng,
                                   store=self.managers[broker_id].hard_state_store)
        self.managers[broker_id].add(replica, campaign=campaign)
        return replica

    def create(self, topic: str, partition: int = 0, voters=(1, 2, 3), config: LogConfig = LogConfig()) -> dict:
        """The partition on every voter; the first one campaigns at once, as on a real broker."""
        return {b: self.open_partition(b, topic, partition, voters, config, campaign=b == voters[0]) for b in voters}

    def deliver(self) -> None:
        queue, self.queue = self.queue, []
        for sender, receiver, body, entries in queue:
            if (sender, receiver) in self.cut or receiver in self.down or sender in self.down:
                continue
            self.managers[receiver].receive(decode_frame(sender, receiver, body, [bytes(e) for e in entries]))

    def turn(self) -> None:
        """One loop turn of every live broker, then deliver what they sent."""
        for broker_id, manager in self.managers.items():
            if broker_id in self.down:
                continue
            manager.tick()
            manager.process()
            manager.flush_outgoing()
        self.deliver()

    def run(self, seconds: float) -> None:
        """Advance the clock in ticks, turning every broker after each."""
        for _ in range(max(1, round(seconds / TICK_S))):
            self.clock.now_s += TICK_S
            self.turn()
            self.turn()

    def run_until(self, condition, max_seconds: float = 10.0, what: str = "the condition") -> None:
        for _ in range(max(1, round(max_seconds / TICK_S))):
            if condition():
                return
            self.clock.now_s += TICK_S
            self.turn()
            self.turn()
        raise AssertionError(f"{what} did not hold within {max_seconds} simulated seconds")

    def leader_of(self, key):
        leaders = [b for b, m in self.managers.items()
                   if b not in self.down and key in m.groups and m.groups[key].node.role is Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def crash(self, broker_id: int) -> None:
        """Stop a broker: its groups are closed as a SIGKILL would leave them on disk."""
        self.down.add(broker_id)
        manager = self.managers[broker_id]
        for key in list(manager.groups):
            replica = manager.remove(key)
            replica.log.close()

    def restart(self, broker_id: int, topic: str, partition: int, voters, config: LogConfig = LogConfig()):
        self.down.discard(broker_id)
        self.managers[broker_id] = self._manager(broker_id)
        return self.open_partition(broker_id, topic, partition, voters, config)

    def close(self) -> None:
        for manager in self.managers.values():
            for key in list(manager.groups):
                manager.remove(key).close()
            manager.hard_state_store.flush()
