"""Frames <-> messages: a msgpack header frame [api_key, version, body] followed by raw batch frames.

Pure functions, no I/O. Decoding is defensive: anything a hostile or buggy peer can send either
becomes a message whose every field has the declared type, or raises ProtocolError saying what
was wrong. Nothing else escapes (the fuzz tests hold us to that).
"""

from __future__ import annotations

import msgpack

from distlog.protocol.errors import ErrorCode, ProtocolError
from distlog.protocol.messages import REQUEST_TYPES, RESPONSE_TYPES, ApiKey, Message
from distlog.protocol.schema import from_wire, to_wire

# A header frame is small; a larger one is hostile or broken and is refused before unpacking.
MAX_HEADER_BYTES = 16 * 1024 * 1024


def encode(message: Message) -> list:
    """Frames for `message`: the msgpack header first, then every FRAME field in order."""
    frames: list = []
    body = to_wire(message.body(), message.SCHEMA, frames)
    return [msgpack.packb([int(message.API_KEY), message.VERSION, body], use_bin_type=True), *frames]


def decode_request(frames: list) -> Message:
    """Decode a request. ProtocolError carries UNKNOWN_API / UNSUPPORTED_VERSION / INVALID_REQUEST."""
    return _decode(frames, REQUEST_TYPES)


def decode_response(frames: list) -> Message:
    """Decode a response (an ErrorResponse is returned as such; the caller turns it into an error)."""
    return _decode(frames, RESPONSE_TYPES)


def peek_api_key(frames: list) -> int:
    """The API key of a request if its header unpacks far enough to tell, else -1 (for error replies)."""
    try:
        header = _unpack_header(frames)
        return header[0] if type(header[0]) is int else -1
    except ProtocolError:
        return -1


def _unpack_header(frames: list) -> list:
    if not frames:
        raise ProtocolError("empty message: expected a msgpack header frame")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header frame of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises a zoo of types on garbage; all mean the same here
        raise ProtocolError(f"header frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, list) or len(header) != 3:
        raise ProtocolError("header must be a msgpack array [api_key, version, body]")
    return header


def _decode(frames: list, types: dict) -> Message:
    api_key, version, body = _unpack_header(frames)
    if type(api_key) is not int or api_key not in types:
        raise ProtocolError(f"unknown api key {api_key!r}", ErrorCode.UNKNOWN_API)
    cls = types[api_key]
    if type(version) is not int or not cls.MIN_VERSION <= version <= cls.VERSION:
        raise ProtocolError(
            f"{ApiKey(api_key).name} version {version!r} not supported (supported: {cls.MIN_VERSION}..{cls.VERSION})",
            ErrorCode.UNSUPPORTED_VERSION,
        )
    fields = from_wire(body, cls.SCHEMA, list(frames[1:]))
    return cls(**fields)
