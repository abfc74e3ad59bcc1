"""In-memory network of RaftNodes for unit tests: deliver until quiet, with cut/isolate/drop."""

from __future__ import annotations

import random
from typing import Callable, Optional

from distlog.consensus.log_store import MemoryStorage
from distlog.consensus.messages import Entry, Message
from distlog.consensus.raft import Config, RaftNode, Role


class Network:
    """Nodes 1..size, each with MemoryStorage; stabilize() runs Readies and delivers messages.

    Unlike the simulator there is no time and no randomness in delivery: a test decides every
    fault, so each one reads as the paper's scenario it checks.
    """

    def __init__(self, size: int = 3, make_storage: Callable[[int], object] = lambda node_id: MemoryStorage(),
                 voters: Optional[tuple[int, ...]] = None, **config: object):
        self.ids = tuple(range(1, size + 1))
        # The bootstrap voters (all nodes unless given): the others start outside the group.
        self.voters = voters or self.ids
        self.config = config
        self.storage = {i: make_storage(i) for i in self.ids}
        self.nodes: dict[int, Optional[RaftNode]] = {}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.sent: list[Message] = []
        self._cut: set[tuple[int, int]] = set()
        self._drop: list[Callable[[Message], bool]] = []
        for i in self.ids:
            self.start(i)

    # ---- faults ------------------------------------------------------------------

    def cut(self, a: int, b: int) -> None:
        """No message passes between a and b, either way."""
        self._cut |= {(a, b), (b, a)}

    def isolate(self, node_id: int) -> None:
        for other in self.ids:
            if other != node_id:
                self.cut(node_id, other)

    def drop(self, predicate: Callable[[Message], bool]) -> None:
        """Drop every message for which predicate(message) is true."""
        self._drop.append(predicate)

    def recover(self) -> None:
        self._cut.clear()
        self._drop.clear()

    def crash(self, node_id: int) -> None:
        """The node stops; its storage keeps only what was persisted."""
        self.nodes[node_id] = None

    def start(self, node_id: int) -> RaftNode:
        config = Config(node_id=node_id, peers=self.voters, rng=random.Random(node_id), **self.config)
        self.nodes[node_id] = RaftNode(config, self.storage[node_id])
        return self.nodes[node_id]

    # ---- running -----------------------------------------------------------------

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Handle every Ready and deliver every message until nothing is left to do."""
        for _ in range(max_rounds):
            outbox = []
            for node_id, node in self.nodes.items():
                while node is not None and node.has_ready():
                    outbox.extend(self._handle_ready(node_id, node))
            if not outbox:
                return
            for m in outbox:
                self.sent.append(m)
                target = self.nodes.get(m.to)
                if target is None or (m.frm, m.to) in self._cut or any(p(m) for p in self._drop):
                    continue
                target.step(m)
        raise AssertionError(f"network did not settle in {max_rounds} rounds")

    def _handle_ready(self, node_id: int, node: RaftNode) -> list[Message]:
        rd = node.ready()
        storage = self.storage[node_id]
        if rd.start_over:
            storage.reset(*rd.start_over, *([rd.start_membership] if rd.start_membership else []))
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.sync()
        self.applied[node_id].extend(rd.committed_entries)
        node.advance(rd)
        return list(rd.messages) + list(rd.messages_after_persist)

    def elect(self, node_id: int) -> RaftNode:
        """Make node_id campaign and settle; returns it (asserting it won)."""
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.nodes[node_id].role is Role.LEADER, f"node {node_id} did not win"
        return self.nodes[node_id]

    def tick(self, node_id: int, ticks: int) -> None:
        for _ in range(ticks):
            self.nodes[node_id].tick()

    def tick_all(self, ticks: int) -> None:
        """Tick every live node once per round, settling between rounds."""
        for _ in range(ticks):
            for node in self.nodes.values():
                if node is not None:
                    node.tick()
            self.stabilize()

    def leader(self) -> Optional[RaftNode]:
        leaders = [n for n in self.nodes.values() if n is not None and n.role is Role.LEADER]
        return max(leaders, key=lambda n: n.term) if leaders else None

    def log(self, node_id: int) -> list[tuple[int, int, int, object]]:
        """The persisted log of a node as (term, base_offset, last_offset, data) tuples."""
        return [(e.term, e.base_offset, e.last_offset, e.data) for e in self.storage[node_id].entries]
