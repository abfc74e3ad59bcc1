"""Recovery: what a partition log trusts when it opens, what it cuts, what it quarantines.

The rule follows "Protocol-Aware Recovery for Consensus-Based Storage" (Alagappan et al.,
FAST '18): tell a crash from corruption, and never delete on suspicion.

- **A torn tail is cut.** The active segment's bytes from its first unsound batch to the end,
  with no sound batch anywhere after them, are a write that a crash interrupted before it was
  fsynced: nothing acknowledged them. They are cut, as every log does.
- **Everything else unsound is damage.** A batch that fails its checks in a closed segment
  (closed segments were fsynced whole when they rolled), or in the active segment with sound
  batches after it, a closed segment cut short or emptied, a gap between two segments: those
  bytes were once written whole and may have been acknowledged. Recovery deletes none of them.
  It moves the damaged segment and every later one into `quarantine/<time>-<offset>/` inside
  the partition directory (the live copy of the damaged segment keeps its sound prefix) after
  writing a DAMAGE.json there: the first offset lost, the log end the replica had before
  (`held_until`: it may have acknowledged anything below it), why, and which files went.

A log with unrepaired damage reports it (PartitionLog.damage) until it holds every offset below
`held_until` again. Raft keeps such a replica from voting until then (raft.py, "Repair"): a
replica that lost entries it acknowledged must not help elect a leader that lacks them, which
is how a corrupt minority becomes a lost majority. The offsets it appends meanwhile all come
from a leader, since everything from the damaged offset on was moved away.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from distlog.durable import fsync_directory, make_directory_durably, write_file_atomically
from distlog.log.batch import HEADER_SIZE, MAGIC, BatchHeader, CorruptBatchError, RecordBatch, peek_header

logger = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"
DAMAGE_RECORD = "DAMAGE.json"
_SCAN_CHUNK_BYTES = 4 * 1024 * 1024
_RESYNC_WINDOW_BYTES = 64 * 1024 * 1024
# A resync candidate's base offset must lie within this many offsets after the damaged one:
# random payload bytes that happen to look like a header rarely pass this and never the crc.
_RESYNC_OFFSET_SPAN = 2**40


@dataclass(frozen=True)
class Damage:
    """A range a replica once held and no longer does: offsets [offset, held_until)."""

    offset: int
    held_until: int
    reason: str
    quarantine_dir: str

    def describe(self) -> str:
        return (f"offsets {self.offset}..{self.held_until - 1} were damaged ({self.reason}); the damaged "
                f"files are kept in {self.quarantine_dir}")


def scan_batches(fd: int, start: int, end: int, expected_offset: Optional[int], verify: bool,
                 problems: Optional[list] = None) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for consecutive sound batches in the file range [start, end).

    Stops at the first torn batch (header or body cut off), bad header, crc or table mismatch
    (when verify), or offset discontinuity, appending why to `problems` if given. Reads in
    large chunks, so a recovery scan costs a few syscalls per megabytes."""
    pos = start
    chunk, chunk_pos = b"", start
    while end - pos >= HEADER_SIZE:
        if pos + HEADER_SIZE > chunk_pos + len(chunk):
            chunk, chunk_pos = os.pread(fd, min(_SCAN_CHUNK_BYTES, end - pos), pos), pos
        try:
            header = peek_header(chunk, pos - chunk_pos)
        except CorruptBatchError as error:
            _note(problems, f"{error}")
            return
        batch_end = pos + header.batch_length
        if batch_end > end:
            _note(problems, f"the batch at byte {pos} claims {header.batch_length} bytes, past the end of the file")
            return
        if expected_offset is not None and header.base_offset != expected_offset:
            _note(problems, f"the batch at byte {pos} starts at offset {header.base_offset}, expected {expected_offset}")
            return
        if verify:
            if batch_end > chunk_pos + len(chunk):
                chunk, chunk_pos = os.pread(fd, max(min(_SCAN_CHUNK_BYTES, end - pos), header.batch_length), pos), pos
            try:
                RecordBatch(memoryview(chunk)[pos - chunk_pos : batch_end - chunk_pos]).verify()
            except CorruptBatchError as error:
                _note(problems, f"{error} (at byte {pos})")
                return
        yield pos, header
        expected_offset = header.last_offset + 1
        pos = batch_end
    if pos < end:
        _note(problems, f"{end - pos} bytes at byte {pos} are too few for a batch header")


def _note(problems: Optional[list], why: str) -> None:
    if problems is not None:
        problems.append(why)


