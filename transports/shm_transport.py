"""Shared-memory fast path over ZeroMQ: big request frames go through a ring, a descriptor crosses the socket.

`ShmDealerConnection` wraps a `DealerConnection` and `ShmRouterServer` wraps a `RouterServer`
with the same method shapes, so either can be plugged in where the plain ones are used. A
request frame of at least `threshold_bytes` is copied once into the writer's ring
(transports/shm_ring.py) and replaced by a descriptor frame:

    [DESCRIPTOR_MAGIC: 8 bytes][offset u64][length u64][generation u64][name length u16][name]

Everything else (envelope, cid, fault rules) is the wrapped transport's, unchanged: a descriptor
dropped by a fault rule is a dropped message. The reply to a request frees its slots, and so does
giving up on it (`request()`'s timeout, or `abandon(cid)` for pipelined callers). A full ring or
an oversized frame goes inline, so the writer never waits for a reader.

The router resolves descriptors into read-only views of the ring (no copy). A descriptor whose
slot was already freed is dropped and counted, like a corrupt frame. Because the writer may free
and reuse the slot at any time after its timeout, a handler must call `still_valid(peer, cid)`
after it used the frames and before acting on them; `send()` of the reply forgets them.
Replies travel inline (they are small in the request/reply shapes we have; fetch responses
through a router-side ring are part 2 of #14).
"""

import struct
import time

import zmq

from distlog.transports.shm_ring import Descriptor, ShmRingReader, ShmRingWriter, StaleDescriptor
from distlog.transports.zmq_transport import DealerConnection, RouterServer, TransportTimeout

DESCRIPTOR_MAGIC = b"\xffDLSHM\x01\x00"
_FIELDS = struct.Struct("<QQQH")

# Below this a frame is cheaper to copy through ZeroMQ than to describe (measured by
# bench/transport.py; a descriptor costs a ring copy plus a generation check on each side).
SHM_THRESHOLD_BYTES = 64 * 1024


def encode_descriptor(descriptor: Descriptor) -> bytes:
    name = descriptor.ring.encode("ascii")
    fields = _FIELDS.pack(descriptor.offset, descriptor.length, descriptor.generation, len(name))
    return DESCRIPTOR_MAGIC + fields + name


def decode_descriptor(frame) -> Descriptor | None:
    """The descriptor a frame carries, or None if it is an ordinary (inline) frame."""
    view = memoryview(frame)
    head = len(DESCRIPTOR_MAGIC) + _FIELDS.size
    if view.nbytes < head or view.nbytes > head + 255 or view[:len(DESCRIPTOR_MAGIC)] != DESCRIPTOR_MAGIC:
        return None
    offset, length, generation, name_length = _FIELDS.unpack_from(view, len(DESCRIPTOR_MAGIC))
    if view.nbytes != head + name_length:
        return None
    try:
        name = bytes(view[head:]).decode("ascii")
    except UnicodeDecodeError:
        return None
    return Descriptor(name, offset, length, generation)


