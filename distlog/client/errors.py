"""Errors the client library raises, on top of the broker's DistlogError codes."""

from __future__ import annotations

from distlog.protocol.errors import DistlogError, ErrorCode


class RequestTimedOutError(DistlogError):
    """No answer in time: the broker is down, unreachable, or overloaded."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.REQUEST_TIMED_OUT, message)


class BufferFullError(DistlogError):
    """Producer.send waited max_block_ms for buffer space that never freed up."""

    def __init__(self, message: str):
        super().__init__(ErrorCode.REQUEST_TIMED_OUT, message)


class ProducerClosedError(DistlogError):
    """send() after close(): the caller's mistake, not a malformed request (no client-bug hint)."""

    def __init__(self, message: str = "the producer is closed (create a new Producer to send more)"):
        super().__init__(ErrorCode.INVALID_REQUEST, message)


__all__ = ["BufferFullError", "DistlogError", "ErrorCode", "ProducerClosedError", "RequestTimedOutError"]
