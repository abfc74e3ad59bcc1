"""Shared-memory ring: fixed-size slots in a /dev/shm file, handed out by descriptor, freed by ack.

Theory of operation
-------------------
The writer (`ShmRingWriter`) owns one file `/dev/shm/distlog-ring-<identity>-<pid>` laid out as

    [header: magic u64, slot_count u64, slot_bytes u64, pad u64][generation: u64 x slot_count]
    [slot 0: slot_bytes][slot 1]...

`write(frame)` copies the bytes once into a free slot (next-fit from a cursor, wrapping around)
and returns a `Descriptor(ring name, offset, length, generation)`; only the descriptor travels
over ZeroMQ. `free(descriptor)` is the acknowledgement: it bumps the slot's generation in shared
memory *before* the slot may be handed out again, so any descriptor still naming the slot is
stale from that moment on. Acks may come in any order. A frame that is bigger than a slot, or
finds every slot in use, gets None: the caller sends it inline instead (the writer never waits).

The reader (`ShmRingReader`) maps rings by name and turns a descriptor into a read-only
memoryview, refusing it (`StaleDescriptor`) if the generation no longer matches. Because the
writer may reuse the slot at any time after giving up on a reply, the reader checks again
*after* it used the bytes (`still_valid`), seqlock style: if the generation moved, whatever it
read may be torn and it must not act on it. A reader that pauses and resumes late is thereby
refused rather than served reused memory.

Clean-up: the writer unlinks its file on close; a file left behind by a dead pid of the same
identity is unlinked by the next writer of that identity. A reader keeps its mapping of an
unlinked file alive (the memory stays valid, just unreachable by name), so a crashed writer
never leaves a reader faulting.
"""

import dataclasses
import mmap
import os
import re
import struct

import numpy as np

SHM_DIR = "/dev/shm"
RING_PREFIX = "distlog-ring-"
_MAGIC = 0x474E495252534C44  # b"DLSRRING" little-endian
_HEADER = struct.Struct("<QQQQ")
_IDENTITY_SAFE = re.compile(r"[^A-Za-z0-9_.]")


class StaleDescriptor(Exception):
    """A descriptor names a slot that was freed (and maybe reused) or a ring that is gone."""


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """Where one frame sits: ring file name, byte offset of the slot, length, slot generation."""
    ring: str
    offset: int
    length: int
    generation: int


def ring_name(identity: str, pid: int) -> str:
    """The file name (in SHM_DIR) of the ring owned by `identity` in process `pid`."""
    return f"{RING_PREFIX}{_IDENTITY_SAFE.sub('_', identity)}-{pid}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_rings(identity: str, shm_dir: str = SHM_DIR) -> list[str]:
    """Unlink rings of `identity` whose owner pid is dead; returns the names removed."""
    prefix = ring_name(identity, 0)[:-1]
    removed = []
    for name in os.listdir(shm_dir):
        pid_text = name[len(prefix):]
        if not name.startswith(prefix) or not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def _views(buffer: mmap.mmap, slot_count: int):
    generations = np.frombuffer(buffer, dtype="<u8", count=slot_count, offset=_HEADER.size)
    data_offset = _HEADER.size + 8 * slot_count
    return generations, data_offset


