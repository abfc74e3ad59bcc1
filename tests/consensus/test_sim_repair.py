"""The simulator's damage fault (issue #12): a crashed node's log loses entries it may have
acknowledged, comes back repairing, and the seeds that do this still pass."""

import random
import re

from distlog.consensus import sim
from distlog.consensus.messages import Entry, HardState
from distlog.consensus.partition_storage import stamp_record_batch
from distlog.consensus.raft import Config, RaftNode
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.log.errors import CorruptDataError


def test_damaged_memory_storage_loses_a_tail_and_is_repaired_once_it_holds_it_durably():
    storage = sim.SimMemoryStorage()
    storage.append([Entry(1, i, i) for i in range(6)])
    storage.set_hard_state(HardState(term=1, vote=0, commit=5))
    storage.sync()
    what = storage.damage(random.Random(3))
    assert what is not None and storage.last_index < 5 and storage.repair_until == 5
    assert storage.crash(random.Random(0)).last_index == storage.last_index, "the damage is what is durable"
    node = RaftNode(Config(node_id=0, peers=(0, 1, 2)), storage)
    assert node.repair_until == 5 and node.commit == storage.last_index, "commit clamped to what it holds"
    storage.append([Entry(1, i, i) for i in range(storage.last_index + 1, 6)])
    assert storage.repair_until == 5, "not before it is durable"
    storage.sync()
    assert storage.repair_until is None


def _disk_storage(directory):
    storage = sim.SimDiskStorage(directory, LogConfig(segment_bytes=1024))
    storage.append([Entry(1, i, i, stamp_record_batch(build_batch([b"%d" % i]), i, 1)) for i in range(60)])
    storage.set_hard_state(HardState(term=1, vote=0, commit=59))
    storage.sync()
    assert len(storage.log.segments) > 3
    return storage


def test_damaged_partition_log_comes_back_repairing_or_a_read_finds_the_damage(tmp_path):
    kinds = set()
    for seed in range(24):
        directory = str(tmp_path / f"n{seed}")
        storage = _disk_storage(directory)
        what = storage.damage(random.Random(seed))
        kinds.add(re.search(r"emptied|cut|header|payload", what).group())
        reopened = sim.SimDiskStorage(directory, storage.config)
        if reopened.repair_until is None:  # only the crc shows it: the first read does
            try:
                reopened.entries_from(reopened.log_start_offset, 1 << 30)
            except CorruptDataError as error:
                reopened.log.quarantine_damaged(error)
                reopened = sim.SimDiskStorage(directory, storage.config)
        assert reopened.repair_until == 59, (seed, what)
        assert reopened.last_index < 59
        held = reopened.entries
        assert [e.last_offset for e in held] == list(range(reopened.log_start_offset, reopened.last_index + 1))
        reopened.log.close()
    assert kinds == {"emptied", "cut", "header", "payload"}


def _damaged_seeds(count, disk):
    found = []
    for seed in range(400):
        result = sim.run_seed(seed, trace=True)
        if result.disk != disk or not result.damaged_logs:
            continue
        assert result.violation is None and result.liveness_failure is None, (seed, result.violation,
                                                                             result.liveness_failure)
        found.append(result)
        if len(found) == count:
            return found
    raise AssertionError(f"only {len(found)} {'disk' if disk else 'memory'} seeds of 0..399 damage a log")


def test_seeds_that_damage_partition_logs_repair_them_and_pass():
    results = _damaged_seeds(4, disk=True)
    trace = "\n".join(line for r in results for line in r.trace)
    assert "repairing up to" in trace and "is repaired" in trace
    assert "reads damage" in trace, "some damage only a read finds"


def test_seeds_that_damage_memory_logs_repair_them_and_pass():
    results = _damaged_seeds(6, disk=False)
    trace = "\n".join(line for r in results for line in r.trace)
    assert "is repaired" in trace


def test_the_repair_votes_bug_loses_a_committed_entry():
    """What the repair protocol is for: the same seed passes without the bug."""
    config = sim.SimConfig(inject_bug="repair-votes")
    for seed in range(200):
        result = sim.run_seed(seed, config=config)
        if result.violation:
            assert "without committed" in result.violation or "committed there" in result.violation, result.violation
            assert result.damaged_logs
            correct = sim.run_seed(seed)
            assert correct.violation is None and correct.liveness_failure is None
            return
    raise AssertionError("no seed of 0..199 caught repair-votes")
