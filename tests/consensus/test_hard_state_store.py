"""One hard-state file per broker: puts are not durable until flush(); PartitionStorage over a
store writes there (and still reads an older per-partition file); the replica manager flushes
the store before any vote leaves."""

import json

from distlog.consensus.hard_state_store import HardStateStore
from distlog.consensus.messages import HardState, MsgVoteResp
from distlog.consensus.partition_storage import PartitionStorage
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from tests.replication.harness import MemoryCluster


def test_puts_reach_the_file_only_at_flush(tmp_path):
    path = str(tmp_path / "raft-state.json")
    store = HardStateStore(path)
    store.put("t-0", {"term": 3})
    assert HardStateStore(path).get("t-0") is None, "a put was durable before flush()"
    store.flush()
    assert HardStateStore(path).get("t-0") == {"term": 3}
    store.remove("t-0")
    store.flush()
    assert HardStateStore(path).names() == []


def test_partition_storage_keeps_its_vote_in_the_store_and_reads_an_older_file(tmp_path):
    store = HardStateStore(str(tmp_path / "raft-state.json"))
    log = PartitionLog.open(str(tmp_path / "t-0"), LogConfig())
    storage = PartitionStorage(log, store=store, name="t-0")
    storage.set_hard_state(HardState(term=4, vote=2, commit=-1))
    storage.sync()
    assert store.dirty and HardStateStore(store.path).get("t-0") is None, "sync() must leave the flush to the owner"
    store.flush()
    log.close()
    reopened = PartitionStorage(PartitionLog.open(str(tmp_path / "t-0"), LogConfig()),
                                store=HardStateStore(store.path), name="t-0")
    assert reopened.hard_state() == HardState(term=4, vote=2, commit=-1)
    reopened.log.close()
    older = tmp_path / "u-0.raft-state"  # what a broker of the previous version left
    older.write_text(json.dumps({"term": 7, "vote": 1, "commit": -1, "start_offset": 0, "start_term": 0}))
    legacy = PartitionStorage(PartitionLog.open(str(tmp_path / "u-0"), LogConfig()), store=store, name="u-0")
    assert legacy.hard_state().term == 7
    legacy.log.close()


def test_a_vote_leaves_only_after_the_store_holding_it_was_flushed(tmp_path, monkeypatch):
    cluster = MemoryCluster(str(tmp_path))
    cluster.create("t")
    manager = cluster.managers[2]
    store = manager.hard_state_store
    votes_sent_while_dirty = []
    real_queue = manager._queue

    def watching(key, messages):
        for m in messages:
            if isinstance(m, MsgVoteResp) and not m.reject:
                votes_sent_while_dirty.append(store.dirty)
        real_queue(key, messages)

    monkeypatch.setattr(manager, "_queue", watching)
    cluster.run_until(lambda: cluster.leader_of(("t", 0)) is not None)
    assert votes_sent_while_dirty, "broker 2 never granted a vote"
    assert not any(votes_sent_while_dirty), "a vote left before its term and vote were durable"
    cluster.close()
