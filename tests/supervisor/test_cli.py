"""`distlog cluster ...` end to end: the real CLI in subprocesses, driving real broker processes."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys

import psutil
import pytest

from distlog.client.probe import ping
from distlog.supervisor import cluster_file
from distlog.supervisor.broker_process import BROKER_COMMAND_ENV
from distlog.supervisor.ports import port_is_free
from tests.supervisor.helpers import REPO_ROOT, processes_using, run_cli, wait_for

pytestmark = pytest.mark.integration


def status_json(data_dir) -> dict:
    result = run_cli("status", "--json", "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def brokers_by_id(data_dir) -> dict:
    return {b["id"]: b for b in status_json(data_dir)["brokers"]}


def up_detached(data_dir, *args, env_extra=None):
    result = run_cli("up", "--detach", "--data-dir", data_dir, *args, env_extra=env_extra)
    assert result.returncode == 0, result.stderr
    return result


def alive(pid) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_detached_cluster_lifecycle(cluster_dir):
    result = up_detached(cluster_dir, "-n", "3")
    assert "running" in result.stdout and "ADDRESS" in result.stdout
    record = cluster_file.load(cluster_dir)
    assert [b["id"] for b in record["brokers"]] == [1, 2, 3]
    assert cluster_file.supervisor_running(record)
    assert record["controller"] is not None
    assert all(os.path.exists(b["log_file"]) for b in record["brokers"])

    status = status_json(cluster_dir)
    assert status["controller"] == record["controller"]
    for broker in status["brokers"]:
        assert broker["state"] == "running" and alive(broker["pid"])
        assert broker["address"].startswith("tcp://127.0.0.1:") and broker["rss_bytes"] > 0
        assert broker["uptime_s"] >= 0
        answer = ping(broker["address"], 10)
        assert answer is not None and answer["broker_id"] == broker["id"]
        assert answer["cluster_id"] == record["cluster_id"], "a real broker of this cluster answers"

    old_pid = brokers_by_id(cluster_dir)[2]["pid"]
    assert run_cli("kill", "2", "--data-dir", cluster_dir).returncode == 0
    wait_for(lambda: not alive(old_pid), what="broker 2 killed")
    restarted = wait_for(lambda: (b := brokers_by_id(cluster_dir)[2])["state"] == "running"
                         and b["pid"] != old_pid and b, what="broker 2 restarted by the supervisor")
    assert restarted["restarts"] == 1 and alive(restarted["pid"])

    assert run_cli("pause", "3", "--data-dir", cluster_dir).returncode == 0
    paused_pid = brokers_by_id(cluster_dir)[3]["pid"]
    assert psutil.Process(paused_pid).status() == psutil.STATUS_STOPPED
    assert run_cli("resume", "3", "--data-dir", cluster_dir).returncode == 0
    assert brokers_by_id(cluster_dir)[3]["state"] == "running"

    result = run_cli("faults", "1", "--drop-to", "2", "--drop-from", "3", "--data-dir", cluster_dir)
    assert result.returncode == 0, result.stderr
    assert brokers_by_id(cluster_dir)[1]["fault_rules"] == {"drop_to": ["broker-2"],
                                                            "drop_from": ["broker-3"]}
    assert run_cli("faults", "1", "--heal", "--data-dir", cluster_dir).returncode == 0
    assert brokers_by_id(cluster_dir)[1]["fault_rules"] == {}

    assert run_cli("partition", "1", "2,3", "--data-dir", cluster_dir).returncode == 0
    rules = {i: b["fault_rules"] for i, b in brokers_by_id(cluster_dir).items()}
    assert rules[1] == {"drop_to": ["broker-2", "broker-3"], "drop_from": ["broker-2", "broker-3"]}
    assert rules[2] == rules[3] == {"drop_to": ["broker-1"], "drop_from": ["broker-1"]}
    assert run_cli("heal", "--data-dir", cluster_dir).returncode == 0
    assert all(b["fault_rules"] == {} for b in brokers_by_id(cluster_dir).values())

    pids = [b["pid"] for b in brokers_by_id(cluster_dir).values()] + [record["supervisor"]["pid"]]
    result = run_cli("down", "--data-dir", cluster_dir)
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stderr
    assert not any(alive(pid) for pid in pids)
    assert cluster_file.load(cluster_dir)["supervisor"]["pid"] is None

    result = run_cli("status", "--data-dir", cluster_dir)
    assert result.returncode == 1 and "not running" in result.stderr

    up_detached(cluster_dir)
    again = cluster_file.load(cluster_dir)
    assert again["cluster_id"] == record["cluster_id"]
    assert [b["address"] for b in again["brokers"]] == [b["address"] for b in record["brokers"]]


def distlog(*args, input_text=None):
    """The top-level `distlog` CLI (topics, produce, consume) against the cluster."""
    return subprocess.run([sys.executable, "-m", "distlog.cli", *map(str, args)], input=input_text,
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)


def test_up_again_brings_the_data_back(cluster_dir):
    up_detached(cluster_dir, "-n", "1")
    created = distlog("topic", "create", "orders", "--data-dir", cluster_dir)
    assert created.returncode == 0, created.stderr
    produced = distlog("produce", "orders", "--data-dir", cluster_dir, input_text="a\nb\nc\n")
    assert produced.returncode == 0, produced.stderr
    assert run_cli("down", "--data-dir", cluster_dir).returncode == 0

    up_detached(cluster_dir)
    consumed = distlog("consume", "orders", "--from-beginning", "--max-records", "3",
                       "--timeout", "10", "--data-dir", cluster_dir)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.split() == ["a", "b", "c"]


def test_up_on_a_running_cluster_is_refused(cluster_dir):
    up_detached(cluster_dir, "-n", "1")
    result = run_cli("up", "--detach", "--data-dir", cluster_dir)
    assert result.returncode == 1
    assert "already running" in result.stderr and "distlog cluster down" in result.stderr


def test_killed_supervisor_takes_its_brokers_and_leaves_a_stale_pid(cluster_dir):
    up_detached(cluster_dir, "-n", "2")
    record = cluster_file.load(cluster_dir)
    broker_pids = [b["pid"] for b in record["brokers"]]
    os.kill(record["supervisor"]["pid"], signal.SIGKILL)
    wait_for(lambda: not any(alive(pid) for pid in broker_pids), what="brokers to follow their supervisor")

    result = run_cli("status", "--data-dir", cluster_dir)
    assert result.returncode == 1 and "gone or not ours" in result.stderr
    result = up_detached(cluster_dir)
    assert "treating the cluster as stopped" in result.stderr
    assert cluster_file.load(cluster_dir)["cluster_id"] == record["cluster_id"]


def test_pid_of_an_unrelated_process_counts_as_stale(cluster_dir):
    up_detached(cluster_dir, "-n", "1")
    assert run_cli("down", "--data-dir", cluster_dir).returncode == 0
    stranger = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)
    try:
        record = cluster_file.load(cluster_dir)
        record["supervisor"]["pid"] = stranger.pid
        cluster_file.save(cluster_dir, record)
        result = run_cli("kill", "1", "--data-dir", cluster_dir)
        assert result.returncode == 1 and "not running" in result.stderr
        assert stranger.poll() is None, "the stranger was not touched"
        up_detached(cluster_dir)
    finally:
        stranger.communicate(b"")


def _hold_a_port_with_free_neighbours() -> socket.socket:
    """A listening socket on a port whose neighbours (the other brokers' ports with --port-base
    one below it, and their metrics ports 1000 up) are free: the test must hit the port it
    holds, not one some other process happens to use (CI failed on that once)."""
    for _ in range(50):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        if all(port_is_free(port) for port in (taken - 1, taken + 1, taken + 999, taken + 1000, taken + 1001)):
            holder.listen()
            return holder
        holder.close()
    raise AssertionError("no port with free neighbours in 50 tries")


def test_port_base_in_use_starts_nothing(cluster_dir):
    with _hold_a_port_with_free_neighbours() as holder:
        taken = holder.getsockname()[1]
        result = run_cli("up", "--detach", "-n", "3", "--port-base", taken - 1, "--data-dir", cluster_dir)
    assert result.returncode == 1
    assert f"port {taken} for broker 2 is in use" in result.stderr
    assert not (cluster_dir / "cluster.json").exists()
    assert processes_using(cluster_dir) == []


def test_broker_failing_at_start_is_reported_with_its_log(cluster_dir):
    failing = f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(\"cannot open the data dir\")'"
    result = run_cli("up", "--detach", "-n", "2", "--data-dir", cluster_dir,
                     env_extra={BROKER_COMMAND_ENV: failing})
    assert result.returncode == 1
    assert "exited with code 1 while starting" in result.stderr
    assert "cannot open the data dir" in result.stderr
    assert processes_using(cluster_dir) == []
    assert run_cli("status", "--data-dir", cluster_dir).returncode == 1


def test_a_foreign_data_dir_or_a_different_size_is_refused(cluster_dir, tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"meow")
    result = run_cli("up", "--detach", "--data-dir", foreign)
    assert result.returncode == 1 and "not a distlog data dir" in result.stderr

    cluster_dir.mkdir()
    cluster_file.save(cluster_dir, cluster_file.new_record(cluster_dir, {1: "tcp://127.0.0.1:1"}))
    result = run_cli("up", "--detach", "-n", "3", "--data-dir", cluster_dir)
    assert result.returncode == 1 and "holds a 1-broker cluster" in result.stderr


def test_commands_on_a_missing_cluster_and_bad_usage(tmp_path):
    empty = tmp_path / "nothing"
    for args in (["status"], ["down"], ["kill", "1"], ["faults", "1", "--heal"]):
        result = run_cli(*args, "--data-dir", empty)
        assert result.returncode == 1 and "distlog cluster up" in result.stderr, args
    assert run_cli("kill", "--data-dir", empty).returncode == 2
    assert run_cli("faults", "1", "--data-dir", empty).returncode == 2
    assert run_cli("partition", "1", "--data-dir", empty).returncode == 2
    assert run_cli("partition", "1", "x,y", "--data-dir", empty).returncode == 2
    assert run_cli("up", "-n", "zero").returncode == 2


def test_data_dir_from_the_environment(cluster_dir):
    up_detached(cluster_dir, "-n", "1")
    result = run_cli("status", "--json", env_extra={"DISTLOG_DATA_DIR": str(cluster_dir)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["brokers"][0]["state"] == "running"


def test_foreground_up_stops_everything_on_ctrl_c(cluster_dir):
    foreground = subprocess.Popen(
        [sys.executable, "-m", "distlog.cli", "cluster", "up", "-n", "2", "--data-dir", str(cluster_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        def ready():
            try:
                record = cluster_file.load(cluster_dir)
            except cluster_file.ClusterFileError:
                return None
            return record["controller"] is not None and record
        record = wait_for(ready, what="the foreground cluster to be ready")
        assert record["supervisor"]["pid"] == foreground.pid
        pids = [b["pid"] for b in record["brokers"]]
        assert status_json(cluster_dir)["brokers"][0]["state"] == "running"
        foreground.send_signal(signal.SIGINT)
        out, err = foreground.communicate(timeout=30)
    finally:
        if foreground.poll() is None:
            foreground.kill()
            foreground.communicate()
    assert foreground.returncode == 0, err
    assert "ADDRESS" in out and "cluster stopped" in err
    assert not any(alive(pid) for pid in pids)
