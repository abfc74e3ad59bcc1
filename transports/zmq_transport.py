"""ZeroMQ transport: a broker's ROUTER and a client's or peer's DEALER, with correlation-id envelopes.

Wire envelope (the protocol above never sees it):
    DEALER -> ROUTER   [cid: u64 little-endian, 8 bytes][payload frame 0][payload frame 1]...
    ROUTER receives    [peer identity][cid][payload...] and replies [peer identity][cid][payload...]
Replies may come back in any order; the cid matches them to requests, so a client can pipeline.

Neither class is thread-safe (ZeroMQ sockets are not): one thread owns each object. Both expose
`socket` so the owner can put it in a zmq.Poller next to other sockets.

Fault rules (transports/faults.py) are applied here, keyed by peer name: a ROUTER checks
allows_recv on what arrives and allows_send on replies; a DEALER checks allows_send on requests and
allows_recv on replies, using the peer name of the remote end it was given.
"""

import itertools
import struct
import time

import zmq

from distlog.transports.faults import FaultRules

_CID = struct.Struct("<Q")
_CID_MODULUS = 1 << 64

# Frames at least this big go zero-copy: below it, copying is cheaper than pinning the buffer.
ZERO_COPY_THRESHOLD_BYTES = 64 * 1024

# Large enough that a pipelining client or a burst of replication never hits the high-water mark
# in normal operation; small enough that a stuck peer cannot eat all memory.
HIGH_WATER_MARK_MESSAGES = 100_000
# What a ROUTER queues from one peer before it stops reading that peer's socket, so a client
# that sends faster than the broker reads is held back by TCP (its own queue fills) instead of
# filling the broker's memory. A Producer has at most max_in_flight (10) requests out per broker;
# a peer broker's Raft frames wait in its own DEALER's queue meanwhile (past that queue's mark
# they are dropped, which Raft treats as a lost message and resends).
ROUTER_RECEIVE_HWM_MESSAGES = 1_000

# Reconnect quickly after a broker restart (failover target is 1 s) but back off against a peer
# that stays down so we don't spin on connect().
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 1000


class TransportError(Exception):
    """A transport could not do what was asked (bind failed, socket closed, ...)."""


class TransportTimeout(TransportError):
    """No reply arrived in time; the message names the endpoint and the timeout."""


def peer_name(identity: bytes) -> str:
    """The fault-rule name of a peer: b"broker-3" -> "broker-3"; unreadable identities as hex.

    ZeroMQ-generated identities start with a zero byte; those (and anything not printable ASCII)
    become hex so they are still usable as names in logs and rules.
    """
    if identity and identity[0] != 0:
        try:
            text = identity.decode("ascii")
        except UnicodeDecodeError:
            return identity.hex()
        if text.isprintable():
            return text
    return identity.hex()


def _send_frames(sock: zmq.Socket, head: list[bytes], frames: list, track: bool = False):
    """Send head + frames as one multipart message without blocking; big frames zero-copy.

    With track, the biggest frame goes zero-copy whatever its size and its zmq.MessageTracker
    is returned: done once ZeroMQ let go of the message (written to the socket, or dropped).
    Raises zmq.Again when the message cannot be queued (no connection, high-water mark); ZeroMQ
    queues multipart messages atomically, so a failure on the first frame sends nothing.
    """
    parts = head + list(frames)
    sizes_bytes = [memoryview(part).nbytes for part in parts]
    biggest = max(sizes_bytes)
    if biggest < ZERO_COPY_THRESHOLD_BYTES and not track:
        # One call for the common small message: per-frame send() calls cost ~40% more.
        sock.send_multipart(parts, zmq.NOBLOCK)
        return None
    tracked = sizes_bytes.index(biggest) if track else -1
    tracker = None
    last = len(parts) - 1
    for index, part in enumerate(parts):
        flags = zmq.NOBLOCK | (zmq.SNDMORE if index < last else 0)
        if index == tracked:
            tracker = sock.send(part, flags, copy=False, track=True)
        else:
            sock.send(part, flags, copy=sizes_bytes[index] < ZERO_COPY_THRESHOLD_BYTES, track=False)
    return tracker


