"""Raft traffic between two brokers: everything one broker has for another in a loop turn, as one frame set.

A broker's ReplicaManager collects, per peer, the messages of every Raft group it hosts and
sends them as one RaftRequest (distlog.protocol.messages): a msgpack body frame plus one raw
frame per entry. Entry data (record batches) is never decoded or re-encoded here: the leader's
stamped batch bytes become a frame, and the follower appends the received frame as it is.

Body (msgpack map):
    "topics":  [name, ...]                 the topic table; groups are (topic index, partition)
    "msgs":    [[kind, t, p, *fields], ...] every message but heartbeats, fields in dataclass order
                                           (frm and to are the frame's sender and receiver; an
                                           entry list is [[term, base, last, frame index], ...])
    "hb":      [[t, p, term, commit], ...] heartbeats whose (term, commit) changed for this peer
    "hb_same": [[t, p], ...]               heartbeats repeating the last (term, commit) sent
    "hbr":     [[t, p, term], ...]         heartbeat responses, likewise
    "hbr_same":[[t, p], ...]
    "leaders": [[t, p, epoch, [isr...], hw, leo], ...]  groups the sender leads (see leadership.py)
    "leaders_full": bool                   the list is complete: the sender leads nothing else
    "incarnation": int                     random per broker process start (see below)

The *_same lists are Redpanda's heartbeat-manager idea: an idle group costs its two ids per
heartbeat round instead of a full message. Both ends forget those values when the other end's
incarnation changes (it restarted), and the sender sends full state again every
HEARTBEAT_FULL_EVERY_S, so a receiver that missed a frame (fault rules drop whole frames) is
never stuck with stale values for long; a "same" for a group the receiver has no value for is
ignored.

Decoding is defensive: a malformed body raises RaftWireError, which the broker counts and drops.
"""

from __future__ import annotations

import dataclasses

import msgpack

from distlog.consensus.membership import Membership
from distlog.consensus.messages import (
    Entry,
    MsgApp,
    MsgAppResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgStartOver,
    MsgTimeoutNow,
    MsgVote,
    MsgVoteResp,
)

# Wire numbers of the message kinds (never reuse one). Heartbeats travel in their own lists.
KINDS = {
    MsgVote: 1,
    MsgVoteResp: 2,
    MsgPreVote: 3,
    MsgPreVoteResp: 4,
    MsgApp: 5,
    MsgAppResp: 6,
    MsgTimeoutNow: 7,
    MsgStartOver: 8,
}
_BY_KIND = {kind: cls for cls, kind in KINDS.items()}
# The fields each kind carries after (frm, to), in dataclass order.
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("frm", "to")) for cls in KINDS}


class RaftWireError(ValueError):
    """A Raft frame from a peer did not decode; it is dropped (Raft treats it as lost)."""


@dataclasses.dataclass
class PeerFrame:
    """What one broker sends another in one loop turn (see the module docstring)."""

    sender: int
    incarnation: int = 0
    messages: list = dataclasses.field(default_factory=list)  # ((topic, partition), Message)
    heartbeats: list = dataclasses.field(default_factory=list)  # ((topic, partition), term, commit)
    heartbeats_same: list = dataclasses.field(default_factory=list)  # (topic, partition)
    heartbeat_resps: list = dataclasses.field(default_factory=list)  # ((topic, partition), term)
    heartbeat_resps_same: list = dataclasses.field(default_factory=list)  # (topic, partition)
    leaders: list = dataclasses.field(default_factory=list)  # ((topic, partition), epoch, isr, hw, leo)
    leaders_full: bool = False
    # Heartbeat values this frame tells the peer in full, remembered as "sent" only once the
    # frame really left (manager.flush_outgoing): a frame dropped for want of a connection
    # must not leave the peer answering "same" with nothing to compare to.
    sent_heartbeats: dict = dataclasses.field(default_factory=dict)
    sent_heartbeat_resps: dict = dataclasses.field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.messages or self.heartbeats or self.heartbeats_same or self.heartbeat_resps
                    or self.heartbeat_resps_same or self.leaders or self.leaders_full)


class _Topics:
    """Topic name <-> index in one frame's topic table."""

    def __init__(self):
        self.names: list = []
        self._index: dict = {}

    def ref(self, group) -> tuple:
        topic, partition = group
        index = self._index.get(topic)
        if index is None:
            index = self._index[topic] = len(self.names)
            self.names.append(topic)
        return index, partition


