"""Disk faults for the nemesis: a torn batch, a damaged older segment, a power cut, applied to a stopped broker's data dir.

Each function changes the files of a broker that is not running (after SIGKILL), takes its
randomness from the nemesis's seeded random.Random (so a seed replays the same bytes), and
returns what it did for the history's nemesis end record ({} when there was nothing to do):
file paths relative to the data dir, byte positions and counts.

- tear_batch: what a crash in the middle of writing a batch leaves: the newest segment of a
  partition ends part way into a batch, in bytes that were never fsynced (so never
  acknowledged). Recovery cuts the partial batch off as a torn tail. Tearing synced bytes
  would take back an acknowledged entry without recovery noticing (the "known gap" in
  distlog/log/recovery.py: damage in the last batch looks like a torn tail), which no crash
  does; that is why the synced-size record decides where the tear goes.
- corrupt_older_segment: a bit flip or a truncation in a closed segment, which recovery, a
  read or the scrub finds and quarantines, and Raft repairs from the other replicas (issue
  #12). Damage on a minority only: a majority losing the same entry is data loss by design.
- cut_power: the broker loses exactly what it had not fsynced, from the sizes the broker
  recorded after each fsync (distlog/log/synced.py, DISTLOG_RECORD_SYNCED=1; design in
  docs/POWER_LOSS.md).
"""

from __future__ import annotations

import os
import random
import re

from distlog.log.scan import scan_batches
from distlog.log.synced import RECORD_SYNCED_ENV, recorded_synced_size, sidecar_path

_SEGMENT_LOG = re.compile(r"^(\d{20})\.log$")
_QUARANTINE_DIR = "quarantine"  # damaged files recovery moved away: left as they are


def _partition_dirs(data_dir: str) -> list[str]:
    try:
        return sorted(entry.path for entry in os.scandir(os.path.join(data_dir, "topics")) if entry.is_dir())
    except FileNotFoundError:
        return []


def _segment_paths(directory: str) -> list[str]:
    """The .log files of one partition directory, oldest first."""
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory)) if _SEGMENT_LOG.match(name)]


def _batches(path: str) -> list[tuple[int, int, int, int]]:
    """(position, batch_length, base_offset, last_offset) of the consecutive whole batches from
    the start of a segment file, read with the recovery scanner (headers and lengths; crc not
    needed to find the boundaries)."""
    base_offset = int(os.path.basename(path)[:20])
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return [(position, header.batch_length, header.base_offset, header.last_offset)
                for position, header in scan_batches(fd, 0, size, base_offset, verify=False)]
    finally:
        os.close(fd)


def tear_batch(data_dir: str, rng: random.Random) -> dict:
    """Leave the newest segment of a random partition ending part way into a batch, as a crash
    in the middle of writing one does, but only in bytes the broker had not fsynced: a replica
    fsyncs before it acknowledges, so a real crash never tears what it acknowledged (tearing
    that would be corruption, which recovery cannot tell from a torn tail in the last batch).

    Where the last batch is not all synced (by the recorded synced size), the file is cut
    strictly inside it at or past the synced size ("kind": "cut"); where it is, a prefix of a
    copy of it is appended, the start of a next batch that never got all its bytes out
    ("kind": "append"). A segment without a synced-size record counts as never synced.
    Returns {"file", "kind", "size_bytes" (before), "cut_at" (the new size), "batch_position",
    "batch_bytes", "batch_offsets": [base, last], "bytes" (removed or added)}; {} if no
    partition's newest segment holds a batch."""
    candidates = []
    for directory in _partition_dirs(data_dir):
        segments = _segment_paths(directory)
        if segments:
            batches = _batches(segments[-1])
            if batches:
                candidates.append((segments[-1], batches[-1]))
    if not candidates:
        return {}
    path, (position, batch_bytes, base_offset, last_offset) = rng.choice(candidates)
    size_bytes = os.path.getsize(path)
    synced_bytes = recorded_synced_size(path) or 0  # no record: nothing of it is known to be on disk
    batch_end = position + batch_bytes
    done = {"file": os.path.relpath(path, data_dir), "size_bytes": size_bytes, "batch_position": position,
            "batch_bytes": batch_bytes, "batch_offsets": [base_offset, last_offset]}
    if synced_bytes >= batch_end:
        with open(path, "r+b") as segment:
            segment.seek(position)
            torn = segment.read(rng.randint(1, batch_bytes - 1))
            segment.seek(size_bytes)
            segment.write(torn)
        return {**done, "kind": "append", "cut_at": size_bytes + len(torn), "bytes": len(torn)}
    # A batch is at least a 61-byte header, so there is always a byte strictly inside it.
    cut_at = rng.randint(max(position + 1, synced_bytes), batch_end - 1)
    os.truncate(path, cut_at)
    return {**done, "kind": "cut", "cut_at": cut_at, "bytes": size_bytes - cut_at}


