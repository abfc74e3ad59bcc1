"""Transport benchmark: tcp, ipc and shm side by side in one run, echo server in another process.

Each case pipelines request frames of one size with a bounded window in flight against a server
process that touches every byte it receives (a sum over a numpy view: a reader that never looks
at the bytes would flatter the ring) and replies with 8 bytes. Reported per transport and size:
MB/s and frames/s of requests, and round-trip latency p50/p99 in microseconds.
"""

import json
import multiprocessing
import os
import sys
import tempfile
import time

import click
import numpy as np
import zmq

from distlog.transports.shm_transport import ShmDealerConnection, ShmRouterServer
from distlog.transports.zmq_transport import DealerConnection, RouterServer

SIZES = {"100Bx1000": 100_000, "100Bx10000": 1_000_000, "1MiB": 1 << 20}
WINDOW_FRAMES = 8


def _serve(endpoint: str, use_shm: bool, ready, stop) -> None:
    server = ShmRouterServer(endpoint) if use_shm else RouterServer(endpoint)
    ready.put(server.endpoint)
    poller = zmq.Poller()
    poller.register(server.socket, zmq.POLLIN)
    while not stop.is_set():
        if not poller.poll(100):
            continue
        while (request := server.recv_nowait()) is not None:
            peer, cid, frames = request
            total = int(np.frombuffer(frames[0], dtype=np.uint8).sum(dtype=np.uint64))
            if use_shm and not server.still_valid(peer, cid):
                server.forget(peer, cid)
                continue
            server.send(peer, cid, [total.to_bytes(8, "little")])
    server.close()


def _run_case(dealer, frame_bytes: int, frames_max: int, time_max_s: float) -> dict:
    frame = np.random.default_rng(1).integers(0, 255, frame_bytes, dtype=np.uint8)
    sent_at, latencies_s, done = {}, [], 0
    started = time.perf_counter()
    while done < frames_max and time.perf_counter() - started < time_max_s:
        while len(sent_at) < WINDOW_FRAMES and done + len(sent_at) < frames_max:
            cid = dealer.send_request([frame])
            if cid is None:
                break
            sent_at[cid] = time.perf_counter()
        if not dealer.socket.poll(1000, zmq.POLLIN):
            raise RuntimeError(f"no reply in 1 s ({len(sent_at)} in flight)")
        while (reply := dealer.recv_reply_nowait()) is not None:
            latencies_s.append(time.perf_counter() - sent_at.pop(reply[0]))
            done += 1
    elapsed_s = time.perf_counter() - started
    while sent_at:  # drain the window so the next case starts clean
        if not dealer.socket.poll(1000, zmq.POLLIN):
            break
        while (reply := dealer.recv_reply_nowait()) is not None:
            sent_at.pop(reply[0], None)
    latencies_us = np.array(latencies_s) * 1e6
    return {
        "frames": done,
        "mb_per_s": round(done * frame_bytes / elapsed_s / 1e6, 1),
        "frames_per_s": round(done / elapsed_s, 1),
        "latency_us_p50": round(float(np.percentile(latencies_us, 50)), 1),
        "latency_us_p99": round(float(np.percentile(latencies_us, 99)), 1),
    }


def _bench_transport(kind: str, endpoint: str, frames_max: int, time_max_s: float) -> dict:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve, args=(endpoint, kind == "shm", ready, stop), daemon=True)
    server.start()
    try:
        bound = ready.get(timeout=30)
        dealer = (ShmDealerConnection(bound, ring_identity=f"bench-{os.getpid()}", slot_count=16,
                                      slot_bytes=1 << 20) if kind == "shm" else DealerConnection(bound))
        try:
            if not dealer.wait_connected(10):
                raise RuntimeError(f"could not connect to {bound}")
            return {name: _run_case(dealer, size, frames_max, time_max_s) for name, size in SIZES.items()}
        finally:
            dealer.close()
    finally:
        stop.set()
        server.join(10)
        if server.is_alive():
            server.kill()
            server.join()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--frames", "frames_max", default=2000, show_default=True, help="frames per case at most")
@click.option("--seconds", "time_max_s", default=2.0, show_default=True, help="seconds per case at most")
def main(as_json: bool, frames_max: int, time_max_s: float) -> None:
    """Compare tcp://127.0.0.1, ipc:// and shm (ipc + ring) for 100 KB, 1 MB and 1 MiB frames."""
    with tempfile.TemporaryDirectory(prefix="distlog-bench-") as tmp:
        endpoints = {"tcp": "tcp://127.0.0.1:0", "ipc": f"ipc://{tmp}/ipc.sock",
                     "shm": f"ipc://{tmp}/shm.sock"}
        results = {kind: _bench_transport(kind, endpoint, frames_max, time_max_s)
                   for kind, endpoint in endpoints.items()}
    report = {"window_frames": WINDOW_FRAMES, "frames_max": frames_max, "time_max_s": time_max_s,
              "results": results}
    if as_json:
        print(json.dumps(report))
        return
    for kind, cases in results.items():
        for name, case in cases.items():
            print(f"{kind:4} {name:11} {case['mb_per_s']:9.1f} MB/s {case['frames_per_s']:9.1f} frames/s "
                  f"p50 {case['latency_us_p50']:8.1f} us p99 {case['latency_us_p99']:8.1f} us", file=sys.stderr)


if __name__ == "__main__":
    main()
