"""Read-only verification of a partition's replicas: what `distlog topic verify` reports.

Each replica's directory is scanned as it is on disk, without opening it as a PartitionLog
(opening recovers: it would cut a torn tail or quarantine damage, and this only looks): every
batch crc-checked, the offsets continuous within and across segments. Then the replicas'
committed ranges are compared batch by batch (base offset, last offset, crc) over the offsets
every one of them holds as committed. A running broker may be writing its active segment, so
unsound bytes past a replica's commit index in its active segment are not damage: they are a
write in progress (or a torn tail recovery will cut).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from distlog.log.recovery import merged, recorded_damage
from distlog.log.scan import scan_batches


@dataclass
class ReplicaScan:
    """One replica of a partition as its files hold it."""

    name: str  # who holds it, e.g. "broker 2"
    directory: str
    commit: Optional[int]  # its Raft commit index, None if unknown
    batches: list = field(default_factory=list)  # (base_offset, last_offset, crc) in order
    problems: list = field(default_factory=list)  # (offset, what is wrong)

    @property
    def log_start_offset(self) -> Optional[int]:
        return self.batches[0][0] if self.batches else None

    @property
    def log_end_offset(self) -> Optional[int]:
        return self.batches[-1][1] + 1 if self.batches else None


def _segment_bases(directory: str) -> list[int]:
    return sorted(int(name[:20]) for name in os.listdir(directory)
                  if name.endswith(".log") and len(name) == 24 and name[:20].isdigit())


def scan_replica(name: str, directory: str, commit: Optional[int]) -> ReplicaScan:
    """Scan every segment of the replica in `directory` (see the module docstring). A running
    broker may remove a segment meanwhile (retention, compaction, a quarantine): then again."""
    for _ in range(5):
        try:
            return _scan(name, directory, commit)
        except FileNotFoundError:
            continue
    raise RuntimeError(f"the segments of {directory} kept changing while being read; try again")


def _scan(name: str, directory: str, commit: Optional[int]) -> ReplicaScan:
    scan = ReplicaScan(name, directory, commit)
    bases = _segment_bases(directory)
    expected: Optional[int] = None
    unsound_before = False
    for index, base in enumerate(bases):
        path = os.path.join(directory, f"{base:020d}.log")
        if expected is not None and base != expected and not unsound_before:  # (else reported already)
            scan.problems.append((expected, f"offsets {expected}..{base - 1} are missing: the segment before "
                                            f"{os.path.basename(path)} ends at {expected}"))
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            problems: list[str] = []
            end, next_offset = 0, base
            for position, header in scan_batches(fd, 0, size, base, verify=True, problems=problems):
                scan.batches.append((header.base_offset, header.last_offset, header.crc))
                end, next_offset = position + header.batch_length, header.last_offset + 1
        finally:
            os.close(fd)
        active = index == len(bases) - 1
        unsound_before = end < size
        if unsound_before and not (active and (commit is None or next_offset > commit)):
            scan.problems.append((next_offset, f"{os.path.basename(path)}, byte {end}: {problems[0]}"))
        expected = next_offset
    damage = merged(recorded_damage(directory))
    if damage is not None:
        scan.problems.append((damage.offset, f"not repaired yet: {damage.describe()}"))
    return scan


def compare_replicas(scans: list[ReplicaScan]) -> list[str]:
    """Where the replicas' committed ranges differ: over the offsets every replica holds
    below its commit index, each must hold the same batches with the same crcs."""
    if len(scans) < 2 or any(s.commit is None or not s.batches for s in scans):
        return []
    low = max(s.log_start_offset for s in scans)
    high = min(min(s.commit, s.log_end_offset - 1) for s in scans)
    ranges = [[b for b in s.batches if b[0] >= low and b[1] <= high] for s in scans]
    divergence = []
    reference = ranges[0]
    for scan, batches in zip(scans[1:], ranges[1:]):
        for mine, theirs in zip(reference, batches):
            if mine != theirs:
                divergence.append(f"{scan.name} differs from {scans[0].name} at offset {min(mine[0], theirs[0])}: "
                                  f"batch {theirs[0]}..{theirs[1]} crc {theirs[2]:#010x} against "
                                  f"{mine[0]}..{mine[1]} crc {mine[2]:#010x}")
                break
        else:
            if len(reference) != len(batches):
                divergence.append(f"{scan.name} holds {len(batches)} committed batches in {low}..{high}, "
                                  f"{scans[0].name} {len(reference)}")
    return divergence


def broker_commit_index(data_dir: str, partition_name: str) -> Optional[int]:
    """The commit index a broker last recorded for a partition (its raft-state.json, written
    with the hard state: it may lag the real one, never lead it), None if it has none."""
    try:
        with open(os.path.join(data_dir, "raft-state.json")) as f:
            state = json.load(f).get(partition_name)
    except (OSError, ValueError):
        return None
    return None if state is None else state.get("commit")


def verify_topic(broker_data_dirs: dict, topic: str, partition: Optional[int] = None,
                 high_watermarks: Optional[dict] = None) -> list[dict]:
    """Scan every replica of the topic (or of one partition) held in the brokers' data dirs
    (broker id -> data dir) and compare them. The committed range compared is what each broker
    last recorded as its commit index, or more: a running cluster's high watermark (partition
    -> last committed offset, in `high_watermarks`), since a broker records its commit index
    lazily. One report per partition, {"partition",
    "replicas": [{"broker", "log_start_offset", "log_end_offset", "commit", "batches",
    "problems": [{"offset", "problem"}]}], "divergence": [...], "ok"}."""
    found: dict = {}
    prefix = f"{topic}-"
    for broker_id, data_dir in sorted(broker_data_dirs.items()):
        topics_dir = os.path.join(data_dir, "topics")
        if not os.path.isdir(topics_dir):
            continue
        for name in os.listdir(topics_dir):
            number = name[len(prefix):]
            if not (name.startswith(prefix) and number.isdigit() and os.path.isdir(os.path.join(topics_dir, name))):
                continue
            if partition is None or int(number) == partition:
                commit = broker_commit_index(data_dir, name)
                known = (high_watermarks or {}).get(int(number))
                if known is not None:
                    commit = known if commit is None else max(commit, known)
                found.setdefault(int(number), []).append(
                    scan_replica(f"broker {broker_id}", os.path.join(topics_dir, name), commit))
    reports = []
    for number, scans in sorted(found.items()):
        divergence = compare_replicas(scans)
        replicas = [{"broker": scan.name, "log_start_offset": scan.log_start_offset,
                     "log_end_offset": scan.log_end_offset, "commit": scan.commit, "batches": len(scan.batches),
                     "problems": [{"offset": offset, "problem": why} for offset, why in scan.problems]}
                    for scan in scans]
        reports.append({"partition": number, "replicas": replicas, "divergence": divergence,
                        "ok": not divergence and not any(scan.problems for scan in scans)})
    return reports
