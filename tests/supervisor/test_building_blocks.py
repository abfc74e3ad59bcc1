"""The supervisor's small parts: restart backoff, loopback ports, the cluster.json record."""

import json
import socket
import subprocess
import sys

import pytest

from distlog.supervisor import cluster_file
from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.ports import PortError, free_ports, port_is_free, ports_from_base


def test_backoff_doubles_per_crash_and_is_capped():
    policy = RestartPolicy(initial_s=0.5, max_s=3.0)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_free_ports_are_distinct_and_free():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port_is_free(port) for port in ports)


def test_free_ports_avoid_the_ones_asked():
    avoid = set(free_ports(3))
    assert not avoid & set(free_ports(3, avoid=avoid))


def test_port_base_names_the_taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert not port_is_free(taken)
        # The taken port is broker 1's, the first one checked: a neighbouring port that some
        # other process happens to hold cannot be reported first (that made this test flaky).
        with pytest.raises(PortError, match=f"port {taken} for broker 1 is in use"):
            ports_from_base(taken, [1, 2, 3])


def test_port_base_out_of_range():
    with pytest.raises(PortError, match="outside"):
        ports_from_base(65535, [1, 2])


def test_record_round_trips_atomically(tmp_path):
    record = cluster_file.new_record(tmp_path, {1: "tcp://127.0.0.1:9001", 2: "tcp://127.0.0.1:9002"})
    cluster_file.save(tmp_path, record)
    assert cluster_file.load(tmp_path) == record
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.json"], "no temp file left behind"
    assert record["brokers"][1]["data_dir"] == str(tmp_path.resolve() / "broker-2")
    assert record["brokers"][1]["log_file"].endswith("broker-2/broker.log")
    assert record["supervisor"]["pid"] is None and record["controller"] is None


def test_missing_record_tells_how_to_start_one(tmp_path):
    with pytest.raises(cluster_file.ClusterFileError, match="distlog cluster up"):
        cluster_file.load(tmp_path)


def test_garbage_record_is_refused(tmp_path):
    (tmp_path / "cluster.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(cluster_file.ClusterFileError, match="not a distlog cluster record"):
        cluster_file.load(tmp_path)


def test_supervisor_pid_counts_only_for_a_live_distlog_process(tmp_path):
    record = cluster_file.new_record(tmp_path, {1: "tcp://127.0.0.1:9001"})
    assert not cluster_file.supervisor_running(record)
    stranger = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)
    ours = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "distlog"],
                            stdin=subprocess.PIPE)
    try:
        record["supervisor"] = {"pid": stranger.pid, "control": None,
                                "create_time": cluster_file.process_create_time(stranger.pid)}
        assert not cluster_file.supervisor_running(record), "not a distlog process"
        record["supervisor"]["pid"] = ours.pid
        record["supervisor"]["create_time"] = cluster_file.process_create_time(ours.pid) - 3600
        assert not cluster_file.supervisor_running(record), "create time differs: a reused pid"
        record["supervisor"]["create_time"] = cluster_file.process_create_time(ours.pid)
        assert cluster_file.supervisor_running(record)
    finally:
        for process in (stranger, ours):
            process.communicate(b"")
    assert not cluster_file.supervisor_running(record), "the process is gone"


def test_data_dir_lock_is_exclusive_and_released(tmp_path):
    first = cluster_file.DataDirLock(tmp_path)
    assert first.acquire()
    assert cluster_file.data_dir_locked(tmp_path)
    assert not cluster_file.DataDirLock(tmp_path).acquire()
    first.release()
    assert not cluster_file.data_dir_locked(tmp_path)
