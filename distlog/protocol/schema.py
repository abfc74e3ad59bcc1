"""A tiny schema language for message bodies: declare fields once, get validation both ways.

A spec is one of:
  int, str, bool, float        a scalar of that type (bool is not accepted as int)
  FRAME                        raw bytes that travel as a separate ZeroMQ frame (record batches);
                               the msgpack body holds the frame's index instead
  Optional(spec)               spec or None
  [spec]                       a list of spec
  {"name": spec, ...}          a record (a msgpack map with exactly these keys; extra keys are ignored
                               so that a newer peer can add fields)
  StrMap                       a map of str to str (topic configs)

`to_wire` turns Python values into msgpack-ready values plus a list of frames; `from_wire` checks a
decoded body against the spec and swaps frame indexes back for the frames. Every failure raises
ProtocolError naming the path of the bad field, so a malformed or hostile request gets a precise
INVALID_REQUEST instead of crashing the broker.
"""

from __future__ import annotations

from distlog.protocol.errors import ProtocolError


class _Frame:
    def __repr__(self):
        return "FRAME"


FRAME = _Frame()


class _StrMap:
    def __repr__(self):
        return "StrMap"


StrMap = _StrMap()


class Optional:
    """A spec that also accepts None."""

    __slots__ = ("spec",)

    def __init__(self, spec):
        self.spec = spec


def to_wire(value, spec, frames: list):
    """Validate `value` against `spec` and return its msgpack-ready form; FRAMEs go to `frames`."""
    return _convert(value, spec, frames, "body", outbound=True)


def from_wire(value, spec, frames: list):
    """Validate a decoded msgpack value against `spec`; FRAME indexes become the frames themselves."""
    return _convert(value, spec, frames, "body", outbound=False)


def _convert(value, spec, frames, path, outbound):
    if isinstance(spec, Optional):
        return None if value is None else _convert(value, spec.spec, frames, path, outbound)
    if spec is FRAME:
        return _convert_frame(value, frames, path, outbound)
    if spec is StrMap:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ProtocolError(f"{path}: expected a map of strings to strings")
        return value
    if isinstance(spec, list):
        if not isinstance(value, (list, tuple)):
            raise ProtocolError(f"{path}: expected a list, got {type(value).__name__}")
        return [_convert(item, spec[0], frames, f"{path}[{i}]", outbound) for i, item in enumerate(value)]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ProtocolError(f"{path}: expected a map, got {type(value).__name__}")
        out = {}
        for name, field_spec in spec.items():
            if name not in value:
                raise ProtocolError(f"{path}.{name}: missing")
            out[name] = _convert(value[name], field_spec, frames, f"{path}.{name}", outbound)
        return out
    if spec is int:
        if type(value) is not int:
            raise ProtocolError(f"{path}: expected an integer, got {type(value).__name__}")
        return value
    if spec is float:
        if type(value) not in (int, float):
            raise ProtocolError(f"{path}: expected a number, got {type(value).__name__}")
        return float(value)
    if not isinstance(value, spec) or (spec is not bool and isinstance(value, bool)):
        raise ProtocolError(f"{path}: expected {spec.__name__}, got {type(value).__name__}")
    return value


def _convert_frame(value, frames, path, outbound):
    if outbound:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"{path}: expected bytes for a frame, got {type(value).__name__}")
        frames.append(value)
        return len(frames) - 1
    if type(value) is not int or not 0 <= value < len(frames):
        raise ProtocolError(f"{path}: frame index {value!r} out of range (the request carried {len(frames)} frames)")
    return frames[value]
