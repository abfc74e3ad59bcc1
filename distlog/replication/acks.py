"""Produce requests waiting for their acknowledgement condition (Kafka's produce purgatory).

A produce is answered when every partition in it is settled:
  acks=1    the leader wrote the batch and it is durable there (replica.synced_offset);
  acks=all  the batch is committed (the commit index reached it) and the entry at its last
            offset still has the term it was proposed in, so it is the same entry (Raft's
            log matching) even if leadership moved and came back meanwhile;
and failed, retriably, when that can no longer happen here: the replica stopped leading before
its batch was committed (NOT_LEADER: the new leader may hold it; an idempotent producer's retry
is then answered from the new leader's table, not written twice), the entry was replaced, the
partition went offline, or the request's timeout passed (REQUEST_TIMED_OUT).

Waiting never blocks the loop: the broker calls settle() once per turn after the manager's
process(), naming the partitions worth a look (those that committed, and those some produce
waits on: acks=1 settles on the leader's own write, which moves no high watermark).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distlog.protocol.errors import ErrorCode

ACKS_LEADER = 1


@dataclass
class WaitingPartition:
    result: dict  # the ProduceResponse partition entry, filled in when settled
    key: tuple
    term: int
    last_offset: int


@dataclass
class PendingProduce:
    peer: bytes
    cid: int
    acks: int
    results: list  # every partition's result dict, in request order
    waiting: list = field(default_factory=list)  # of WaitingPartition
    deadline_s: float = 0.0
    keys: tuple = ()  # every key it waited on when added (to unindex it)


class ProduceWaiters:
    """Pending produces, indexed by the partitions they wait on."""

    def __init__(self):
        self._by_key: dict = {}  # key -> {id: PendingProduce}
        self._pending: dict = {}  # id -> PendingProduce

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, produce: PendingProduce) -> None:
        self._pending[id(produce)] = produce
        produce.keys = tuple({w.key for w in produce.waiting})
        for key in produce.keys:
            self._by_key.setdefault(key, {})[id(produce)] = produce

    def settle(self, groups: dict, moved, offline: dict, now_s: float) -> list:
        """Produces now answerable, as (peer, cid, results). `groups` maps key -> replica;
        `moved` are the keys worth looking at (any that wrote, committed or changed role);
        `offline` maps key -> why, for partitions that can no longer answer."""
        candidates = {}
        for key in (*moved, *offline):
            candidates.update(self._by_key.get(key, {}))
        done = {i: p for i, p in candidates.items() if self._settle_one(p, groups, offline)}
        for i, produce in self._pending.items():
            if i not in done and produce.deadline_s <= now_s:
                self._time_out(produce)
                done[i] = produce
        done = list(done.values())
        for produce in done:
            self._forget(produce)
        return [(p.peer, p.cid, p.results) for p in done]

    def keys(self) -> set:
        """The partitions some pending produce waits on."""
        return set(self._by_key)

    def next_deadline_s(self):
        return min((p.deadline_s for p in self._pending.values()), default=None)

    def fail_all(self, code: ErrorCode, message: str) -> list:
        """Answer everything pending with an error (the broker is shutting down)."""
        out = []
        for produce in list(self._pending.values()):
            for waiting in produce.waiting:
                _fail(waiting.result, code, message)
            produce.waiting = []
            self._forget(produce)
            out.append((produce.peer, produce.cid, produce.results))
        return out

    def _settle_one(self, produce: PendingProduce, groups: dict, offline: dict) -> bool:
        still = []
        for waiting in produce.waiting:
            replica = groups.get(waiting.key)
            if replica is None:
                why = offline.get(waiting.key, "it is no longer hosted here")
                _fail(waiting.result, ErrorCode.STORAGE_ERROR if waiting.key in offline else ErrorCode.NOT_LEADER,
                      f"partition {waiting.key[0]}-{waiting.key[1]} cannot acknowledge the write: {why}")
                continue
            node = replica.node
            reached = (replica.synced_offset if produce.acks == ACKS_LEADER else node.commit) >= waiting.last_offset
            same_entry = node.term_at(waiting.last_offset) == waiting.term
            if reached and same_entry:
                continue  # settled: the result already holds the offsets
            if not same_entry and node.last_index >= waiting.last_offset:
                _fail(waiting.result, ErrorCode.NOT_LEADER,
                      f"leadership of {waiting.key[0]}-{waiting.key[1]} moved and the new leader replaced "
                      "this write before it was committed; retry it")
                continue
            if not replica.is_leader or node.term != waiting.term:
                _fail(waiting.result, ErrorCode.NOT_LEADER,
                      f"{replica.not_leader_error()}; the write may or may not be kept (it was not yet "
                      "committed): an idempotent producer's retry is answered without a duplicate")
                continue
            still.append(waiting)
        produce.waiting = still
        return not still

    def _time_out(self, produce: PendingProduce) -> None:
        for waiting in produce.waiting:
            _fail(waiting.result, ErrorCode.REQUEST_TIMED_OUT,
                  f"the write to {waiting.key[0]}-{waiting.key[1]} was not committed by a majority of its "
                  "replicas within the request's timeout (are enough replicas up?); retry it")
        produce.waiting = []

    def _forget(self, produce: PendingProduce) -> None:
        if self._pending.pop(id(produce), None) is None:
            return
        for key in produce.keys:
            waiting = self._by_key.get(key)
            if waiting is not None:
                waiting.pop(id(produce), None)
                if not waiting:
                    del self._by_key[key]


def _fail(result: dict, code: ErrorCode, message: str) -> None:
    result["error_code"] = int(code)
    result["error_message"] = message
    result["base_offset"] = -1
