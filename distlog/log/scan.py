"""Scanning a segment file batch by batch: what recovery, the scrub and `topic verify` read with.

scan_batches walks consecutive sound batches from a position and says why it stopped;
sound_batches_after looks for any sound batch past a bad one, which is what tells damage in
the middle of written data from a torn tail (recovery.py). Both read with pread in large
chunks, never through a mapping, and change nothing.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional

import numpy as np

from distlog.log.batch import HEADER_SIZE, MAGIC, BatchHeader, CorruptBatchError, RecordBatch, peek_header

_SCAN_CHUNK_BYTES = 4 * 1024 * 1024
_RESYNC_WINDOW_BYTES = 64 * 1024 * 1024
# A resync candidate's base offset must lie within this many offsets after the damaged one:
# random payload bytes that happen to look like a header rarely pass this and never the crc.
_RESYNC_OFFSET_SPAN = 2**40


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
