"""One broker per data directory: a second one is refused with a message that names the first."""

import os
import subprocess
import sys

import pytest

from distlog.broker.data_dir_lock import DataDirInUseError, DataDirLock
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.supervisor.ports import free_ports


def test_a_held_data_dir_cannot_be_locked_again_until_released(tmp_path):
    first = DataDirLock(str(tmp_path)).acquire()
    with pytest.raises(DataDirInUseError, match=f"pid {os.getpid()}.*own --data-dir"):
        DataDirLock(str(tmp_path)).acquire()
    first.release()
    DataDirLock(str(tmp_path)).acquire().release()


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
