"""LogConfig: a partition log's settings, validated, with Kafka-style dotted names.

Flush policy trade-off: 'always' fsyncs once per broker loop iteration before acks go out
(group commit), so an acknowledged write survives power loss; 'interval:<ms>' bounds the loss
window to that many milliseconds; 'never' leaves it to the OS page cache (fastest, and with
replication a majority of crashed-at-once brokers can lose acknowledged writes).

With replication (a Raft group of more than one voter) flush.policy does not apply: Raft
entries are fsynced before every acknowledgement and vote (replication/manager.py). The one
exception is `unsafe.skip.raft.fsync=true`, which lets flush.policy govern a replicated
partition's entries too. UNSAFE: under flush.policy=never a replica then acknowledges entries
that are only in its page cache, so a leader may call an entry committed (and the producer get
acks=all) that a power loss on a majority of the replicas takes back. Kafka's default
(log.flush.interval.messages unset) relies on replication the same way. It exists for chaos
control runs that must show the checker catching lost writes after a whole-cluster power cut;
the term and vote are still fsynced before anything depends on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

_DAY_MS = 24 * 60 * 60 * 1000
_CLEANUP_POLICIES = ("delete", "compact")
_FLUSH_POLICIES_TEXT = "'always', 'interval:<ms>' (e.g. 'interval:100') or 'never'"
_MAX_SEGMENT_BYTES = 2**31 - 1  # the .index stores positions as u32; keep well inside

# dotted Kafka-style key -> dataclass field
_KEYS = {
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
    "index.interval.bytes": "index_interval_bytes",
    "flush.policy": "flush_policy",
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "cleanup.policy": "cleanup_policy",
    "delete.retention.ms": "delete_retention_ms",
    "max.message.bytes": "max_message_bytes",
    "unsafe.skip.raft.fsync": "unsafe_skip_raft_fsync",
}
_BOOLEANS = {"true": True, "false": False, True: True, False: False}
_FIELD_TO_KEY = {field: key for key, field in _KEYS.items()}


@dataclass(frozen=True)
class LogConfig:
    """Settings of one partition log. Invalid values raise ValueError naming the dotted key."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * _DAY_MS
    index_interval_bytes: int = 4096
    flush_policy: str = "always"
    retention_ms: int = 7 * _DAY_MS
    retention_bytes: int = -1
    cleanup_policy: str = "delete"
    delete_retention_ms: int = _DAY_MS
    max_message_bytes: int = 1024 * 1024 + 12
    unsafe_skip_raft_fsync: bool = False  # see the module docstring: never for data you keep

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"{_FIELD_TO_KEY[field.name]} must be an integer, got {value!r}")
        _check_range("segment.bytes", self.segment_bytes, 1, _MAX_SEGMENT_BYTES)
        _check_range("segment.ms", self.segment_ms, 1)
        _check_range("index.interval.bytes", self.index_interval_bytes, 0)
        _check_range("retention.ms", self.retention_ms, -1)
        _check_range("retention.bytes", self.retention_bytes, -1)
        _check_range("delete.retention.ms", self.delete_retention_ms, 0)
        _check_range("max.message.bytes", self.max_message_bytes, 1, 2**32 - 1)
        if self.cleanup_policy not in _CLEANUP_POLICIES:
            raise ValueError(
                f"cleanup.policy must be one of {', '.join(map(repr, _CLEANUP_POLICIES))}, got {self.cleanup_policy!r}"
            )
        self.flush_interval_ms  # validates flush.policy
        if not isinstance(self.unsafe_skip_raft_fsync, bool):
            raise ValueError(f"unsafe.skip.raft.fsync must be true or false, got {self.unsafe_skip_raft_fsync!r}")

    @property
    def flush_interval_ms(self) -> int | None:
        """0 for 'always', the interval for 'interval:<ms>', None for 'never'."""
        policy = self.flush_policy
        if policy == "always":
            return 0
        if policy == "never":
            return None
        if isinstance(policy, str) and policy.startswith("interval:"):
            interval_text = policy[len("interval:"):]
            if interval_text.isdigit() and int(interval_text) > 0:
                return int(interval_text)
        raise ValueError(f"flush.policy must be {_FLUSH_POLICIES_TEXT}, got {policy!r}")

    @classmethod
    def from_dict(cls, settings: dict, base: LogConfig | None = None) -> LogConfig:
        """Build from dotted keys ('segment.bytes': '1048576', ...) over base (default: defaults).

        Integer settings may be given as strings, as they arrive from a command line."""
        values = dataclasses.asdict(base) if base is not None else {}
        for key, raw in settings.items():
            if key not in _KEYS:
                raise ValueError(f"unknown log setting {key!r}; known settings: {', '.join(sorted(_KEYS))}")
            field = _KEYS[key]
            if field in ("flush_policy", "cleanup_policy"):
                values[field] = raw
            elif field == "unsafe_skip_raft_fsync":
                value = _BOOLEANS.get(raw.lower() if isinstance(raw, str) else raw)
                if value is None:
                    raise ValueError(f"{key} must be true or false, got {raw!r}")
                values[field] = value
            else:
                try:
                    values[field] = int(raw)
                except (TypeError, ValueError):
                    raise ValueError(f"{key} must be an integer, got {raw!r}") from None
        return cls(**values)

    def to_dict(self) -> dict:
        """Every setting under its dotted key."""
        return {key: getattr(self, field) for key, field in _KEYS.items()}


def _check_range(key: str, value: int, minimum: int, maximum: int | None = None) -> None:
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        special = " (-1 means unlimited)" if minimum == -1 else ""
        raise ValueError(f"{key} must be at least {minimum}{upper}{special}, got {value}")
