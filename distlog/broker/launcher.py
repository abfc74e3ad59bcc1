"""Start broker processes on free loopback ports and stop them again (for tests and benchmarks).

The supervisor (distlog.supervisor) is what people use; this is the minimum a test or benchmark
needs: spawn, wait until each broker answers, and always stop what was started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from distlog.client.probe import ping
from distlog.supervisor.ports import free_ports


@dataclass
class BrokerProcess:
    broker_id: int
    address: str
    data_dir: str
    process: subprocess.Popen
    log_path: str

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within timeout_s; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def start_brokers(count: int, data_root: str, extra_args=(), ready_timeout_s: float = 20.0) -> list:
    """Start `count` brokers (ids 1..count) under data_root and wait until each answers a ping."""
    ports = free_ports(count)  # released before the brokers bind them: a small race
    peers = {i + 1: f"tcp://127.0.0.1:{port}" for i, port in enumerate(ports)}
    peers_arg = ",".join(f"{i}={a}" for i, a in peers.items())
    brokers = []
    try:
        for broker_id, address in peers.items():
            data_dir = os.path.join(data_root, f"broker-{broker_id}")
            os.makedirs(data_dir, exist_ok=True)
            log_path = os.path.join(data_dir, "broker.log")
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "distlog.broker", "--id", str(broker_id), "--data-dir", data_dir,
                     "--listen", address, "--peers", peers_arg, *extra_args],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            brokers.append(BrokerProcess(broker_id, address, data_dir, process, log_path))
        for broker in brokers:
            wait_until_ready(broker, ready_timeout_s)
    except BaseException:
        for broker in brokers:
            broker.kill()
        raise
    return brokers


def wait_until_ready(broker: BrokerProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            raise RuntimeError(f"broker {broker.broker_id} exited with code {broker.process.returncode}:\n{broker.log_tail()}")
        if ping(broker.address, 0.5) is not None:
            return
    raise RuntimeError(f"broker {broker.broker_id} did not answer at {broker.address} within {timeout_s} s:\n{broker.log_tail()}")


def stop_brokers(brokers) -> None:
    for broker in brokers:
        broker.stop()
