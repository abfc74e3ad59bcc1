"""PartitionStorage: the Raft Storage interface over a distlog.log.PartitionLog.

The partition log is the Raft log: a record batch is an entry, its record offsets are its
positions and its header's leader_term is the entry's term, so nothing is copied or
re-encoded for Raft. The hard state (term, vote, commit) and the term just below the log
start live in a small JSON file next to the partition directory (PartitionLog refuses
foreign files inside it), replaced atomically: write a temporary file, fsync, rename, fsync
the directory.

Moving the log start (retention, or a start-over below the leader's log start) touches both
the log and that file, so it is written ahead: the file first records the move as pending
(new start, its term, and which operation), then the log is changed, then the file records it
done. A crash in between is finished when the storage opens again; without this, a crash
after the segments went but before the file was updated would leave the term below the new
start unknown, and the partition unusable.

Appended entries are as durable as the log's flush.policy makes them. Raft acknowledges an
entry only once it is persisted, so the policy that keeps Raft's promise (a committed entry
survives any minority of crashes, including power loss) is 'always'.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from distlog.consensus.log_store import Span
from distlog.consensus.messages import Entry, HardState
from distlog.durable import write_file_atomically
from distlog.log.batch import ATTR_CONTROL, build_batch, peek_header, stamp_batch
from distlog.log.errors import OffsetOutOfRangeError
from distlog.log.partition_log import PartitionLog
from distlog.log.retention import expired_segment_count

# Big enough to fill an append of many small batches, small enough to bound one read.
_READ_BYTES_MAX = 1024 * 1024
# The key of the one record in a leader's marker batch (see raft.py: the §8 no-op).
LEADER_MARKER_KEY = b"\x00distlog.raft.leader"


def stamp_record_batch(data, base_offset: int, leader_term: int) -> bytes:
    """Config.stamp_batch for record batches: a stamped copy (the producer's buffer stays as is)."""
    buf = bytearray(data)
    stamp_batch(buf, base_offset, leader_term)
    return bytes(buf)


def leader_marker_batch(base_offset: int, leader_term: int) -> bytes:
    """Config.leader_marker for record batches: a control batch (consumers skip it) of one
    record keyed LEADER_MARKER_KEY."""
    return build_batch([leader_term.to_bytes(8, "little")], keys=[LEADER_MARKER_KEY], timestamps_ms=[0],
                       base_offset=base_offset, leader_term=leader_term, attributes=ATTR_CONTROL)


class PartitionStorage:
    """Raft storage over one partition log; state_path defaults to '<directory>.raft-state'."""

    def __init__(self, log: PartitionLog, state_path: Optional[str] = None):
        self.log = log
        self.state_path = state_path or os.path.normpath(log.directory) + ".raft-state"
        self._hard_state = HardState(commit=log.log_start_offset - 1)
        self._start: tuple[int, int] = (log.log_start_offset, 0)
        self._pending_start = None  # {"op", "offset", "term"} while the log start is being moved
        if os.path.exists(self.state_path):
            with open(self.state_path, "rb") as f:
                state = json.load(f)
            self._hard_state = HardState(state["term"], state["vote"], state["commit"])
            self._start = (state["start_offset"], state["start_term"])
            pending = state.get("pending_start")
            if pending is not None:  # a crash interrupted the move: finish it
                self._move_start(pending["op"], pending["offset"], pending["term"])

    # ---- hard state ---------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hard_state: HardState) -> None:
        """Term and vote changes are durable on return; a commit-only change is written with
        the next durable write or close() (a restarted node may re-learn a lower commit,
        which is safe, and one fsync per Ready on the hot path is not)."""
        durable = (hard_state.term, hard_state.vote) != (self._hard_state.term, self._hard_state.vote)
        self._hard_state = hard_state
        if durable:
            self._write_state()

    def close(self) -> None:
        """Persist the last commit index and close the log."""
        self._write_state()
        self.log.close()

    def _write_state(self) -> None:
        hs = self._hard_state
        state = {"term": hs.term, "vote": hs.vote, "commit": hs.commit,
                 "start_offset": self._start[0], "start_term": self._start[1],
                 "pending_start": self._pending_start}
        write_file_atomically(self.state_path, json.dumps(state).encode())

    # ---- the log ------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def start_term(self) -> int:
        start_offset, start_term = self._start
        if start_offset == self.log.log_start_offset:
            return start_term
        raise RuntimeError(
            f"{self.log.directory}: the log start moved from {start_offset} to "
            f"{self.log.log_start_offset} without PartitionStorage.apply_retention, so the term "
            f"below it is unknown (run retention through PartitionStorage)")

    @property
    def last_index(self) -> int:
        return self.log.log_end_offset - 1

    def span_at(self, offset: int) -> Optional[Span]:
        try:
            header = self.log.batch_header_at(offset)
        except OffsetOutOfRangeError:
            return None
        if header.base_offset > offset:
            return None  # compaction removed the batch that held offset
        return Span(header.leader_term, header.base_offset, header.last_offset)

    def entries_from(self, base_offset: int, max_count: int) -> list[Entry]:
        out: list[Entry] = []
        offset = base_offset
        while len(out) < max_count and offset < self.log.log_end_offset:
            view = self.log.read(offset, _READ_BYTES_MAX)
            position = 0
            while position < len(view) and len(out) < max_count:
                header = peek_header(view, position)
                if not out and header.base_offset != base_offset:
                    return []  # base_offset is not where a batch starts
                out.append(Entry(header.leader_term, header.base_offset, header.last_offset,
                                 view[position:position + header.batch_length]))
                position += header.batch_length
            if not view:
                break
            offset = out[-1].last_offset + 1
        return out

    def append(self, entries: Sequence[Entry]) -> None:
        base_offset = entries[0].base_offset
        if base_offset < self.log.log_end_offset:
            self.log.truncate_to(base_offset)
        self.log.append(b"".join(entry.data for entry in entries), assign_offsets=False)
        self.log.maybe_flush()

    def reset(self, log_start_offset: int, start_term: int) -> None:
        self._move_start("reset", log_start_offset, start_term)

    def _move_start(self, op: str, offset: int, term: int) -> None:
        """Move the log start to offset (the entry below it has `term`), written ahead (see
        the module docstring). Safe to repeat: both operations are idempotent."""
        self._pending_start = {"op": op, "offset": offset, "term": term}
        self._write_state()
        if op == "reset":
            self.log.reset_to(offset)  # empty, continuing at offset
            self.log.flush()
        else:
            self.log.delete_segments_before(offset)  # retention: committed entries below offset
        if self.log.log_start_offset != offset:
            raise RuntimeError(f"{self.log.directory}: moving the log start to {offset} ({op}) left it at "
                               f"{self.log.log_start_offset}; the log does not match its Raft state")
        self._start = (offset, term)
        self._pending_start = None
        self._write_state()

    def apply_retention(self, high_watermark: int, now_ms: int) -> int:
        """Run the log's retention, remembering the term below the new log start.

        Deletes nothing (returns 0) while a segment retention would delete still holds
        offsets above the high watermark: Raft may only forget committed entries.
        """
        segments = self.log.segments
        count = expired_segment_count(segments, self.log.config, now_ms)
        if count == 0 or segments[count - 1].next_offset - 1 > high_watermark:
            return 0
        self._move_start("retention", segments[count - 1].next_offset, segments[count - 1].last_term)
        return count