def sound_batches_after(fd: int, start: int, end: int, min_offset: int) -> Optional[int]:
    """The next offset after a run of sound batches found anywhere in [start, end), or None if
    there is none: what tells damage from a torn tail. A candidate is any byte equal to MAGIC
    whose header fields are plausible (checked for every candidate at once with numpy); the
    first that passes its crc starts the run."""
    window_start = start
    while window_start < end - HEADER_SIZE:
        window_end = min(end, window_start + _RESYNC_WINDOW_BYTES + HEADER_SIZE)
        data = np.frombuffer(os.pread(fd, window_end - window_start, window_start), dtype=np.uint8)
        candidates = np.flatnonzero(data[: len(data) - HEADER_SIZE + 1] == MAGIC)
        if len(candidates):
            fields = data[candidates[:, None] + np.arange(1, 17)].copy()
            base_offsets = fields[:, 0:8].copy().view("<u8").ravel()
            lengths = fields[:, 8:12].copy().view("<u4").ravel().astype(np.int64)
            plausible = ((lengths >= HEADER_SIZE) & (candidates + window_start + lengths <= end)
                         & (base_offsets >= np.uint64(min_offset))
                         & (base_offsets < np.uint64(min_offset + _RESYNC_OFFSET_SPAN)))
            for candidate in candidates[plausible]:
                position = window_start + int(candidate)
                run_end = None
                for _, header in scan_batches(fd, position, end, None, verify=True):
                    run_end = header.last_offset + 1
                if run_end is not None:
                    return run_end
        window_start += _RESYNC_WINDOW_BYTES
    return None


# ---- quarantine ------------------------------------------------------------------------------


def new_quarantine_dir(directory: str, offset: int) -> str:
    """A fresh directory under the partition's quarantine/ for damage found at offset."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(directory, QUARANTINE_DIR, f"{stamp}-{offset:020d}")
    suffix = 0
    while os.path.exists(path if not suffix else f"{path}.{suffix}"):
        suffix += 1
    path = path if not suffix else f"{path}.{suffix}"
    make_directory_durably(os.path.join(directory, QUARANTINE_DIR))
    make_directory_durably(path)
    return path


def record_damage(damage: Damage, files: list[str]) -> None:
    """Write the damage record, durably, before any file moves: a crash part way through the
    quarantine then still leaves the replica marked as damaged."""
    write_file_atomically(os.path.join(damage.quarantine_dir, DAMAGE_RECORD), json.dumps({
        "offset": damage.offset, "held_until": damage.held_until, "reason": damage.reason,
        "files": sorted(os.path.basename(path) for path in files), "found_at": time.time(),
        "repaired_at": None}, indent=1).encode())


def move_into_quarantine(quarantine_dir: str, paths: list[str]) -> None:
    """Rename the files (those that exist) into quarantine_dir, durably. A reader that mapped
    one keeps reading the same bytes: a rename leaves the inode as it is."""
    moved = False
    for path in paths:
        try:
            os.rename(path, os.path.join(quarantine_dir, os.path.basename(path)))
            moved = True
        except FileNotFoundError:
            pass
    if moved:
        fsync_directory(quarantine_dir)
        fsync_directory(os.path.dirname(paths[0]))


def copy_file_prefix(source: str, destination: str, length: int) -> None:
    """Write the first `length` bytes of source to a new file at destination, durably (the
    caller fsyncs the directory)."""
    with open(source, "rb") as src, open(destination, "xb") as dst:
        remaining = length
        while remaining:
            chunk = src.read(min(_SCAN_CHUNK_BYTES, remaining))
            if not chunk:
                raise OSError(f"{source} is shorter than the {length} bytes to copy")
            dst.write(chunk)
            remaining -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def recorded_damage(directory: str) -> list[Damage]:
    """The damage records in the partition's quarantine not marked repaired, oldest first.
    Reads only (distlog topic verify uses it on a running broker's files)."""
    root = os.path.join(directory, QUARANTINE_DIR)
    if not os.path.isdir(root):
        return []
    found = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, DAMAGE_RECORD)
        try:
            with open(path, "rb") as f:
                record = json.load(f)
        except FileNotFoundError:
            continue  # a quarantine whose record never got written moved no file either
        except (OSError, ValueError) as error:
            raise CorruptBatchError(f"damage record {path} is unreadable ({error}); it says which offsets this "
                                    "replica lost: restore it, or delete the partition's directory to refetch "
                                    "the partition from its replicas") from None
        if record.get("repaired_at") is None:
            found.append(Damage(record["offset"], record["held_until"], record["reason"], os.path.join(root, name)))
    return found


def merged(damages: list[Damage]) -> Optional[Damage]:
    """One Damage covering them all (None for none): the replica lacks all of their ranges."""
    if not damages:
        return None
    if len(damages) == 1:
        return damages[0]
    return Damage(min(d.offset for d in damages), max(d.held_until for d in damages),
                  "; ".join(d.reason for d in damages), damages[-1].quarantine_dir)


def unrepaired_damage(directory: str, log_end_offset: int) -> Optional[Damage]:
    """The recorded damage the log has not made good yet (it holds fewer offsets than
    held_until), merged into one range; records the log has made good are marked repaired."""
    found = []
    for damage in recorded_damage(directory):
        if log_end_offset >= damage.held_until:
            mark_repaired(damage)
        else:
            found.append(damage)
    return merged(found)


def mark_repaired(damage: Damage) -> None:
    """Note in each record of the damage that the log holds its range again (kept for inspection)."""
    path = os.path.join(damage.quarantine_dir, DAMAGE_RECORD)
    with open(path, "rb") as f:
        record = json.load(f)
    record["repaired_at"] = time.time()
    write_file_atomically(path, json.dumps(record, indent=1).encode())
    logger.warning("the damage recorded in %s is repaired: the log holds offsets up to %d again",
                   damage.quarantine_dir, damage.held_until - 1)
