"""A broker fed random and mutated frames answers with errors or drops them; it never crashes and
never stores a corrupt batch."""

import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distlog.client import Admin, Consumer
from distlog.client.probe import ping
from distlog.log.batch import build_batch
from distlog.protocol.codec import decode_response, encode
from distlog.protocol.messages import ApiKey, ErrorResponse, ProduceRequest, ProduceResponse
from distlog.transports.zmq_transport import DealerConnection

pytestmark = pytest.mark.integration

TOPIC = "fuzz"


@pytest.fixture(scope="module")
def fuzz_target(one_broker):
    with Admin(one_broker.address) as admin:
        admin.create_topic(TOPIC, partitions=1)
    connection = DealerConnection(one_broker.address)
    assert connection.wait_connected(5)
    yield one_broker, connection
    connection.close()


def ask(connection, frames, timeout_s=10.0):
    """Send raw frames; the reply's frames, or None if the broker dropped the request.

    The timeout is generous because a loaded CI machine can stall the broker for seconds; a
    healthy reply comes back in about a millisecond, so passing tests do not wait for it."""
    try:
        return connection.request(frames, timeout_s)
    except Exception:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_random_frames_get_an_error_reply(fuzz_target, frames):
    broker, connection = fuzz_target
    reply = ask(connection, frames)
    assert reply is not None, "a malformed request should get an error reply, not silence"
    assert isinstance(decode_response(reply), ErrorResponse)


def valid_produce_frames():
    batch = build_batch([b"value-%d" % i for i in range(5)], [b"k"] * 5)
    return encode(ProduceRequest(acks=1, timeout_ms=1000, partitions=[{"topic": TOPIC, "partition": 0, "records": batch}]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_produce_requests_never_store_corrupt_batches(fuzz_target, data):
    broker, connection = fuzz_target
    frames = [bytearray(f) for f in valid_produce_frames()]
    which = data.draw(st.integers(0, len(frames) - 1))
    frame = frames[which]
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
    if mutation == "flip" and frame:
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] ^= data.draw(st.integers(1, 255))
    elif mutation == "truncate":
        del frame[data.draw(st.integers(0, len(frame))):]
    else:
        frame.extend(data.draw(st.binary(min_size=1, max_size=64)))
    reply = ask(connection, [bytes(f) for f in frames])
    if reply is not None:
        response = decode_response(reply)
        assert isinstance(response, (ErrorResponse, ProduceResponse))


def test_broker_survives_the_fuzzing_and_its_log_is_clean(fuzz_target):
    broker, connection = fuzz_target
    assert ping(broker.address, 5) is not None
    assert broker.process.poll() is None
    # every stored batch verifies: read the whole partition back, CRCs checked by iter_batches
    consumer = Consumer(broker.address, fetch_max_wait_ms=50)
    try:
        consumer.assign([(TOPIC, 0)])
        consumer.seek_to_beginning()
        with Admin(broker.address) as admin:
            end = admin.list_offsets({(TOPIC, 0): -1})[(TOPIC, 0)]
        batches = []
        deadline = time.monotonic() + 20
        while consumer.position((TOPIC, 0)) < end and time.monotonic() < deadline:
            batches.extend(consumer.poll_batches(timeout=0.5))
        assert consumer.position((TOPIC, 0)) == end
        for _tp, batch, _first in batches:
            batch.verify()
            assert all(r.value.startswith(b"value-") for r in batch.records())
    finally:
        consumer.close()


def test_unknown_api_and_future_version_get_named_errors(fuzz_target):
    broker, connection = fuzz_target
    reply = decode_response(ask(connection, [msgpack.packb([99, 0, {}])]))
    assert isinstance(reply, ErrorResponse) and "unknown api key" in reply.error_message
    reply = decode_response(ask(connection, [msgpack.packb([int(ApiKey.METADATA), 7, {"topics": None}])]))
    assert isinstance(reply, ErrorResponse) and "not supported" in reply.error_message
