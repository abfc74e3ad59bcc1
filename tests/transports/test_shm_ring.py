"""The shared-memory ring core: allocation, wraparound, acks out of order, stale descriptors."""

import os

import numpy as np
import pytest

from distlog.transports.shm_ring import (
    ShmRingReader, ShmRingWriter, StaleDescriptor, remove_stale_rings, ring_name)


@pytest.fixture
def shm_dir(tmp_path):
    return str(tmp_path)


@pytest.fixture
def ring(shm_dir):
    writer = ShmRingWriter("broker-1", slot_count=3, slot_bytes=64, shm_dir=shm_dir)
    yield writer
    writer.close()


@pytest.fixture
def reader(shm_dir):
    ring_reader = ShmRingReader(shm_dir)
    yield ring_reader
    ring_reader.close()


def test_a_written_frame_reads_back_byte_identical_through_the_descriptor(ring, reader):
    frame = np.arange(64, dtype=np.uint8)
    descriptor = ring.write(frame)
    assert bytes(reader.view(descriptor)) == frame.tobytes()
    assert reader.still_valid(descriptor)


def test_allocation_wraps_around_to_slots_freed_behind_the_cursor(ring, reader):
    first, second, third = (ring.write(bytes([n]) * 8) for n in (1, 2, 3))
    ring.free(first)
    wrapped = ring.write(b"\x04" * 8)
    assert wrapped.offset == first.offset
    assert wrapped.generation == first.generation + 1
    assert bytes(reader.view(wrapped)) == b"\x04" * 8
    assert bytes(reader.view(third)) == b"\x03" * 8


def test_acks_out_of_order_free_exactly_the_acked_slots(ring):
    descriptors = [ring.write(b"x") for _ in range(3)]
    assert ring.free(descriptors[2]) and ring.free(descriptors[0])
    assert ring.slots_free == 2
    assert not ring.free(descriptors[0]), "a second ack of the same descriptor is a no-op"
    assert ring.slots_free == 2
    assert ring.free(descriptors[1]) and ring.slots_free == 3


def test_a_freed_descriptor_is_refused_before_use(ring, reader):
    descriptor = ring.write(b"old")
    ring.free(descriptor)
    ring.write(b"new")
    with pytest.raises(StaleDescriptor, match="freed"):
        reader.view(descriptor)


def test_a_slot_reused_while_the_reader_uses_it_is_detected_after_use(ring, reader):
    ring.write(b"a")
    ring.write(b"b")  # slots 0 and 1 stay in use, so the only free slot is reused
    descriptor = ring.write(b"original")
    view = reader.view(descriptor)
    ring.free(descriptor)  # the writer gave up on the reply: the slot goes back
    reused = ring.write(b"REUSED!!")
    assert reused.offset == descriptor.offset
    assert bytes(view) == b"REUSED!!"  # the bytes the reader holds are no longer its frame...
    assert not reader.still_valid(descriptor)  # ...and the check after use says so


def test_a_full_ring_or_an_oversized_frame_returns_none_for_an_inline_send(ring):
    for _ in range(3):
        assert ring.write(b"x") is not None
    assert ring.write(b"x") is None
    assert ring.write(b"") is None
    assert ring.fallbacks == 2


def test_an_oversized_frame_falls_back_even_with_free_slots(ring):
    assert ring.write(b"y" * 65) is None
    assert ring.slots_free == 3


def test_close_unlinks_the_ring_and_a_reader_then_refuses_new_lookups(shm_dir):
    writer = ShmRingWriter("broker-2", slot_count=1, slot_bytes=8, shm_dir=shm_dir)
    descriptor = writer.write(b"z")
    writer.close()
    assert not os.path.exists(os.path.join(shm_dir, descriptor.ring))
    ring_reader = ShmRingReader(shm_dir)
    with pytest.raises(StaleDescriptor, match="gone"):
        ring_reader.view(descriptor)
    assert not ring_reader.still_valid(descriptor)


def test_a_reader_lets_go_of_rings_whose_writer_is_gone_when_a_new_one_appears(shm_dir, reader):
    first = ShmRingWriter("broker-4", slot_count=1, slot_bytes=8, shm_dir=shm_dir)
    held = reader.view(first.write(b"kept"))
    first.close()
    assert bytes(held) == b"kept", "a view handed out stays readable after the writer unlinks"
    second = ShmRingWriter("broker-5", slot_count=1, slot_bytes=8, shm_dir=shm_dir)
    try:
        reader.view(second.write(b"new"))
        assert reader.mapped_rings == [second.name]
    finally:
        second.close()


def test_a_stale_ring_of_a_dead_pid_is_removed_by_the_next_owner_of_the_identity(shm_dir):
    dead_pid = _a_dead_pid()
    stale = os.path.join(shm_dir, ring_name("broker-3", dead_pid))
    other = os.path.join(shm_dir, ring_name("broker-30", dead_pid))
    for path in (stale, other):
        open(path, "wb").close()
    writer = ShmRingWriter("broker-3", slot_count=1, slot_bytes=8, shm_dir=shm_dir)
    try:
        assert not os.path.exists(stale)
        assert os.path.exists(other), "another identity's ring is not ours to remove"
        assert os.path.exists(writer.path)
        assert remove_stale_rings("broker-3", shm_dir) == [], "a live owner's ring stays"
    finally:
        writer.close()


def test_descriptors_outside_the_ring_or_with_foreign_names_are_refused(ring, reader):
    descriptor = ring.write(b"q")
    for bad in (descriptor.__class__(descriptor.ring, 10**9, 1, descriptor.generation),
                descriptor.__class__("../etc/passwd", 0, 1, 0)):
        with pytest.raises(StaleDescriptor):
            reader.view(bad)


def _a_dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