class ShmRingWriter:
    """The owner of a ring: allocates slots, copies frames in, frees slots on acknowledgement."""

    def __init__(self, identity: str, *, slot_count: int = 64, slot_bytes: int = 1 << 20,
                 shm_dir: str = SHM_DIR):
        """Create the ring file (removing stale rings of `identity` from dead pids first)."""
        if slot_count < 1 or slot_bytes < 1:
            raise ValueError(f"a ring needs slots: slot_count={slot_count}, slot_bytes={slot_bytes}")
        remove_stale_rings(identity, shm_dir)
        self.name = ring_name(identity, os.getpid())
        self.path = os.path.join(shm_dir, self.name)
        self.slot_count = slot_count
        self.slot_bytes = slot_bytes
        self._buffer = self._create_file()
        self._generations, self._data_offset = _views(self._buffer, slot_count)
        self._in_use = np.zeros(slot_count, dtype=bool)
        self._cursor = 0
        self.fallbacks = 0

    def _create_file(self) -> mmap.mmap:
        size_bytes = _HEADER.size + 8 * self.slot_count + self.slot_count * self.slot_bytes
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size_bytes)
            buffer = mmap.mmap(fd, size_bytes)
        finally:
            os.close(fd)
        _HEADER.pack_into(buffer, 0, _MAGIC, self.slot_count, self.slot_bytes, 0)
        return buffer

    @property
    def slots_free(self) -> int:
        return int(self.slot_count - self._in_use.sum())

    def write(self, frame) -> Descriptor | None:
        """Copy `frame` into a free slot and describe it; None if it does not fit or none is free."""
        view = memoryview(frame).cast("B")
        slot = self._allocate(view.nbytes)
        if slot is None:
            self.fallbacks += 1
            return None
        offset = self._data_offset + slot * self.slot_bytes
        self._buffer[offset:offset + view.nbytes] = view
        return Descriptor(self.name, offset, view.nbytes, int(self._generations[slot]))

    def _allocate(self, nbytes: int) -> int | None:
        if nbytes > self.slot_bytes:
            return None
        free = np.flatnonzero(~self._in_use)
        if free.size == 0:
            return None
        # Next-fit from the cursor, wrapping around: spreads reuse so a late reader is more
        # likely to find its slot untouched (it is refused either way if not).
        later = free[free >= self._cursor]
        slot = int(later[0] if later.size else free[0])
        self._in_use[slot] = True
        self._cursor = (slot + 1) % self.slot_count
        return slot

    def free(self, descriptor: Descriptor) -> bool:
        """Acknowledge a descriptor: its slot is invalidated and reusable. False if already freed."""
        slot = self._slot_of(descriptor)
        if not self._in_use[slot] or int(self._generations[slot]) != descriptor.generation:
            return False
        # Bump first: from here on every reader holding the descriptor is refused.
        self._generations[slot] += 1
        self._in_use[slot] = False
        return True

    def _slot_of(self, descriptor: Descriptor) -> int:
        if descriptor.ring != self.name:
            raise ValueError(f"descriptor of ring {descriptor.ring!r} freed on ring {self.name!r}")
        return (descriptor.offset - self._data_offset) // self.slot_bytes

    def close(self) -> None:
        """Unmap and unlink the ring; readers that mapped it keep their (now orphaned) mapping."""
        self._generations = None
        try:
            self._buffer.close()
        except BufferError:
            pass  # a view is still exported; the mapping goes when it is collected
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _MappedRing:
    def __init__(self, path: str):
        fd = os.open(path, os.O_RDONLY)
        try:
            self.buffer = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        magic, slot_count, self.slot_bytes, _ = _HEADER.unpack_from(self.buffer, 0)
        if magic != _MAGIC:
            raise StaleDescriptor(f"{path} is not a distlog ring (bad magic)")
        self.generations, self.data_offset = _views(self.buffer, slot_count)
        self.memory = memoryview(self.buffer)

    def generation_at(self, offset: int) -> int:
        return int(self.generations[(offset - self.data_offset) // self.slot_bytes])


class ShmRingReader:
    """Maps rings by name and serves descriptors as read-only views, refusing stale ones."""

    def __init__(self, shm_dir: str = SHM_DIR):
        self.shm_dir = shm_dir
        self._rings: dict[str, _MappedRing] = {}

    def _ring(self, name: str) -> _MappedRing:
        ring = self._rings.get(name)
        if ring is None:
            if not name.startswith(RING_PREFIX) or "/" in name:
                raise StaleDescriptor(f"{name!r} is not a ring name")
            try:
                ring = _MappedRing(os.path.join(self.shm_dir, name))
            except (FileNotFoundError, ValueError, OSError) as error:
                raise StaleDescriptor(f"ring {name!r} is gone ({error})") from error
            # A new ring usually means a writer restarted: let go of rings whose files are gone,
            # so a broker does not keep one mapping per peer restart forever.
            self._drop_unlinked()
            self._rings[name] = ring
        return ring

    def _drop_unlinked(self) -> None:
        for name in [name for name in self._rings if not os.path.exists(os.path.join(self.shm_dir, name))]:
            _unmap(self._rings.pop(name))

    @property
    def mapped_rings(self) -> list[str]:
        return sorted(self._rings)

    def view(self, descriptor: Descriptor) -> memoryview:
        """The frame's bytes, zero-copy; StaleDescriptor if its slot was freed or the ring is gone.

        Call still_valid() after using the bytes: the writer may reuse the slot meanwhile.
        """
        ring = self._ring(descriptor.ring)
        end = descriptor.offset + descriptor.length
        if descriptor.offset < ring.data_offset or end > len(ring.buffer) or descriptor.length < 0:
            raise StaleDescriptor(f"descriptor {descriptor} lies outside ring {descriptor.ring!r}")
        if ring.generation_at(descriptor.offset) != descriptor.generation:
            raise StaleDescriptor(f"slot of {descriptor} was freed (writer gave up or acked it)")
        return ring.memory[descriptor.offset:end]

    def still_valid(self, descriptor: Descriptor) -> bool:
        """True if the slot still holds the descriptor's frame (check after using the bytes)."""
        try:
            ring = self._ring(descriptor.ring)
        except StaleDescriptor:
            return False
        return ring.generation_at(descriptor.offset) == descriptor.generation

    def close(self) -> None:
        """Drop the mappings (those with views still exported go when the views are collected)."""
        for ring in self._rings.values():
            _unmap(ring)
        self._rings.clear()


def _unmap(ring: _MappedRing) -> None:
    try:
        ring.memory.release()
        ring.buffer.close()
    except BufferError:
        pass  # a view handed out is still alive; the mapping goes when it is collected