def encode_frame(frame: PeerFrame) -> tuple:
    """(body bytes, [entry data frames]) for a RaftRequest."""
    topics, data = _Topics(), []
    msgs = []
    for group, m in frame.messages:
        t, p = topics.ref(group)
        row = [KINDS[type(m)], t, p]
        for name in _FIELDS[type(m)]:
            value = getattr(m, name)
            if name == "entries":
                entries = []
                for e in value:
                    entries.append([e.term, e.base_offset, e.last_offset, len(data)])
                    data.append(e.data)
                value = entries
            elif name == "membership" and value is not None:
                value = [list(value.voters), list(value.learners)]
            row.append(value)
        msgs.append(row)
    body = {
        "msgs": msgs,
        "hb": [[*topics.ref(g), term, commit] for g, term, commit in frame.heartbeats],
        "hb_same": [list(topics.ref(g)) for g in frame.heartbeats_same],
        "hbr": [[*topics.ref(g), term] for g, term in frame.heartbeat_resps],
        "hbr_same": [list(topics.ref(g)) for g in frame.heartbeat_resps_same],
        "leaders": [[*topics.ref(g), epoch, list(isr), hw, leo] for g, epoch, isr, hw, leo in frame.leaders],
        "leaders_full": frame.leaders_full,
        "incarnation": frame.incarnation,
    }
    body["topics"] = topics.names
    return msgpack.packb(body, use_bin_type=True), data


def decode_frame(sender: int, receiver: int, body: bytes, data: list) -> PeerFrame:
    """The PeerFrame in a RaftRequest from `sender` to `receiver`; RaftWireError if malformed."""
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=True)
        names = raw["topics"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RaftWireError("topics must be a list of names")

        def group(t, p):
            if type(t) is not int or type(p) is not int or not 0 <= t < len(names) or p < 0:
                raise RaftWireError(f"bad group reference ({t!r}, {p!r})")
            return names[t], p

        frame = PeerFrame(sender, _int(raw["incarnation"]))
        for row in raw["msgs"]:
            cls = _BY_KIND.get(row[0])
            if cls is None:
                raise RaftWireError(f"unknown message kind {row[0]!r}")
            fields = _FIELDS[cls]
            if len(row) != 3 + len(fields):
                raise RaftWireError(f"{cls.__name__} with {len(row) - 3} fields, expected {len(fields)}")
            values = dict(zip(fields, row[3:]))
            if "entries" in values:
                values["entries"] = tuple(_entry(e, data) for e in values["entries"])
            if values.get("membership") is not None:
                values["membership"] = _membership(values["membership"])
            for name, value in values.items():
                if name not in ("entries", "membership") and value is not None and type(value) not in (int, bool):
                    raise RaftWireError(f"{cls.__name__}.{name} must be an integer, got {type(value).__name__}")
            frame.messages.append((group(row[1], row[2]), cls(frm=sender, to=receiver, **values)))
        frame.heartbeats = [(group(t, p), _int(term), _int(commit)) for t, p, term, commit in raw["hb"]]
        frame.heartbeats_same = [group(t, p) for t, p in raw["hb_same"]]
        frame.heartbeat_resps = [(group(t, p), _int(term)) for t, p, term in raw["hbr"]]
        frame.heartbeat_resps_same = [group(t, p) for t, p in raw["hbr_same"]]
        frame.leaders = [(group(t, p), _int(epoch), [_int(b) for b in isr], _int(hw), _int(leo))
                         for t, p, epoch, isr, hw, leo in raw["leaders"]]
        frame.leaders_full = bool(raw["leaders_full"])
        return frame
    except RaftWireError:
        raise
    except Exception as error:  # msgpack and unpacking raise a zoo of types on garbage
        raise RaftWireError(f"malformed raft frame ({type(error).__name__}: {error})") from None


def _int(value) -> int:
    if type(value) is not int:
        raise RaftWireError(f"expected an integer, got {type(value).__name__}")
    return value


def _membership(row) -> Membership:
    try:
        voters, learners = row
        if not all(type(b) is int for b in [*voters, *learners]):
            raise TypeError("broker ids must be integers")
        return Membership(voters, learners)
    except (TypeError, ValueError) as error:
        raise RaftWireError(f"bad membership {row!r} ({error})") from None


def _entry(row, data: list) -> Entry:
    term, base_offset, last_offset, index = row
    if not all(type(v) is int for v in row) or not 0 <= index < len(data) or last_offset < base_offset:
        raise RaftWireError(f"bad entry {row!r}")
    return Entry(term, base_offset, last_offset, data[index])
