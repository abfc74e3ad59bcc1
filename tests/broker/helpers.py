"""In-process brokers for broker tests that need to reach inside one (break its disk, read its state)."""

import contextlib
import os
import threading

from distlog.supervisor.ports import free_ports
from distlog.broker.logs import BrokerLogger
from distlog.broker.server import Broker, BrokerConfig


class _NullStream:
    def write(self, text):
        pass

    def flush(self):
        pass


def quiet_logger(broker_id: int) -> BrokerLogger:
    """A logger that drops everything: the expected errors of these tests are noise in the output."""
    return BrokerLogger(broker_id, _NullStream())


@contextlib.contextmanager
def running_brokers(data_root, count):
    """Brokers 1..count, each in a thread of this process, so a test can break their disks."""
    peers = {i + 1: f"tcp://127.0.0.1:{port}" for i, port in enumerate(free_ports(count))}
    brokers, threads = [], []
    try:
        for broker_id, address in peers.items():
            config = BrokerConfig(broker_id, os.path.join(data_root, f"broker-{broker_id}"), address, peers)
            brokers.append(Broker(config, quiet_logger(broker_id)))
            threads.append(threading.Thread(target=brokers[-1].run, daemon=True))
            threads[-1].start()
        yield brokers, threads
    finally:
        for broker in brokers:
            broker.stop()
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
