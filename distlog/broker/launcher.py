"""Start broker processes on free loopback ports and stop them again (for tests and benchmarks).

The supervisor (distlog.supervisor) is what people use; this is the minimum a test or benchmark
needs: spawn, wait until each broker answers, and always stop what was started.

Free ports are picked, then released before the brokers bind them (supervisor/ports.py), so a
process running in parallel can take one in between. start_brokers() therefore tells its own
brokers apart by a cluster id of their own (a stranger on the port does not count as ready) and,
when a broker exits because its port was taken, stops them all and starts again on fresh ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from distlog.client.probe import ping
from distlog.supervisor.ports import free_ports

# A start whose port was taken by someone else is retried on fresh ports this many times in all.
START_ATTEMPTS = 3
# What RouterServer's bind error says when the port is taken (ZeroMQ's strerror of EADDRINUSE).
_ADDRESS_IN_USE = "Address already in use"


class PortTakenError(RuntimeError):
    """A broker exited because another process had bound its port first."""


@dataclass
class BrokerProcess:
    broker_id: int
    address: str
    data_dir: str
    process: subprocess.Popen
    log_path: str
    cluster_id: str | None = None  # what its pings must say; None accepts any broker at the address

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
        """SIGKILL (a crash) and reap it."""
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
    cluster_id = f"launcher-{uuid.uuid4().hex[:12]}"
    for attempt in range(1, START_ATTEMPTS + 1):
        brokers = _spawn_all(count, data_root, extra_args, cluster_id)
        try:
            for broker in brokers:
                wait_until_ready(broker, ready_timeout_s)
        except PortTakenError:
            _kill_all(brokers)
            if attempt == START_ATTEMPTS:
                raise
            continue
        except BaseException:
            _kill_all(brokers)
            raise
        return brokers


def _spawn_all(count: int, data_root: str, extra_args, cluster_id: str) -> list:
    peers = {i + 1: f"tcp://127.0.0.1:{port}" for i, port in enumerate(free_ports(count))}
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
                     "--listen", address, "--peers", peers_arg, "--cluster-id", cluster_id, *extra_args],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            brokers.append(BrokerProcess(broker_id, address, data_dir, process, log_path, cluster_id))
    except BaseException:
        _kill_all(brokers)
        raise
    return brokers


def wait_until_ready(broker: BrokerProcess, timeout_s: float) -> None:
    """Wait until the broker answers a ping as itself; PortTakenError if its port was taken."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if broker.process.poll() is not None:
            tail = broker.log_tail()
            error = PortTakenError if _ADDRESS_IN_USE in tail else RuntimeError
            raise error(f"broker {broker.broker_id} exited with code {broker.process.returncode}:\n{tail}")
        answer = ping(broker.address, 0.5)
        if answer is not None and _is(broker, answer):
            return
    raise RuntimeError(f"broker {broker.broker_id} did not answer at {broker.address} within {timeout_s} s:\n{broker.log_tail()}")


def _is(broker: BrokerProcess, answer: dict) -> bool:
    """Whether a ping answer came from this broker, not from a stranger that took its port."""
    return answer["broker_id"] == broker.broker_id and broker.cluster_id in (None, answer["cluster_id"])


def restart_broker(broker: BrokerProcess, ready_timeout_s: float = 20.0) -> None:
    """Start a stopped (or killed) broker again on its address, with the command line it had."""
    assert broker.process.poll() is not None, "restart_broker() needs a stopped broker"
    with open(broker.log_path, "ab") as log:
        broker.process = subprocess.Popen(broker.process.args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
    try:
        wait_until_ready(broker, ready_timeout_s)
    except BaseException:
        broker.kill()
        raise


def _kill_all(brokers) -> None:
    for broker in brokers:
        broker.kill()


def stop_brokers(brokers) -> None:
    """Stop every broker, even when stopping one fails; then raise the first failure."""
    first_error = None
    for broker in brokers:
        try:
            broker.stop()
        except BaseException as error:  # the others must still be stopped
            first_error = first_error or error
    if first_error is not None:
        raise first_error
