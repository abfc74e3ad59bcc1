"""The codec round-trips every message and turns any garbage into ProtocolError, never a crash."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distlog.protocol.codec import decode_request, decode_response, encode, peek_api_key
from distlog.protocol.errors import DistlogError, ErrorCode, ProtocolError, is_retriable
from distlog.protocol.messages import (
    REQUEST_TYPES,
    RESPONSE_TYPES,
    ApiKey,
    CreateTopicsRequest,
    ErrorResponse,
    FetchRequest,
    FetchResponse,
    MetadataRequest,
    MetadataSyncResponse,
    ProduceRequest,
)


def test_produce_request_round_trips_with_batches_as_separate_frames():
    request = ProduceRequest(
        acks=-1,
        timeout_ms=5000,
        partitions=[
            {"topic": "orders", "partition": 0, "records": b"batch-zero"},
            {"topic": "orders", "partition": 1, "records": memoryview(b"batch-one")},
        ],
    )
    frames = encode(request)
    assert frames[1:] == [b"batch-zero", memoryview(b"batch-one")]
    decoded = decode_request(frames)
    assert decoded.acks == -1
    assert [bytes(p["records"]) for p in decoded.partitions] == [b"batch-zero", b"batch-one"]


def test_fetch_response_round_trips():
    response = FetchResponse(
        partitions=[
            {
                "topic": "t",
                "partition": 2,
                "error_code": 0,
                "error_message": "",
                "high_watermark": 10,
                "log_start_offset": 0,
                "records": b"\x01\x02",
            }
        ]
    )
    assert decode_response(encode(response)) == response


def test_optional_nested_record_round_trips():
    metadata = {"version": 3, "brokers": [{"broker_id": 1, "address": "tcp://127.0.0.1:1"}], "topics": [],
                "controllers": [1], "controller_target": [], "decommissioned": []}
    response = MetadataSyncResponse(error_code=0, error_message="", metadata=metadata)
    assert decode_response(encode(response)) == response
    empty = MetadataSyncResponse(error_code=0, error_message="", metadata=None)
    assert decode_response(encode(empty)).metadata is None


def test_every_schema_matches_its_dataclass_fields():
    for cls in [*REQUEST_TYPES.values(), *RESPONSE_TYPES.values()]:
        assert list(cls.SCHEMA) == list(cls.__dataclass_fields__), cls.__name__


def test_unknown_api_key_is_named():
    frames = [msgpack.packb([77, 0, {}])]
    with pytest.raises(ProtocolError) as info:
        decode_request(frames)
    assert info.value.code == ErrorCode.UNKNOWN_API
    assert "77" in str(info.value)


def test_future_version_is_unsupported():
    frames = [msgpack.packb([int(ApiKey.METADATA), 9, {"topics": None}])]
    with pytest.raises(ProtocolError) as info:
        decode_request(frames)
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION


def test_wrong_field_type_names_the_path():
    body = {"acks": 1, "timeout_ms": 10, "partitions": [{"topic": "t", "partition": "zero", "records": 0}]}
    with pytest.raises(ProtocolError, match=r"partitions\[0\]\.partition"):
        decode_request([msgpack.packb([int(ApiKey.PRODUCE), 0, body]), b"x"])


def test_frame_index_out_of_range_is_rejected():
    body = {"acks": 1, "timeout_ms": 10, "partitions": [{"topic": "t", "partition": 0, "records": 3}]}
    with pytest.raises(ProtocolError, match="frame index"):
        decode_request([msgpack.packb([int(ApiKey.PRODUCE), 0, body]), b"x"])


def test_bool_is_not_an_int():
    frames = [msgpack.packb([int(ApiKey.FETCH), 0, {"max_wait_ms": True, "min_bytes": 1, "max_bytes": 1, "partitions": []}])]
    with pytest.raises(ProtocolError):
        decode_request(frames)


def test_error_response_decodes_and_errors_carry_hints():
    frames = encode(ErrorResponse(error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), error_message="no topic 'x'"))
    decoded = decode_response(frames)
    error = DistlogError(decoded.error_code, decoded.error_message)
    assert "UNKNOWN_TOPIC_OR_PARTITION" in str(error) and "distlog topic create" in str(error)
    assert is_retriable(ErrorCode.NOT_LEADER) and not is_retriable(ErrorCode.MESSAGE_TOO_LARGE)


def test_peek_api_key_survives_garbage():
    assert peek_api_key([b"\xc1garbage"]) == -1
    assert peek_api_key(encode(MetadataRequest())) == ApiKey.METADATA
    assert peek_api_key([]) == -1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=4))
def test_random_frames_never_raise_anything_but_protocol_error(frames):
    for decode in (decode_request, decode_response):
        try:
            decode(frames)
        except ProtocolError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(REQUEST_TYPES)), st.integers(-1, 2), msgpack_values, st.lists(st.binary(max_size=8), max_size=3))
def test_well_formed_headers_with_hostile_bodies_never_crash(api_key, version, body, extra_frames):
    frames = [msgpack.packb([api_key, version, body], use_bin_type=True), *extra_frames]
    try:
        decode_request(frames)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {"topic": st.text(min_size=1, max_size=10), "partition": st.integers(0, 1000), "fetch_offset": st.integers(0, 2**62), "max_bytes": st.integers(0, 2**31)}
        ),
        max_size=5,
    )
)
def test_fetch_request_round_trips(partitions):
    request = FetchRequest(max_wait_ms=500, min_bytes=1, max_bytes=1 << 20, partitions=partitions)
    assert decode_request(encode(request)) == request


def test_create_topics_defaults():
    request = CreateTopicsRequest(topics=[{"name": "t", "partitions": 3, "replication_factor": 1, "configs": {"retention.ms": "1000"}}])
    assert decode_request(encode(request)) == request