class ShmDealerConnection:
    """A DealerConnection whose big request frames travel through a shared-memory ring."""

    def __init__(self, endpoint: str, *, identity: bytes | None = None, ring_identity: str | None = None,
                 slot_count: int = 64, slot_bytes: int = 1 << 20,
                 threshold_bytes: int = SHM_THRESHOLD_BYTES, shm_dir: str | None = None, **dealer_options):
        """Connect like DealerConnection; the ring is named after ring_identity (else identity)."""
        self.inner = DealerConnection(endpoint, identity=identity, **dealer_options)
        owner = ring_identity or (identity.decode("ascii", "replace") if identity else "client")
        ring_options = {"shm_dir": shm_dir} if shm_dir else {}
        self.ring = ShmRingWriter(owner, slot_count=slot_count, slot_bytes=slot_bytes, **ring_options)
        self.threshold_bytes = threshold_bytes
        self._slots_by_cid: dict[int, list[Descriptor]] = {}
        self.socket = self.inner.socket
        self.endpoint = endpoint

    def wait_connected(self, timeout_s: float) -> bool:
        return self.inner.wait_connected(timeout_s)

    def send_request(self, frames: list) -> int | None:
        """Send like DealerConnection.send_request; big frames go by descriptor when a slot is free."""
        descriptors, wire_frames = [], []
        for frame in frames:
            descriptor = None
            if memoryview(frame).nbytes >= self.threshold_bytes:
                descriptor = self.ring.write(frame)
            if descriptor is None:
                wire_frames.append(frame)
            else:
                descriptors.append(descriptor)
                wire_frames.append(encode_descriptor(descriptor))
        cid = self.inner.send_request(wire_frames)
        if cid is None:
            self._free(descriptors)
        elif descriptors:
            self._slots_by_cid[cid] = descriptors
        return cid

    def recv_reply_nowait(self):
        """The next reply as (cid, frames), or None; a reply frees its request's slots."""
        reply = self.inner.recv_reply_nowait()
        if reply is not None:
            self.abandon(reply[0])
        return reply

    def abandon(self, cid: int) -> None:
        """Free the slots of a request the caller gave up on (its timeout passed)."""
        self._free(self._slots_by_cid.pop(cid, ()))

    def _free(self, descriptors) -> None:
        for descriptor in descriptors:
            self.ring.free(descriptor)

    @property
    def in_flight(self) -> int:
        """Requests whose slots are still held (no reply yet, not abandoned)."""
        return len(self._slots_by_cid)

    def request(self, frames: list, timeout_s: float):
        """Send one request and wait for its reply; a timeout frees the request's slots."""
        cids_before = set(self._slots_by_cid)
        try:
            return self._request(frames, timeout_s)
        except TransportTimeout:
            for cid in set(self._slots_by_cid) - cids_before:
                self.abandon(cid)
            raise

    def _request(self, frames: list, timeout_s: float):
        # DealerConnection.request's loop, with our send and receive so the ring is used and freed.
        deadline = time.monotonic() + timeout_s
        if not self.wait_connected(timeout_s):
            raise self.inner._timeout(timeout_s, "never connected")
        cid = self.send_request(frames)
        if cid is None:
            raise self.inner._timeout(timeout_s, "connection lost before the request went out")
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise self.inner._timeout(timeout_s, "request sent, no reply")
            if not self.socket.poll(int(remaining_s * 1000) + 1, zmq.POLLIN):
                continue
            reply = self.recv_reply_nowait()
            if reply is not None and reply[0] == cid:
                return reply[1]

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket and unlink the ring."""
        self.inner.close(linger_ms)
        self._slots_by_cid.clear()
        self.ring.close()


class ShmRouterServer:
    """A RouterServer that resolves descriptor frames into zero-copy views of the writer's ring."""

    def __init__(self, endpoint: str, *, shm_dir: str | None = None, **router_options):
        self.inner = RouterServer(endpoint, **router_options)
        self.reader = ShmRingReader(shm_dir) if shm_dir else ShmRingReader()
        self.socket = self.inner.socket
        self.endpoint = self.inner.endpoint
        self.stale_descriptors_dropped = 0
        self._descriptors: dict[tuple[bytes, int], list[Descriptor]] = {}

    @property
    def fault_rules(self):
        return self.inner.fault_rules

    def recv_nowait(self):
        """The next request as (peer, cid, frames) with descriptors resolved, or None.

        A request naming a freed slot or a vanished ring is dropped and counted (the writer has
        given up on it already), and the next queued request is looked at.
        """
        while True:
            request = self.inner.recv_nowait()
            if request is None:
                return None
            peer, cid, frames = request
            resolved = self._resolve(peer, cid, frames)
            if resolved is not None:
                return peer, cid, resolved
            self.stale_descriptors_dropped += 1

    def _resolve(self, peer: bytes, cid: int, frames: list) -> list | None:
        descriptors, resolved = [], []
        for frame in frames:
            descriptor = decode_descriptor(frame)
            if descriptor is None:
                resolved.append(frame)
                continue
            try:
                resolved.append(self.reader.view(descriptor))
            except StaleDescriptor:
                return None
            descriptors.append(descriptor)
        if descriptors:
            self._descriptors[(peer, cid)] = descriptors
        return resolved

    def from_ring(self, peer: bytes, cid: int) -> bool:
        """Whether some frame of this request is a view into a writer's ring."""
        return (peer, cid) in self._descriptors

    def still_valid(self, peer: bytes, cid: int) -> bool:
        """True if every ring frame of this request is still the writer's (check after use)."""
        descriptors = self._descriptors.get((peer, cid), ())
        return all(self.reader.still_valid(descriptor) for descriptor in descriptors)

    def forget(self, peer: bytes, cid: int) -> None:
        """Drop the bookkeeping of a request that will not be answered."""
        self._descriptors.pop((peer, cid), None)

    def send(self, peer: bytes, cid: int, frames: list) -> bool:
        """Reply like RouterServer.send; the request's ring frames are forgotten (the reply frees them)."""
        self.forget(peer, cid)
        return self.inner.send(peer, cid, frames)

    def send_tracked(self, peer: bytes, cid: int, frames: list):
        """Reply like RouterServer.send_tracked (its tracker, or None if dropped)."""
        self.forget(peer, cid)
        return self.inner.send_tracked(peer, cid, frames)

    def close(self, linger_ms: int = 0) -> None:
        self.inner.close(linger_ms)
        self._descriptors.clear()
        self.reader.close()