def _recv_frames(sock: zmq.Socket) -> list[bytes] | None:
    """The next multipart message, or None if none is waiting.

    Received frames are copied into bytes: building a zmq.Frame per part costs more than copying
    anything but multi-megabyte frames (measured: 225k vs 161k small messages/s).
    """
    try:
        return sock.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        return None


def _check_frames(frames) -> None:
    if not frames:
        raise ValueError("a message needs at least one payload frame")


class RouterServer:
    """The broker side: binds a ROUTER, receives requests, sends replies to the peer that asked."""

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None,
                 fault_rules: FaultRules | None = None):
        """Bind `endpoint` (tcp://127.0.0.1:0 picks a free port; ipc:// works too).

        Raises TransportError with the endpoint in the message if it cannot bind (port in use).
        """
        self.fault_rules = fault_rules if fault_rules is not None else FaultRules()
        self.malformed_frames_dropped = 0
        self.unroutable_replies_dropped = 0
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK_MESSAGES)
        self.socket.setsockopt(zmq.RCVHWM, ROUTER_RECEIVE_HWM_MESSAGES)
        # A tracked reply goes zero-copy whatever its size (pyzmq would copy one under 64 KiB and
        # report it done at once, and backpressure would not see it queued); untracked small
        # frames are copied by _send_frames' own choice.
        self.socket.copy_threshold = 0
        # Mandatory routing only so send() can report an unroutable reply as False; every send is
        # non-blocking, so it never stalls the broker loop and never raises to the caller.
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A restarted broker reconnects with the same identity before we notice the old
        # connection died; hand the identity over instead of ignoring the newcomer.
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as error:
            self.socket.close(linger=0)
            raise TransportError(f"cannot bind {endpoint}: {error.strerror}") from error
        self.endpoint: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def recv_nowait(self) -> tuple[bytes, int, list[memoryview]] | None:
        """The next request as (peer identity, cid, payload frames), or None if none is waiting.

        Malformed envelopes (no payload, cid not 8 bytes) and frames the fault rules refuse are
        dropped and counted, never raised; the call then looks at the next queued message.
        """
        while True:
            parts = _recv_frames(self.socket)
            if parts is None:
                return None
            if len(parts) < 3 or len(parts[1]) != _CID.size:
                self.malformed_frames_dropped += 1
                continue
            identity = parts[0]
            if not self.fault_rules.allows_recv(peer_name(identity)):
                continue
            (cid,) = _CID.unpack(parts[1])
            return identity, cid, [memoryview(part) for part in parts[2:]]

    def send(self, peer: bytes, cid: int, frames: list) -> bool:
        """Reply to `peer` under `cid`; False if fault rules dropped it or the peer is gone/full.

        Frames of ZERO_COPY_THRESHOLD_BYTES or more are sent without copying: don't modify them
        afterwards.
        """
        return self._send(peer, cid, frames, track=False) is not False

    def send_tracked(self, peer: bytes, cid: int, frames: list):
        """Reply like send(), returning a zmq.MessageTracker (done once ZeroMQ let go of the
        reply's bytes) or None if the reply was dropped. For replies worth counting until they
        leave (broker/backpressure.py): tracking costs a zero-copy frame and an event."""
        sent = self._send(peer, cid, frames, track=True)
        return None if sent is False else sent

    def _send(self, peer: bytes, cid: int, frames: list, track: bool):
        """The tracker (None untracked) of a reply that went out, or False if it was dropped."""
        _check_frames(frames)
        if not self.fault_rules.allows_send(peer_name(peer)):
            return False
        try:
            return _send_frames(self.socket, [peer, _CID.pack(cid % _CID_MODULUS)], frames, track)
        except zmq.ZMQError as error:
            if isinstance(error, zmq.Again) or error.errno == zmq.EHOSTUNREACH:
                self.unroutable_replies_dropped += 1
                return False
            raise TransportError(f"send on {self.endpoint} failed: {error.strerror}") from error

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; queued replies get up to linger_ms to leave."""
        self.socket.close(linger=linger_ms)


class DealerConnection:
    """The client (or peer broker) side: one DEALER connected to one broker, pipelined by cid."""

    def __init__(self, endpoint: str, *, identity: bytes | None = None,
                 context: zmq.Context | None = None, fault_rules: FaultRules | None = None,
                 peer: str | None = None):
        """Connect to `endpoint` (asynchronously: the connection comes up in the background).

        identity: b"broker-3" when broker 3 connects to a peer, so the peer's fault rules can name
        it; clients leave it None and ZeroMQ picks a random one.
        peer: the name of the remote end for this side's fault rules ("broker-1"); defaults to
        the endpoint string.
        """
        self.endpoint = endpoint
        self.peer = peer if peer is not None else endpoint
        self.fault_rules = fault_rules if fault_rules is not None else FaultRules()
        self.malformed_frames_dropped = 0
        self._cids = itertools.count(1)
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK_MESSAGES)
        self.socket.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK_MESSAGES)
        # Queue nothing for a peer that is not connected: a dead broker must not collect a
        # backlog that floods it (with stale requests) when it comes back.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        self.socket.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        if identity is not None:
            self.socket.setsockopt(zmq.IDENTITY, identity)
        try:
            self.socket.connect(endpoint)
        except zmq.ZMQError as error:
            self.socket.close(linger=0)
            raise TransportError(f"cannot connect to {endpoint}: {error.strerror}") from error

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to timeout_s until a request could be sent (the connection is up)."""
        return bool(self.socket.poll(max(0, int(timeout_s * 1000)), zmq.POLLOUT))

    def send_request(self, frames: list) -> int | None:
        """Send one request under a fresh cid and return the cid; never blocks.

        Returns None when there is no live connection (or the send queue is full): with IMMEDIATE
        nothing is queued for a dead peer, so the caller decides whether to retry or fail over.
        A fault-rule drop still returns the cid, exactly like a frame lost on the wire: the
        request simply gets no reply and the caller's timeout handles it.
        """
        _check_frames(frames)
        cid = next(self._cids) % _CID_MODULUS
        if not self.fault_rules.allows_send(self.peer):
            return cid
        try:
            _send_frames(self.socket, [_CID.pack(cid)], frames)
        except zmq.Again:
            return None
        return cid

    def recv_reply_nowait(self) -> tuple[int, list[memoryview]] | None:
        """The next reply as (cid, payload frames), or None if none is waiting.

        Malformed replies are dropped and counted; replies the fault rules refuse are dropped.
        """
        while True:
            parts = _recv_frames(self.socket)
            if parts is None:
                return None
            if len(parts) < 2 or len(parts[0]) != _CID.size:
                self.malformed_frames_dropped += 1
                continue
            if not self.fault_rules.allows_recv(self.peer):
                continue
            (cid,) = _CID.unpack(parts[0])
            return cid, [memoryview(part) for part in parts[1:]]

    def request(self, frames: list, timeout_s: float) -> list[memoryview]:
        """Send one request and wait for its reply; TransportTimeout after timeout_s.

        Replies to other cids (late answers to earlier timed-out requests) are discarded, so use
        this only on a connection that is not also pipelining with send_request().
        """
        deadline = time.monotonic() + timeout_s
        if not self.wait_connected(timeout_s):
            raise self._timeout(timeout_s, "never connected")
        cid = self.send_request(frames)
        if cid is None:
            raise self._timeout(timeout_s, "connection lost before the request went out")
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0 or not self.socket.poll(int(remaining_s * 1000) + 1, zmq.POLLIN):
                if time.monotonic() >= deadline:
                    raise self._timeout(timeout_s, "request sent, no reply")
                continue
            reply = self.recv_reply_nowait()
            if reply is not None and reply[0] == cid:
                return reply[1]

    def _timeout(self, timeout_s: float, what: str) -> TransportTimeout:
        return TransportTimeout(
            f"no reply from {self.endpoint} within {timeout_s:.3g} s ({what}; "
            f"is a broker running and listening there?)")

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; queued requests get up to linger_ms to leave."""
        self.socket.close(linger=linger_ms)

