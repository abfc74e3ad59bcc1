"""One broker connection for the client library: typed requests in, typed responses out."""

from __future__ import annotations

from distlog.client.errors import RequestTimedOutError
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.errors import DistlogError
from distlog.protocol.messages import ErrorResponse, Message
from distlog.transports.zmq_transport import DealerConnection, TransportTimeout


def check_response(response: Message) -> Message:
    """Turn an ErrorResponse into the DistlogError it stands for; pass anything else through."""
    if isinstance(response, ErrorResponse):
        raise DistlogError(response.error_code, response.error_message)
    return response


class BrokerConnection:
    """A DEALER to one broker. `request` is blocking; `send`/`poll_reply` let a caller pipeline."""

    def __init__(self, endpoint: str, context=None):
        self.endpoint = endpoint
        self.transport = DealerConnection(endpoint, context=context)

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

    def poll_reply(self):
        """(cid, response) for the next reply waiting, or None. ErrorResponses are returned as is."""
        reply = self.transport.recv_reply_nowait()
        if reply is None:
            return None
        return reply[0], decode_response(reply[1])

    def close(self) -> None:
        self.transport.close()
