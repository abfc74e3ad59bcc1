"""ZeroMQ transport: round trips, pipelining by cid, malformed envelopes, fault rules, timeouts."""

import os
import socket
import struct
import tempfile
import threading
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from distlog.transports.faults import FaultRules
from distlog.transports.zmq_transport import (
    RECONNECT_IVL_MAX_MS, DealerConnection, RouterServer, TransportError, TransportTimeout, peer_name)

WAIT_S = 5.0


def recv_request(router, timeout_s=WAIT_S):
    """Wait on a condition (a request arrived) with a deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if router.socket.poll(50, zmq.POLLIN):
            request = router.recv_nowait()
            if request is not None:
                return request
    raise AssertionError("no request arrived within the deadline")


def recv_reply(dealer, timeout_s=WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if dealer.socket.poll(50, zmq.POLLIN):
            reply = dealer.recv_reply_nowait()
            if reply is not None:
                return reply
    raise AssertionError("no reply arrived within the deadline")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def closing():
    """Collects transports and raw sockets and closes every one of them after the test."""
    opened = []
    yield opened.append
    for item in reversed(opened):
        item.close(0) if not isinstance(item, zmq.Socket) else item.close(linger=0)


@pytest.fixture
def router(closing):
    server = RouterServer("tcp://127.0.0.1:0")
    closing(server)
    return server


def connect(endpoint, closing, **kwargs):
    dealer = DealerConnection(endpoint, **kwargs)
    closing(dealer)
    assert dealer.wait_connected(WAIT_S)
    return dealer


def as_bytes(frames):
    return [bytes(frame) for frame in frames]


@pytest.mark.parametrize("scheme", ["tcp", "ipc"])
def test_round_trip(scheme, closing):
    with tempfile.TemporaryDirectory(prefix="dl") as directory:
        endpoint = ("tcp://127.0.0.1:0" if scheme == "tcp"
                    else f"ipc://{os.path.join(directory, 'broker.sock')}")
        server = RouterServer(endpoint)
        closing(server)
        assert server.endpoint.startswith(f"{scheme}://")
        assert not server.endpoint.endswith(":0")
        dealer = connect(server.endpoint, closing)

        cid = dealer.send_request([b"header", b"batch"])
        identity, got_cid, frames = recv_request(server)
        assert (got_cid, as_bytes(frames)) == (cid, [b"header", b"batch"])
        assert server.send(identity, got_cid, [b"reply"])
        assert recv_reply(dealer) == (cid, [b"reply"])


def test_pipelined_replies_out_of_order_are_matched_by_cid(router, closing):
    dealer = connect(router.endpoint, closing)
    sent = {dealer.send_request([f"request {n}".encode()]): n for n in range(5)}
    assert len(sent) == 5
    requests = [recv_request(router) for _ in range(5)]
    for identity, cid, frames in reversed(requests):
        router.send(identity, cid, [b"answer to " + bytes(frames[0])])
    replies = [recv_reply(dealer) for _ in range(5)]
    assert [cid for cid, _ in replies] == sorted(sent, reverse=True)
    for cid, frames in replies:
        assert bytes(frames[0]) == f"answer to request {sent[cid]}".encode()


def test_large_frames_round_trip_intact(router, closing):
    dealer = connect(router.endpoint, closing)
    big = os.urandom(3 * 1024 * 1024)
    cid = dealer.send_request([b"h", big, bytearray(b"tail")])
    identity, _, frames = recv_request(router)
    assert as_bytes(frames) == [b"h", big, b"tail"]
    router.send(identity, cid, [memoryview(big)])
    assert bytes(recv_reply(dealer)[1][0]) == big


def test_request_helper_ignores_stale_replies_of_timed_out_requests(closing):
    ready = threading.Event()
    stop = threading.Event()
    endpoint = []

    def serve_but_answer_the_first_request_late():
        server = RouterServer("tcp://127.0.0.1:0")
        endpoint.append(server.endpoint)
        ready.set()
        held = None
        try:
            while not stop.is_set():
                if not server.socket.poll(20, zmq.POLLIN):
                    continue
                identity, cid, frames = server.recv_nowait()
                if held is None:
                    held = (identity, cid)
                    continue
                server.send(*held, [b"stale"])
                server.send(identity, cid, [b"fresh " + bytes(frames[0])])
        finally:
            server.close()

    thread = threading.Thread(target=serve_but_answer_the_first_request_late)
    thread.start()
    try:
        assert ready.wait(WAIT_S)
        dealer = connect(endpoint[0], closing)
        with pytest.raises(TransportTimeout):
            dealer.request([b"first"], timeout_s=0.2)
        assert as_bytes(dealer.request([b"second"], timeout_s=WAIT_S)) == [b"fresh second"]
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert not thread.is_alive()


def test_dead_address_times_out_with_a_clear_message(closing):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    dealer = DealerConnection(endpoint)
    closing(dealer)
    started = time.monotonic()
    with pytest.raises(TransportTimeout) as caught:
        dealer.request([b"ping"], timeout_s=0.3)
    elapsed_s = time.monotonic() - started
    assert endpoint in str(caught.value) and "0.3 s" in str(caught.value)
    assert elapsed_s >= 0.25, "it gave up before its timeout"  # a lower bound: behaviour, not speed
    assert dealer.send_request([b"ping"]) is None, "IMMEDIATE: nothing queues for a dead peer"


def test_binding_a_port_in_use_is_a_clear_transport_error(router):
    with pytest.raises(TransportError, match=router.endpoint.replace(".", r"\.")):
        RouterServer(router.endpoint)


def test_reply_to_an_unknown_peer_returns_false(router):
    assert router.send(b"nobody", 1, [b"x"]) is False
    assert router.unroutable_replies_dropped == 1


def test_empty_payload_is_refused_before_sending(router, closing):
    dealer = connect(router.endpoint, closing)
    with pytest.raises(ValueError):
        dealer.send_request([])


def test_restarted_peer_with_the_same_identity_gets_the_replies(router, closing):
    first = connect(router.endpoint, closing, identity=b"broker-2")
    first.send_request([b"hello"])
    assert recv_request(router)[0] == b"broker-2"
    first.close()
    second = connect(router.endpoint, closing, identity=b"broker-2")
    cid = second.send_request([b"hello again"])
    identity, got_cid, _ = recv_request(router)
    assert router.send(identity, got_cid, [b"welcome back"])
    assert recv_reply(second) == (cid, [b"welcome back"])


def test_dealer_reconnects_to_a_restarted_broker_on_the_same_port(closing):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = RouterServer(endpoint)
    dealer = connect(endpoint, closing)
    first.close()

    def rebind():
        try:
            return RouterServer(endpoint)
        except TransportError:  # the old listener is closed asynchronously by ZeroMQ
            return None
    deadline = time.monotonic() + WAIT_S
    while (second := rebind()) is None:
        assert time.monotonic() < deadline, f"could not bind {endpoint} again"
        time.sleep(0.01)
    closing(second)
    # A request sent before the dealer has noticed the old connection is gone may go down the
    # dead pipe and be lost; that is what a client's request timeout and retry are for. So
    # retry here too, as a client would. The deadline is a hang guard, not a speed limit.
    deadline = time.monotonic() + WAIT_S
    received = None
    while received is None:
        assert time.monotonic() < deadline, "the dealer never reached the new broker"
        if dealer.wait_connected(0.1) and dealer.send_request([b"are you back?"]) is not None:
            try:
                received = recv_request(second, timeout_s=0.2)
            except AssertionError:
                continue
    identity, got_cid, _ = received
    second.send(identity, got_cid, [b"yes"])
    assert recv_reply(dealer) == (got_cid, [b"yes"])
    # Reconnect attempts back off from RECONNECT_IVL_MS but never wait more than 1 s apart:
    # that cap bounds how long a client takes to find a restarted broker (timing it is a
    # benchmark's job; here it is read back from the socket that reconnected).
    assert dealer.socket.getsockopt(zmq.RECONNECT_IVL_MAX) == RECONNECT_IVL_MAX_MS == 1000


# -- malformed envelopes ---------------------------------------------------------------------

def raw_dealer(endpoint, closing):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    closing(sock)
    sock.connect(endpoint)
    return sock


CID_1 = struct.pack("<Q", 1)


def test_malformed_requests_are_dropped_and_counted(router, closing):
    sock = raw_dealer(router.endpoint, closing)
    sock.send_multipart([b"short"])
    sock.send_multipart([CID_1])
    sock.send_multipart([b"7 bytes", b"payload"])
    sock.send_multipart([CID_1, b"good"])
    _, cid, frames = recv_request(router)
    assert (cid, as_bytes(frames)) == (1, [b"good"])
    assert router.malformed_frames_dropped == 3


def test_malformed_replies_are_dropped_and_counted(closing):
    raw_router = zmq.Context.instance().socket(zmq.ROUTER)
    closing(raw_router)
    port = raw_router.bind_to_random_port("tcp://127.0.0.1")
    dealer = connect(f"tcp://127.0.0.1:{port}", closing)
    cid = dealer.send_request([b"ask"])
    identity = raw_router.recv_multipart()[0]
    raw_router.send_multipart([identity, b"bad cid"])
    raw_router.send_multipart([identity, b""])
    raw_router.send_multipart([identity, struct.pack("<Q", cid), b"ok"])
    assert recv_reply(dealer) == (cid, [b"ok"])
    assert dealer.malformed_frames_dropped == 2


@pytest.fixture(scope="module")
def fuzz_pair():
    server = RouterServer("tcp://127.0.0.1:0")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.connect(server.endpoint)
    try:
        yield server, sock
    finally:
        sock.close(linger=0)
        server.close()


SENTINEL = [struct.pack("<Q", 2**64 - 1), b"sentinel"]


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.binary(max_size=24), min_size=1, max_size=5))
def test_random_frame_lists_never_crash_recv_nowait(fuzz_pair, frames):
    server, sock = fuzz_pair
    well_formed = len(frames) >= 2 and len(frames[0]) == 8
    sock.send_multipart(frames)
    sock.send_multipart(SENTINEL)
    received = []
    while True:
        _, cid, payload = recv_request(server)
        if as_bytes(payload) == [b"sentinel"] and cid == 2**64 - 1:
            break
        received.append((cid, as_bytes(payload)))
    if well_formed:
        assert received == [(struct.unpack("<Q", frames[0])[0], frames[1:])]
    else:
        assert received == []


# -- fault rules on the wire -----------------------------------------------------------------

def test_router_drop_from_a_peer_then_heal(closing):
    rules = FaultRules(drop_from=["broker-1"])
    server = RouterServer("tcp://127.0.0.1:0", fault_rules=rules)
    closing(server)
    cut = connect(server.endpoint, closing, identity=b"broker-1")
    other = connect(server.endpoint, closing, identity=b"broker-3")
    cut.send_request([b"lost"])
    assert server.socket.poll(int(WAIT_S * 1000), zmq.POLLIN)
    assert server.recv_nowait() is None, "dropped on arrival"
    other.send_request([b"from 3"])
    assert as_bytes(recv_request(server)[2]) == [b"from 3"]
    rules.heal("broker-1")
    cut.send_request([b"after heal"])
    assert as_bytes(recv_request(server)[2]) == [b"after heal"]
    assert rules.dropped_from == 1


def test_router_drop_to_a_peer_drops_replies_only(closing):
    rules = FaultRules(drop_to=["broker-1"])
    server = RouterServer("tcp://127.0.0.1:0", fault_rules=rules)
    closing(server)
    dealer = connect(server.endpoint, closing, identity=b"broker-1")
    first = dealer.send_request([b"one"])
    identity, cid, _ = recv_request(server)
    assert server.send(identity, cid, [b"lost reply"]) is False
    rules.heal()
    second = dealer.send_request([b"two"])
    identity, cid, _ = recv_request(server)
    assert server.send(identity, cid, [b"reply two"])
    assert recv_reply(dealer) == (second, [b"reply two"])
    assert first != second and rules.dropped_to == 1


def test_dealer_cut_both_ways_then_heal(router, closing):
    rules = FaultRules(drop_to=["broker-1"], drop_from=["broker-1"])
    dealer = connect(router.endpoint, closing, fault_rules=rules, peer="broker-1")
    lost = dealer.send_request([b"never arrives"])
    assert lost is not None, "a fault drop looks like a frame lost on the wire"
    rules.heal("broker-1")
    cid = dealer.send_request([b"arrives"])
    identity, got_cid, frames = recv_request(router)
    assert (got_cid, as_bytes(frames)) == (cid, [b"arrives"])

    rules.drop_from("broker-1")
    assert router.send(identity, got_cid, [b"reply dropped on arrival"])
    assert dealer.socket.poll(int(WAIT_S * 1000), zmq.POLLIN)
    assert dealer.recv_reply_nowait() is None
    rules.heal()
    router.send(identity, got_cid, [b"reply kept"])
    assert recv_reply(dealer) == (cid, [b"reply kept"])
    assert (rules.dropped_to, rules.dropped_from) == (1, 1)


def test_peer_names():
    assert peer_name(b"broker-3") == "broker-3"
    assert peer_name(b"\x00k\x8bEg") == "006b8b4567"
    assert peer_name(b"\xff\xfe") == "fffe"


# -- shutdown --------------------------------------------------------------------------------

def test_close_with_linger_lets_the_context_terminate_promptly():
    context = zmq.Context()
    server = RouterServer("tcp://127.0.0.1:0", context=context)
    dealer = DealerConnection(server.endpoint, context=context)
    assert dealer.wait_connected(WAIT_S)
    dealer.send_request([b"x" * 200_000])
    identity, cid, _ = recv_request(server)
    for _ in range(20):
        server.send(identity, cid, [b"y" * 200_000])
    threads_before = threading.active_count()
    dealer.close(linger_ms=0)
    server.close(linger_ms=50)
    terminator = threading.Thread(target=context.term)
    terminator.start()
    terminator.join(WAIT_S)
    assert not terminator.is_alive(), "context.term() hung: a socket was left open or lingering"
    assert threading.active_count() == threads_before


def wait_until(condition, what, timeout_s=WAIT_S):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.01)  # polling interval of a condition, not synchronisation


def test_tracked_replies_are_done_only_once_the_reader_takes_them(router, closing):
    """What the broker's backpressure counts as unsent (broker/backpressure.py): a reply stays
    not done while a reader that does not read leaves it queued in ZeroMQ."""
    dealer = connect(router.endpoint, closing)
    dealer.socket.setsockopt(zmq.RCVHWM, 1)
    cid = dealer.send_request([b"fetch"])
    identity, got_cid, _ = recv_request(router)
    megabyte = os.urandom(1 << 20)
    # Far more than the kernel's socket buffers and the reader's queue hold: the last ones wait.
    trackers = [router.send_tracked(identity, got_cid, [b"h", memoryview(megabyte)]) for _ in range(64)]
    assert all(tracker is not None for tracker in trackers)
    small = router.send_tracked(identity, got_cid, [b"a small reply is tracked too" * 40])
    time.sleep(0.2)  # give ZeroMQ time to move what it can: nothing may count as done that was not read
    assert not trackers[-1].done and not small.done
    for _ in range(65):
        assert recv_reply(dealer)[0] == cid
    wait_until(lambda: all(t.done for t in trackers) and small.done, "every tracked reply done")


def test_a_tracked_reply_to_an_unknown_peer_is_none(router):
    assert router.send_tracked(b"nobody", 1, [b"x"]) is None
    assert router.unroutable_replies_dropped == 1
