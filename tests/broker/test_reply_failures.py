"""A reply the socket refuses is lost, the broker is not: the next request is answered."""

import time

import pytest

from distlog.protocol.codec import decode_response, encode
from distlog.protocol.messages import ApiVersionsRequest, ApiVersionsResponse
from distlog.transports.zmq_transport import DealerConnection, TransportError
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30.0  # only for a broker that never answers; a healthy one takes milliseconds


def replies_until(connection, cid, deadline_s) -> list:
    """Every reply's cid, in arrival order, up to and including `cid`'s."""
    seen = []
    while cid not in seen:
        assert time.monotonic() < deadline_s, f"no reply to request {cid}"
        if connection.socket.poll(50):
            reply = connection.recv_reply_nowait()
            if reply is not None:
                seen.append(reply[0])
                assert isinstance(decode_response(reply[1]), ApiVersionsResponse)
    return seen


def test_a_transport_error_on_a_reply_does_not_stop_the_broker(tmp_path):
    with running_brokers(str(tmp_path), 1) as (brokers, threads):
        broker, address = brokers[0], brokers[0].config.listen
        real_send, failures = broker.server.send, []

        def failing_once(peer, cid, frames):
            if not failures:
                failures.append(cid)
                raise TransportError("send on test socket failed: Interrupted system call")
            return real_send(peer, cid, frames)

        broker.server.send = failing_once
        connection = DealerConnection(address)
        try:
            deadline_s = time.monotonic() + HANG_GUARD_S
            assert connection.wait_connected(HANG_GUARD_S)
            lost = connection.send_request(encode(ApiVersionsRequest()))
            while not failures:  # the broker handled it and its reply failed
                assert time.monotonic() < deadline_s, "the broker never answered the first request"
                time.sleep(0.01)  # polling a condition
            assert failures == [lost] and threads[0].is_alive()
            answered = connection.send_request(encode(ApiVersionsRequest()))
            # One connection delivers in order: had the failed reply gone out, it would come first.
            assert replies_until(connection, answered, deadline_s) == [answered]
            assert threads[0].is_alive()
        finally:
            connection.close()
