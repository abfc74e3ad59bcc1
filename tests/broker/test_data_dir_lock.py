"""One broker per data directory: a second one is refused with a message that names the first."""

import os
import subprocess
import sys

import pytest

from distlog.broker.data_dir_lock import DataDirInUseError, lock_data_dir
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.broker.server import Broker, BrokerConfig
from distlog.supervisor.ports import free_ports
from tests.broker.helpers import quiet_logger

pytestmark = pytest.mark.integration


def test_a_held_data_dir_cannot_be_locked_again_until_released(tmp_path):
    first = lock_data_dir(str(tmp_path))
    with pytest.raises(DataDirInUseError, match=f"pid {os.getpid()}.*own --data-dir"):
        lock_data_dir(str(tmp_path))
    first.release()
    lock_data_dir(str(tmp_path)).release()


def test_a_second_broker_process_on_a_running_brokers_data_dir_exits_with_a_clear_error(tmp_path):
    brokers = start_brokers(1, str(tmp_path))
    try:
        (port,) = free_ports(1)
        second = subprocess.run(
            [sys.executable, "-m", "distlog.broker", "--id", "1", "--data-dir", brokers[0].data_dir,
             "--listen", f"tcp://127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 1
        assert f"in use by another broker (pid {brokers[0].process.pid})" in second.stderr
        assert brokers[0].process.poll() is None, "the running broker must be untouched"
    finally:
        stop_brokers(brokers)
    restarted = start_brokers(1, str(tmp_path))  # the lock went with the process
    stop_brokers(restarted)


def test_a_broker_that_fails_to_start_lets_go_of_its_data_dir_and_port(tmp_path):
    data_dir = tmp_path / "broker-1"
    data_dir.mkdir()
    (data_dir / "metadata.json").write_text("{not json")
    (port,) = free_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ValueError):  # the unreadable metadata.json
        Broker(BrokerConfig(1, str(data_dir), address, {1: address}), quiet_logger(1))
    lock_data_dir(str(data_dir)).release()  # not still held by the broker that failed
    (data_dir / "metadata.json").unlink()
    broker = Broker(BrokerConfig(1, str(data_dir), address, {1: address}), quiet_logger(1))  # nor its port
    broker._close_logs()
    broker._close_sockets()
