"""Fault rules: which peers a transport refuses to send to or receive from (partitions without root).

A broker shares one FaultRules object between its ROUTER and its DEALERs to peers, so a single
`drop_to("broker-2")` cuts everything this broker sends to broker 2 (requests and replies), and
`drop_from("broker-2")` everything it receives from broker 2. Cutting both ways on both sides is a
full partition; one side one way is an asymmetric partition. The rules mutate in place, so a
control request can change them while the transports are running.
"""


# A peer name in the rules that stands for every client: any peer not named "broker-N" (a peer
# broker) or "probe-..." (the supervisor's health checks and control calls, which must get
# through so that a cut can be healed and a cut-off broker is not taken for dead and restarted).
# Clients connect with identities ZeroMQ makes up, so they cannot be named one by one.
CLIENTS = "clients"


def is_client(peer: str) -> bool:
    return not peer.startswith(("broker-", "probe-"))


class FaultRules:
    """Per-peer drop rules, keyed by peer name ("broker-3"), with counters of what they dropped."""

    def __init__(self, drop_to=(), drop_from=()):
        self._drop_to: set[str] = set(drop_to)
        self._drop_from: set[str] = set(drop_from)
        self.dropped_to = 0
        self.dropped_from = 0

    def drop_to(self, peer: str) -> None:
        """Drop every frame this process sends to `peer` from now on."""
        self._drop_to.add(peer)

    def drop_from(self, peer: str) -> None:
        """Drop every frame this process receives from `peer` from now on."""
        self._drop_from.add(peer)

    def heal(self, peer: str | None = None) -> None:
        """Lift the rules for `peer` in both directions, or every rule when `peer` is None."""
        if peer is None:
            self._drop_to.clear()
            self._drop_from.clear()
        else:
            self._drop_to.discard(peer)
            self._drop_from.discard(peer)

    def allows_send(self, peer: str) -> bool:
        """True if a frame to `peer` may go; a refusal counts as one frame dropped (dropped_to)."""
        if _named(self._drop_to, peer):
            self.dropped_to += 1
            return False
        return True

    def allows_recv(self, peer: str) -> bool:
        """True if a frame from `peer` may be delivered; a refusal counts in dropped_from."""
        if _named(self._drop_from, peer):
            self.dropped_from += 1
            return False
        return True

    @property
    def active(self) -> bool:
        """True while at least one rule is in force."""
        return bool(self._drop_to or self._drop_from)

    def replace(self, other: "FaultRules") -> None:
        """Take `other`'s rules in place (counters kept), so transports sharing self see them."""
        self._drop_to = set(other._drop_to)
        self._drop_from = set(other._drop_from)

    def to_dict(self) -> dict:
        """JSON/msgpack-able form: the rules plus the counters (from_dict reads only the rules)."""
        return {
            "drop_to": sorted(self._drop_to),
            "drop_from": sorted(self._drop_from),
            "dropped_to": self.dropped_to,
            "dropped_from": self.dropped_from,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "FaultRules":
        """Rules from to_dict()'s form; missing keys mean no rule. Raises ValueError on bad input."""
        if not isinstance(data, dict):
            raise ValueError(f"fault rules must be a mapping, got {type(data).__name__}")
        peers = {}
        for key in ("drop_to", "drop_from"):
            value = data.get(key, [])
            if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
                raise ValueError(f"fault rules {key!r} must be a list of peer names, got {value!r}")
            peers[key] = value
        return cls(drop_to=peers["drop_to"], drop_from=peers["drop_from"])

    def __repr__(self) -> str:
        return f"FaultRules(drop_to={sorted(self._drop_to)}, drop_from={sorted(self._drop_from)})"


def _named(peers: set, peer: str) -> bool:
    return peer in peers or (CLIENTS in peers and is_client(peer))
