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

A known gap: a bit flipped in the active segment's *last* batch looks like a torn tail and is
cut. If that batch had been fsynced and acknowledged, this replica lost it without knowing it
(PAR tells the two apart with a record of what was made durable; recording the last fsynced
position per segment is the power-loss design of the chaos issue, and would close this too).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

from distlog.durable import fsync_directory, make_directory_durably, write_file_atomically
from distlog.log.batch import CorruptBatchError
from distlog.log.segment import Segment

logger = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"
DAMAGE_RECORD = "DAMAGE.json"
_COPY_CHUNK_BYTES = 4 * 1024 * 1024


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
            chunk = src.read(min(_COPY_CHUNK_BYTES, remaining))
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


# ---- deciding on open ------------------------------------------------------------------


def trusted_segments(directory: str, segments: list[Segment]) -> list[Segment]:
    """The opened segments recovery can trust (the module docstring says what is cut and what
    is quarantined). Only the first problem is looked at: everything after it is quarantined."""
    segments = _without_failed_rolls(directory, segments)
    for index, segment in enumerate(segments):
        if index == len(segments) - 1:
            if segment.sound_end == segment.size_bytes:
                break
            held_until = segment.sound_run_after(segment.sound_end + 1)
            if held_until is None:
                segment.cut_torn_tail()  # nothing sound after the bad batch: a torn write
                break
            reason = f"{segment.problem}, in the active segment, with sound batches after it"
        else:
            following = segments[index + 1]
            if segment.sound_end == segment.size_bytes and segment.next_offset != following.base_offset:
                # The walk that trusted the index read a header it should not have (a flipped
                # last_offset_delta claims offsets far past the next segment): scan it whole.
                segment.rescan()
            if segment.sound_end < segment.size_bytes:
                reason = f"{segment.problem}, in a closed segment"
            elif segment.next_offset != following.base_offset:
                reason = (f"a closed segment of {segment.size_bytes} bytes ends at offset {segment.next_offset} "
                          f"but the next one starts at {following.base_offset}")
            else:
                continue
            # What it held: up to the active segment's end, the one end recovery crc-checked.
            held_until = segments[-1].next_offset
        return segments[:index] + [quarantine(directory, segments[index:], held_until, reason)]
    return segments


def readable_segments(directory: str, segments: list[Segment]) -> list[Segment]:
    """Read-only, recovery changes nothing: the segments up to the first problem, the damaged
    one served only up to its sound prefix; the rest is not served, and stays on disk."""
    segments = _without_failed_rolls(directory, segments, read_only=True)
    for index, segment in enumerate(segments):
        if segment.sound_end < segment.size_bytes:
            segment.cut_torn_tail()  # (read-only: in memory only)
            return segments[:index + 1]
        if index + 1 < len(segments) and segment.next_offset != segments[index + 1].base_offset:
            return segments[:index + 1]
    return segments


def _without_failed_rolls(directory: str, segments: list[Segment], read_only: bool = False) -> list[Segment]:
    """Drop the empty closed segments a failed roll left (the batches went on into the segment
    before, so its neighbours continue each other without it); an empty closed segment whose
    neighbours leave a gap is damage, and stays for trusted_segments to find."""
    leftovers = [segment for before, segment, after in zip(segments, segments[1:-1], segments[2:])
                 if segment.size_bytes == 0 and before.next_offset == after.base_offset]
    if leftovers and not read_only:
        for segment in leftovers:
            segment.delete_files()
            segment.release()
        fsync_directory(directory)
    return [segment for segment in segments if segment not in leftovers]


def quarantine(directory: str, segments: list[Segment], held_until: int, reason: str) -> Segment:
    """Move segments[0] (whose sound prefix ends at its sound_end) and every later segment into
    a new quarantine directory, keeping a copy of the sound prefix as the live segment; returns
    that segment, reopened as the active one (crc-checked whole: damage found in it is
    quarantined the same way). Durable on return; the segment objects passed are released."""
    while True:
        damaged = segments[0]
        offset = damaged.next_offset
        damage = Damage(offset, max(held_until, offset), reason, new_quarantine_dir(directory, offset))
        moving = [path for segment in segments
                  for path in (segment.log_path, segment.offset_index.path, segment.time_index.path)]
        logger.error("partition log %s: %s; moving %d segment(s) there until a replica repairs them",
                     directory, damage.describe(), len(segments))
        record_damage(damage, moving)
        move_into_quarantine(damage.quarantine_dir, moving)
        copy_file_prefix(os.path.join(damage.quarantine_dir, os.path.basename(damaged.log_path)), damaged.log_path,
                         damaged.sound_end)
        fsync_directory(directory)
        for segment in segments:
            segment.release()
        live = Segment.open(directory, damaged.base_offset, damaged.index_interval_bytes, recover=True)
        if live.sound_end == live.size_bytes:
            live.note_durable()  # copy_file_prefix fsynced it (power-loss tests, synced.py)
            return live
        segments, reason = [live], f"{live.problem}, in the sound part of a damaged segment"
