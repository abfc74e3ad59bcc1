"""The shared-memory fast path over real sockets: round trips, fault rules, crashed and paused peers."""

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zmq

from distlog.transports.faults import FaultRules
from distlog.transports.shm_ring import ShmRingWriter, ring_name
from distlog.transports.shm_transport import ShmDealerConnection, ShmRouterServer, decode_descriptor
from distlog.transports.zmq_transport import TransportTimeout

DEADLINE_S = 5.0


def _wait_for(condition, what: str, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")


@pytest.fixture
def server(tmp_path):
    router = ShmRouterServer(f"ipc://{tmp_path}/router.sock", shm_dir=str(tmp_path))
    yield router
    router.close()


def _dealer(endpoint, tmp_path, **options):
    return ShmDealerConnection(endpoint, ring_identity="test-writer", slot_count=2,
                               slot_bytes=2 << 20, shm_dir=str(tmp_path), **options)


def test_a_1mib_frame_arrives_byte_identical_through_the_ring_and_the_reply_frees_it(server, tmp_path):
    dealer = _dealer(server.endpoint, tmp_path)
    try:
        frame = np.random.default_rng(7).integers(0, 256, 1 << 20, dtype=np.uint8)
        assert dealer.wait_connected(DEADLINE_S)
        cid = dealer.send_request([b"header", frame])
        peer, got_cid, frames = _wait_for(server.recv_nowait, "the request")
        assert got_cid == cid and bytes(frames[0]) == b"header"
        assert bytes(frames[1]) == frame.tobytes()
        assert server.still_valid(peer, cid)
        assert dealer.ring.slots_free == 1, "the 1 MiB frame went through the ring, not inline"
        server.send(peer, cid, [b"ok"])
        assert _wait_for(dealer.recv_reply_nowait, "the reply")[1][0] == b"ok"
        assert dealer.ring.slots_free == 2 and dealer.in_flight == 0
    finally:
        dealer.close()


def test_drop_to_drops_a_descriptor_like_any_message_and_the_timeout_frees_its_slot(server, tmp_path):
    rules = FaultRules(drop_to=["broker-1"])
    dealer = _dealer(server.endpoint, tmp_path, fault_rules=rules, peer="broker-1")
    try:
        with pytest.raises(TransportTimeout):
            dealer.request([bytes(1 << 20)], timeout_s=0.3)
        assert rules.dropped_to == 1
        assert server.recv_nowait() is None
        assert dealer.ring.slots_free == 2 and dealer.in_flight == 0
        rules.heal()
        cid = dealer.send_request([bytes(1 << 20)])
        assert _wait_for(server.recv_nowait, "the request after heal")[1] == cid
    finally:
        dealer.close()


def test_small_frames_and_a_full_ring_go_inline_without_blocking(server, tmp_path):
    dealer = _dealer(server.endpoint, tmp_path)
    try:
        assert dealer.wait_connected(DEADLINE_S)
        big = bytes(range(256)) * 4096
        cids = [dealer.send_request([big]) for _ in range(3)] + [dealer.send_request([b"tiny"])]
        received = [_wait_for(server.recv_nowait, f"request {n}") for n in range(4)]
        assert [cid for _, cid, _ in received] == cids
        assert all(bytes(frames[0]) == big for _, _, frames in received[:3])
        assert dealer.ring.fallbacks == 1, "the third big frame found the 2-slot ring full"
    finally:
        dealer.close()


_WRITER = textwrap.dedent("""
    import sys
    from distlog.transports.shm_transport import ShmDealerConnection
    dealer = ShmDealerConnection(sys.argv[1], ring_identity="crashy", slot_count=4,
                                 slot_bytes=1 << 20, shm_dir=sys.argv[2])
    dealer.wait_connected(5)
    print(dealer.ring.name, flush=True)
    while True:
        dealer.send_request([bytes(1 << 19)])
        dealer.socket.poll(50)
        while dealer.recv_reply_nowait() is not None:
            pass
""")

_ECHO_SERVER = textwrap.dedent("""
    import sys
    import zmq
    from distlog.transports.shm_transport import ShmRouterServer
    server = ShmRouterServer(sys.argv[1], shm_dir=sys.argv[2])
    print(server.endpoint, flush=True)
    while True:
        server.socket.poll(1000, zmq.POLLIN)
        while (request := server.recv_nowait()) is not None:
            peer, cid, frames = request
            if bytes(frames[0]) == b"stats":
                server.send(peer, cid, [str(server.stale_descriptors_dropped).encode()])
                continue
            head = bytes(frames[0][:8])
            if server.still_valid(peer, cid):
                server.send(peer, cid, [head])
            else:
                server.forget(peer, cid)
""")


def _start(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([process.stdout], [], [], DEADLINE_S * 2)
    if not ready:
        _stop(process)
        raise AssertionError("the child process did not start in time")
    return process, process.stdout.readline().strip()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(DEADLINE_S)
    process.stdout.close()


@pytest.mark.integration
def test_a_writer_killed_mid_stream_blocks_nobody_and_the_next_owner_removes_its_ring(server, tmp_path):
    writer, name = _start(_WRITER, server.endpoint, str(tmp_path))
    try:
        for _ in range(3):
            peer, cid, frames = _wait_for(server.recv_nowait, "a request from the writer")
            server.send(peer, cid, [b"ok"])
        writer.send_signal(signal.SIGKILL)
        writer.wait(DEADLINE_S)
        while (request := server.recv_nowait()) is not None:  # never blocks, never faults
            assert len(request[2][0]) == 1 << 19
        assert os.path.exists(tmp_path / name), "a SIGKILLed writer cannot unlink its ring"
        successor = ShmRingWriter("crashy", slot_count=1, slot_bytes=8, shm_dir=str(tmp_path))
        try:
            assert not os.path.exists(tmp_path / name)
            assert successor.name == ring_name("crashy", os.getpid())
        finally:
            successor.close()
    finally:
        _stop(writer)


@pytest.mark.integration
def test_a_paused_reader_never_blocks_the_writer_and_refuses_reused_slots_on_resume(tmp_path):
    reader, endpoint = _start(_ECHO_SERVER, f"ipc://{tmp_path}/echo.sock", str(tmp_path))
    dealer = _dealer(endpoint, tmp_path)
    try:
        assert dealer.request([b"A" * (1 << 20)], timeout_s=DEADLINE_S)[0] == b"A" * 8
        reader.send_signal(signal.SIGSTOP)
        with pytest.raises(TransportTimeout):  # the stale one: sent, then given up on
            dealer.request([b"B" * (1 << 20)], timeout_s=0.3)
        assert dealer.ring.slots_free == 2, "the timeout freed the slot"
        started = time.monotonic()
        cids = [dealer.send_request([fill * (1 << 20)]) for fill in (b"C", b"D", b"E")]
        assert time.monotonic() - started < 1.0 and None not in cids
        assert dealer.ring.fallbacks == 1, "E found the ring full and went inline"
        reader.send_signal(signal.SIGCONT)
        replies = {}
        while len(replies) < 3:
            cid, frames = _wait_for(dealer.recv_reply_nowait, "the replies after resume")
            replies[cid] = bytes(frames[0])
        assert [replies[cid] for cid in cids] == [b"C" * 8, b"D" * 8, b"E" * 8]
        assert dealer.request([b"stats"], timeout_s=DEADLINE_S)[0] == b"1", \
            "the resumed reader refused B, whose slot C reused"
    finally:
        reader.send_signal(signal.SIGCONT)
        _stop(reader)
        dealer.close()


@pytest.mark.integration
def test_a_reader_killed_mid_request_leaves_the_writer_timing_out_with_its_slots_back(tmp_path):
    reader, endpoint = _start(_ECHO_SERVER, f"ipc://{tmp_path}/echo.sock", str(tmp_path))
    dealer = _dealer(endpoint, tmp_path)
    try:
        assert dealer.request([b"A" * (1 << 20)], timeout_s=DEADLINE_S)[0] == b"A" * 8
        reader.send_signal(signal.SIGKILL)
        reader.wait(DEADLINE_S)
        started = time.monotonic()
        with pytest.raises(TransportTimeout):
            dealer.request([b"B" * (1 << 20)], timeout_s=0.3)
        assert time.monotonic() - started < 1.0
        assert dealer.ring.slots_free == 2 and dealer.in_flight == 0
    finally:
        _stop(reader)
        dealer.close()


def test_inline_frames_that_merely_start_like_a_descriptor_stay_inline():
    assert decode_descriptor(b"\xffDLSHM\x01\x00" + bytes(100)) is None
    assert decode_descriptor(b"plain") is None
