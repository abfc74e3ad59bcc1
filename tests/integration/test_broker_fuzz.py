"""A broker fed random and mutated frames answers each with an error (or, for acks=0, with
nothing, as documented); it never crashes and never stores a corrupt batch.

Every test here checks its own claim end to end on its own topic: the replies, that the broker
still answers afterwards, and what its log holds."""

import json
import time
import uuid

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from distlog.client import Admin, Consumer
from distlog.client.probe import ping
from distlog.log.batch import HEADER_SIZE, CorruptBatchError, RecordBatch, peek_header
from distlog.log.batch_builder import build_batch
from distlog.log.records import batch_records
from distlog.protocol.codec import decode_request, decode_response, encode
from distlog.protocol.errors import ProtocolError
from distlog.protocol.messages import ApiKey, ErrorResponse, ProduceRequest, ProduceResponse
from distlog.transports.zmq_transport import DealerConnection

pytestmark = pytest.mark.integration

REPLY_TIMEOUT_S = 10.0  # a hang guard: a healthy reply takes about a millisecond
VALUES = [b"value-%d" % i for i in range(5)]


@pytest.fixture
def fuzz_target(one_broker):
    """(broker, a connection to it, a topic of this test's own)."""
    topic = f"fuzz-{uuid.uuid4().hex[:8]}"
    with Admin(one_broker.address) as admin:
        admin.create_topic(topic, partitions=1)
    connection = DealerConnection(one_broker.address)
    assert connection.wait_connected(REPLY_TIMEOUT_S)
    try:
        yield one_broker, connection, topic
    finally:
        connection.close()


def ask(connection, frames):
    """Send raw frames and return the reply's frames (TransportTimeout if none comes)."""
    return connection.request(frames, REPLY_TIMEOUT_S)


def malformed_count(broker) -> int:
    """The broker's own count of requests that did not decode, from its last malformed_request log line."""
    count = 0
    with open(broker.log_path) as log:
        for line in log:
            if '"malformed_request"' in line:
                count = json.loads(line)["count"]
    return count


def assert_still_serving(broker):
    assert broker.process.poll() is None, f"the broker died:\n{broker.log_tail()}"
    assert ping(broker.address, REPLY_TIMEOUT_S) is not None, "the broker stopped answering"


def stored_batches(address, topic):
    """Every batch of the partition, read from the start; CorruptBatchError if one does not verify."""
    with Admin(address) as admin:
        end = admin.list_offsets({(topic, 0): -1})[(topic, 0)]
    consumer = Consumer(address, fetch_max_wait_ms=50)
    try:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        batches, deadline = [], time.monotonic() + 60
        while consumer.position((topic, 0)) < end:
            assert time.monotonic() < deadline, "hung reading the partition back"
            batches.extend(batch for _tp, batch, _first in consumer.poll_batches(timeout=0.5))
    finally:
        consumer.close()
    for batch in batches:
        batch.verify()
    return batches


def test_random_frames_get_an_error_reply_and_are_counted(fuzz_target):
    broker, connection, topic = fuzz_target
    malformed_before, sent = malformed_count(broker), []

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
    def random_frames(frames):
        try:
            decode_request(frames)
        except ProtocolError as error:
            expected_code = int(error.code)
        else:
            assume(False)  # random bytes that happen to be a valid request are not malformed
        reply = decode_response(ask(connection, frames))
        assert isinstance(reply, ErrorResponse), reply
        assert reply.error_code == expected_code, (reply, frames)
        sent.append(frames)

    random_frames()
    assert_still_serving(broker)
    assert len(sent) > 100, "hypothesis sent too few malformed requests to mean anything"
    assert malformed_count(broker) - malformed_before == len(sent)
    assert stored_batches(broker.address, topic) == []


def exact_batches(records: bytes):
    """The batches `records` consists of, each verified, or None if it is anything else
    (a corrupt batch, trailing bytes, a cut-off batch)."""
    batches, position = [], 0
    try:
        while position < len(records):
            if len(records) - position < HEADER_SIZE:
                return None
            length = peek_header(records[position:]).batch_length
            if length < HEADER_SIZE:
                return None
            batch = RecordBatch(records[position:position + length])
            batch.verify()
            batches.append(batch)
            position += length
    except (CorruptBatchError, ValueError):
        return None
    return batches


def test_mutated_produce_requests_are_refused_and_never_stored_corrupt(fuzz_target):
    broker, connection, topic = fuzz_target
    accepted_records, unanswered_sends = [], []

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def mutated_produce(data):
        batch = build_batch(VALUES, [b"k"] * len(VALUES))
        request = ProduceRequest(acks=1, timeout_ms=1000, partitions=[{"topic": topic, "partition": 0, "records": batch}])
        frames = [bytearray(f) for f in encode(request)]
        frame = frames[data.draw(st.integers(0, len(frames) - 1))]
        mutation = data.draw(st.sampled_from(["flip", "truncate", "extend"]))
        if mutation == "flip" and frame:
            position = data.draw(st.integers(0, len(frame) - 1))
            frame[position] ^= data.draw(st.integers(1, 255))
        elif mutation == "truncate":
            del frame[data.draw(st.integers(0, len(frame))):]
        else:
            frame.extend(data.draw(st.binary(min_size=1, max_size=64)))
        frames = [bytes(f) for f in frames]
        try:
            decoded = decode_request(frames)
        except ProtocolError:
            decoded = None
        if isinstance(decoded, ProduceRequest) and decoded.acks == 0:
            # acks=0 is answered with nothing (documented); what it stored is checked below
            assert connection.send_request(frames) is not None
            unanswered_sends.append(frames)
            return
        response = decode_response(ask(connection, frames))
        if decoded is None or not isinstance(decoded, ProduceRequest):
            assert isinstance(response, ErrorResponse), (response, frames)
            return
        assert isinstance(response, (ErrorResponse, ProduceResponse)), response
        if isinstance(response, ProduceResponse):
            for result, sent in zip(response.partitions, decoded.partitions):
                if result["error_code"] == 0:
                    written = exact_batches(bytes(sent["records"]))
                    assert written is not None, f"a mutated batch was acknowledged: {result}"
                    if sent["topic"] == topic and sent["partition"] == 0:
                        accepted_records.extend(r.value for b in written for r in batch_records(b))

    mutated_produce()
    assert_still_serving(broker)
    stored = [r.value for batch in stored_batches(broker.address, topic) for r in batch_records(batch)]
    # exactly the acknowledged batches, plus any acks=0 send that was intact: each one whole
    assert len(accepted_records) <= len(stored) <= len(accepted_records) + len(VALUES) * len(unanswered_sends)
    assert stored == VALUES * (len(stored) // len(VALUES))


def test_unknown_api_and_future_version_get_named_errors(fuzz_target):
    broker, connection, _topic = fuzz_target
    reply = decode_response(ask(connection, [msgpack.packb([99, 0, {}])]))
    assert isinstance(reply, ErrorResponse) and "unknown api key" in reply.error_message
    reply = decode_response(ask(connection, [msgpack.packb([int(ApiKey.METADATA), 7, {"topics": None}])]))
    assert isinstance(reply, ErrorResponse) and "not supported" in reply.error_message
    assert_still_serving(broker)
