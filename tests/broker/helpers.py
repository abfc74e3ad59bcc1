"""In-process brokers for broker tests that need to reach inside one (break its disk, read its state)."""

import contextlib
import os
import threading

from distlog.broker.logs import BrokerLogger
from distlog.broker.server import Broker, BrokerConfig
from distlog.supervisor.ports import free_ports
from distlog.transports.zmq_transport import TransportError

# A start whose port another process took between free_ports() and the bind is retried on
# fresh ports this many times in all (free_ports releases the ports it picks).
START_ATTEMPTS = 3


class _NullStream:
    def write(self, text):
        pass

    def flush(self):
        pass


def quiet_logger(broker_id: int) -> BrokerLogger:
    """A logger that drops everything: the expected errors of these tests are noise in the output."""
    return BrokerLogger(broker_id, _NullStream())


def build_brokers(data_root, count) -> list:
    """Brokers 1..count constructed (ports bound, data dirs locked) but not running yet."""
    for attempt in range(1, START_ATTEMPTS + 1):
        peers = {i + 1: f"tcp://127.0.0.1:{port}" for i, port in enumerate(free_ports(count))}
        brokers = []
        try:
            for broker_id, address in peers.items():
                config = BrokerConfig(broker_id, os.path.join(data_root, f"broker-{broker_id}"), address, peers)
                brokers.append(Broker(config, quiet_logger(broker_id)))
        except TransportError as error:
            for broker in brokers:
                broker._shutdown()
            if "Address already in use" not in str(error) or attempt == START_ATTEMPTS:
                raise
            continue
        except BaseException:
            for broker in brokers:
                broker._shutdown()
            raise
        return brokers


@contextlib.contextmanager
def running_brokers(data_root, count, run=None):
    """Brokers 1..count, each in a thread of this process, so a test can break their disks.

    `run` names the broker ids whose loops start at once (default: all); a test starts the
    others itself with threads[i].start(). Every broker is stopped on the way out."""
    brokers = build_brokers(data_root, count)
    threads = [threading.Thread(target=broker.run, daemon=True) for broker in brokers]
    try:
        for broker, thread in zip(brokers, threads):
            if run is None or broker.broker_id in run:
                thread.start()
        yield brokers, threads
    finally:
        for broker in brokers:
            broker.stop()
        for broker, thread in zip(brokers, threads):
            if thread.ident is None:  # never ran: nothing else closes its sockets and data dir
                broker._shutdown()
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads), "a broker thread did not stop"