def corrupt_older_segment(data_dir: str, rng: random.Random) -> dict:
    """Flip one bit of, or truncate, a non-empty segment that is not the newest of its partition.

    Returns {"file", "kind": "bit-flip", "position", "bit"} or {"file", "kind": "truncate",
    "size_bytes", "cut_at", "bytes" (removed)}; {} if no partition has an older non-empty
    segment (a topic needs a small segment.bytes to roll at all)."""
    older = [path for directory in _partition_dirs(data_dir) for path in _segment_paths(directory)[:-1]
             if os.path.getsize(path) > 0]
    if not older:
        return {}
    path = rng.choice(older)
    size_bytes = os.path.getsize(path)
    relative = os.path.relpath(path, data_dir)
    if rng.random() < 0.5:
        position, bit = rng.randrange(size_bytes), rng.randrange(8)
        with open(path, "r+b") as segment:
            segment.seek(position)
            byte = segment.read(1)[0]
            segment.seek(position)
            segment.write(bytes([byte ^ (1 << bit)]))
        return {"file": relative, "kind": "bit-flip", "position": position, "bit": bit}
    cut_at = rng.randrange(size_bytes)
    os.truncate(path, cut_at)
    return {"file": relative, "kind": "truncate", "size_bytes": size_bytes, "cut_at": cut_at,
            "bytes": size_bytes - cut_at}


def cut_power(data_dir: str) -> dict:
    """Truncate every segment of a SIGKILLed broker to the size its last fsync made durable.

    A segment with no record was never fsynced while recording was on, and is emptied: the
    file system may keep a file it never synced at any length down to 0 (here: 0). Index files
    are left alone (they are fsynced whenever written, and only hints: open checks them), and
    so are files written atomically with fsync (raft-state.json, metadata.json, damage
    records) and everything in a partition's quarantine. Returns {"files": [{"file",
    "size_bytes", "synced_bytes"}, ...] (only those cut), "bytes" (removed in all)}, {} if
    nothing was past its synced size. ValueError if the broker did not record (it would lose
    everything)."""
    cuts, recorded_any = [], False
    for root, directories, names in os.walk(data_dir):
        directories[:] = sorted(d for d in directories if d != _QUARANTINE_DIR)
        for name in sorted(names):
            if not _SEGMENT_LOG.match(name):
                continue
            path = os.path.join(root, name)
            size_bytes = os.path.getsize(path)
            synced_bytes = recorded_synced_size(path)
            recorded_any |= synced_bytes is not None
            synced_bytes = synced_bytes or 0
            if size_bytes > synced_bytes:
                cuts.append((path, size_bytes, synced_bytes))
    if not recorded_any and any(size for _, size, _ in cuts):
        raise ValueError(f"no segment under {data_dir} has a synced-size record ({sidecar_path('<segment>.log')}): "
                         f"start the broker with {RECORD_SYNCED_ENV}=1 from its first start, or a power cut "
                         "would empty every segment")
    for path, _, synced_bytes in cuts:
        os.truncate(path, synced_bytes)
    if not cuts:
        return {}
    return {"files": [{"file": os.path.relpath(path, data_dir), "size_bytes": size_bytes, "synced_bytes": synced}
                      for path, size_bytes, synced in cuts],
            "bytes": sum(size_bytes - synced for _, size_bytes, synced in cuts)}
