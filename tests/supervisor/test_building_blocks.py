"""The supervisor's small parts: restart backoff, loopback ports (brokers' and metrics'), the cluster.json record."""

import json
import socket
import subprocess
import sys

import pytest

from distlog.supervisor import cluster_file
from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.ports import (METRICS_PORT_OFFSET, PortError, free_ports, metrics_ports_from_base,
                                      port_is_free, ports_from_base)
from distlog.supervisor.prepare import prepare_cluster


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


def test_a_new_cluster_gets_distinct_metrics_ports_recorded_beside_its_broker_ports(tmp_path):
    record = prepare_cluster(tmp_path, 3, None, say=lambda message: None)
    broker_ports = {int(b["address"].rsplit(":", 1)[1]) for b in record["brokers"]}
    metrics_ports = {b["metrics_port"] for b in record["brokers"]}
    assert len(broker_ports | metrics_ports) == 6
    assert cluster_file.metrics_url(record["brokers"][0]["metrics_port"]) == \
        f"http://127.0.0.1:{record['brokers'][0]['metrics_port']}/metrics"


def test_port_base_puts_the_metrics_ports_a_fixed_offset_above_and_names_a_taken_one(tmp_path):
    [base] = free_ports(1)
    if base + METRICS_PORT_OFFSET + 1 > 65535:
        base -= METRICS_PORT_OFFSET
    assert metrics_ports_from_base(base, [1, 2]) == {1: base + METRICS_PORT_OFFSET, 2: base + METRICS_PORT_OFFSET + 1}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(PortError, match=f"metrics port {taken} for broker 1 is in use"):
            metrics_ports_from_base(taken - METRICS_PORT_OFFSET, [1, 2])


def test_up_again_keeps_free_metrics_ports_moves_a_taken_one_and_gives_an_old_record_one(tmp_path):
    record = prepare_cluster(tmp_path, 2, None, say=lambda message: None)
    record["brokers"][1]["metrics_port"] = None  # a record written before brokers served metrics
    cluster_file.save(tmp_path, record)
    said = []
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", record["brokers"][0]["metrics_port"]))
        holder.listen()
        again = prepare_cluster(tmp_path, None, None, say=said.append)
    first, second = again["brokers"]
    assert first["metrics_port"] != record["brokers"][0]["metrics_port"]
    assert [m for m in said if "metrics port" in m] == [
        f"metrics port {record['brokers'][0]['metrics_port']} of broker 1 is in use; it moves to {first['metrics_port']}"]
    assert isinstance(second["metrics_port"], int)
    assert first["address"] == record["brokers"][0]["address"], "free broker ports stay"
    ports = [first["metrics_port"], second["metrics_port"], *(int(b["address"].rsplit(":", 1)[1]) for b in again["brokers"])]
    assert len(set(ports)) == 4
