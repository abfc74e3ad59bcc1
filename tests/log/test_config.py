"""LogConfig: defaults, Kafka-style dotted keys both ways, and errors that name the key."""

import pytest

from distlog.log.config import LogConfig


def test_defaults_are_the_safe_ones():
    config = LogConfig()
    assert config.flush_policy == "always"
    assert config.flush_interval_ms == 0
    assert config.cleanup_policy == "delete"
    assert config.retention_bytes == -1
    assert config.index_interval_bytes == 4096
    assert config.unsafe_skip_raft_fsync is False


def test_dotted_keys_round_trip_and_accept_strings():
    config = LogConfig.from_dict(
        {"segment.bytes": "1048576", "retention.ms": -1, "cleanup.policy": "compact", "flush.policy": "interval:250"}
    )
    assert (config.segment_bytes, config.retention_ms, config.cleanup_policy) == (1048576, -1, "compact")
    assert config.flush_interval_ms == 250
    assert LogConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) >= {"segment.bytes", "retention.ms", "cleanup.policy", "max.message.bytes", "flush.policy"}


def test_from_dict_overrides_a_base():
    base = LogConfig(segment_bytes=1000)
    assert LogConfig.from_dict({"retention.bytes": 5}, base=base) == LogConfig(segment_bytes=1000, retention_bytes=5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"cleanup.policy": "shred"}, "cleanup.policy must be one of 'delete', 'compact'"),
        ({"flush.policy": "sometimes"}, "flush.policy must be 'always', 'interval:<ms>'"),
        ({"flush.policy": "interval:0"}, "flush.policy must be"),
        ({"segment.bytes": 0}, "segment.bytes must be at least 1"),
        ({"segment.bytes": "big"}, "segment.bytes must be an integer"),
        ({"retention.ms": -2}, r"retention.ms must be at least -1 .*-1 means unlimited"),
        ({"max.message.bytes": 2**33}, "max.message.bytes must be at least 1 and at most"),
        ({"unsafe.skip.raft.fsync": "yes"}, "unsafe.skip.raft.fsync must be true or false, got 'yes'"),
        ({"segment.megabytes": 1}, "unknown log setting 'segment.megabytes'; known settings: cleanup.policy"),
    ],
)
def test_bad_settings_name_the_key_and_what_is_allowed(settings, message):
    with pytest.raises(ValueError, match=message):
        LogConfig.from_dict(settings)


def test_field_types_are_checked():
    with pytest.raises(ValueError, match="segment.ms must be an integer"):
        LogConfig(segment_ms=1.5)


@pytest.mark.parametrize("raw, expected", [("true", True), ("True", True), ("false", False), (True, True)])
def test_the_unsafe_raft_fsync_switch_takes_what_a_command_line_or_admin_client_sends(raw, expected):
    config = LogConfig.from_dict({"unsafe.skip.raft.fsync": raw})
    assert config.unsafe_skip_raft_fsync is expected
    assert LogConfig.from_dict(config.to_dict()) == config
