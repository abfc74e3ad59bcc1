"""The test launcher: a port taken between picking and binding is survived, and stopping a set
of brokers stops every one of them even if one fails to stop."""

import socket

import pytest

from distlog.broker import launcher
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client.probe import ping
from distlog.supervisor.ports import free_ports


def ports_taken_first(monkeypatch, taken_port):
    """free_ports() hands out `taken_port` once (as if someone bound it after the pick), then real ones."""
    calls = []

    def picking(count, avoid=()):
        calls.append(count)
        if len(calls) == 1:
            return [taken_port, *free_ports(count - 1, avoid)]
        return free_ports(count, avoid)

    monkeypatch.setattr(launcher, "free_ports", picking)
    return calls


@pytest.mark.integration
def test_a_port_taken_by_a_listener_is_retried_on_fresh_ports(tmp_path, monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        calls = ports_taken_first(monkeypatch, squatter.getsockname()[1])
        brokers = start_brokers(2, str(tmp_path))
        try:
            assert len(calls) == 2, "the start should have been retried once"
            taken = f"tcp://127.0.0.1:{squatter.getsockname()[1]}"
            assert taken not in [b.address for b in brokers]
            assert all(ping(b.address, 10)["cluster_id"] == b.cluster_id for b in brokers)
        finally:
            stop_brokers(brokers)


@pytest.mark.integration
def test_a_port_taken_by_another_broker_does_not_count_as_ready(tmp_path, monkeypatch):
    (stranger,) = start_brokers(1, str(tmp_path / "stranger"))
    try:
        calls = ports_taken_first(monkeypatch, int(stranger.address.rsplit(":", 1)[1]))
        (ours,) = start_brokers(1, str(tmp_path / "ours"))  # broker 1 too: only the cluster id differs
        try:
            assert len(calls) == 2, "the start should have been retried once"
            assert ours.address != stranger.address
            assert ping(ours.address, 10)["cluster_id"] == ours.cluster_id != stranger.cluster_id
        finally:
            stop_brokers([ours])
    finally:
        stop_brokers([stranger])


class FakeBroker:
    def __init__(self, error=None):
        self.error, self.stopped = error, False

    def stop(self):
        self.stopped = True
        if self.error:
            raise self.error


def test_stop_brokers_stops_all_then_raises_the_first_failure():
    first, second = RuntimeError("first"), RuntimeError("second")
    brokers = [FakeBroker(), FakeBroker(first), FakeBroker(), FakeBroker(second), FakeBroker()]
    with pytest.raises(RuntimeError) as info:
        stop_brokers(brokers)
    assert info.value is first
    assert all(broker.stopped for broker in brokers)
