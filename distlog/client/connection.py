"""One broker connection for the client library: typed requests in, typed responses out."""

from __future__ import annotations

import itertools

import zmq
from zmq.utils.monitor import parse_monitor_message

from distlog.client.errors import RequestTimedOutError
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import DistlogError
from distlog.protocol.messages import ErrorResponse, Message
from distlog.transports.shm_transport import ShmDealerConnection
from distlog.transports.zmq_transport import DealerConnection, TransportTimeout

_LOCAL_HOSTS = ("tcp://127.0.0.1:", "tcp://localhost:")
_ring_counter = itertools.count()


def is_same_host(endpoint: str) -> bool:
    """Whether a broker at this endpoint is surely on this host (loopback TCP or ipc://)."""
    return endpoint.startswith(_LOCAL_HOSTS) or endpoint.startswith("ipc://")


def check_response(response: Message) -> Message:
    """Turn an ErrorResponse into the DistlogError it stands for; pass anything else through."""
    if isinstance(response, ErrorResponse):
        raise DistlogError(response.error_code, response.error_message)
    return response


class BrokerConnection:
    """A DEALER to one broker. `request` is blocking; `send`/`poll_reply` let a caller pipeline."""

    def __init__(self, endpoint: str, context=None, identity: bytes | None = None, shm: bool = False):
        """shm=True: big request frames go through a shared-memory ring (same-host brokers only;
        elsewhere the flag is ignored). The ring file is named after this pid and unlinked by close()."""
        self.endpoint = endpoint
        if shm and is_same_host(endpoint):
            self.transport = ShmDealerConnection(endpoint, context=context, identity=identity,
                                                 ring_identity=f"client{next(_ring_counter)}")
        else:
            self.transport = DealerConnection(endpoint, context=context, identity=identity)
        self._monitor = None  # a PAIR socket of connection events, once watch_disconnects() asked
        # False from a disconnect until the next handshake: a request sent meanwhile can slip into
        # the dying connection (and is lost) before ZeroMQ has detached it.
        self.link_up = True

    def watch_disconnects(self):
        """Start noticing when the connection drops; returns a socket to poll next to `socket`.

        ZeroMQ reconnects silently, but a request sent into a connection that is going down, or a
        reply that had arrived and was not read yet when it went, is lost for good. A pipelining
        caller checks disconnected() so it can resend those instead of waiting out its timeout,
        and sends nothing new while `link_up` is False."""
        if self._monitor is None:
            self._monitor = self.transport.socket.get_monitor_socket(
                zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        return self._monitor

    def disconnected(self) -> bool:
        """Whether the connection dropped since the last call (needs watch_disconnects()); also
        brings `link_up` up to date."""
        dropped = False
        while self._monitor is not None and self._monitor.poll(0):
            event = parse_monitor_message(self._monitor.recv_multipart())["event"]
            if event == zmq.EVENT_DISCONNECTED:
                dropped, self.link_up = True, False
            else:
                self.link_up = True
        return dropped

    @property
    def socket(self):
        return self.transport.socket

    def request(self, message: Message, timeout_s: float) -> Message:
        try:
            frames = self.transport.request(encode(message), timeout_s)
        except TransportTimeout as error:
            raise RequestTimedOutError(str(error)) from None
        return check_response(decode_response(frames))

    def send(self, message: Message) -> int | None:
        """Queue a request; its cid, or None when the broker is not connected right now."""
        return self.transport.send_request(encode(message))

    def abandon(self, cid: int) -> None:
        """Give up on a request sent with send(): a late reply is ignored and its ring slots are freed."""
        abandon = getattr(self.transport, "abandon", None)
        if abandon is not None:
            abandon(cid)

    @property
    def ring_path(self) -> str | None:
        """The shared-memory ring file of this connection, if it has one."""
        ring = getattr(self.transport, "ring", None)
        return ring.path if ring is not None else None

    def poll_reply(self):
        """(cid, response) for the next reply waiting, or None. ErrorResponses are returned as is."""
        reply = self.transport.recv_reply_nowait()
        if reply is None:
            return None
        return reply[0], decode_response(reply[1])

    def close(self) -> None:
        if self._monitor is not None:
            self.transport.socket.disable_monitor()
            self._monitor.close(linger=0)
        self.transport.close()
