"""`distlog cluster` where the supervisor is gone but a broker is not, and the commands' usage errors."""

import os
import signal

import psutil
import pytest
from click.testing import CliRunner

from distlog.supervisor import cluster_file
from distlog.supervisor.cli import cluster
from tests.supervisor.helpers import run_cli, wait_for


def alive(pid) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.integration
def test_down_stops_a_paused_broker_that_outlived_its_killed_supervisor(cluster_dir):
    assert run_cli("up", "--detach", "-n", "2", "--data-dir", cluster_dir).returncode == 0
    assert run_cli("pause", "1", "--data-dir", cluster_dir).returncode == 0
    record = cluster_file.load(cluster_dir)
    paused_pid, running_pid = (b["pid"] for b in sorted(record["brokers"], key=lambda b: b["id"]))
    os.kill(record["supervisor"]["pid"], signal.SIGKILL)
    # The running broker follows its supervisor (SIGTERM on parent death); a stopped process
    # keeps that SIGTERM pending, so the paused one stays behind.
    wait_for(lambda: not alive(running_pid), what="the running broker to follow its supervisor")
    assert alive(paused_pid)

    result = run_cli("down", "--data-dir", cluster_dir)
    assert result.returncode == 0, result.stderr
    assert f"broker 1 (pid {paused_pid}) outlived its supervisor; stopping it" in result.stderr
    assert "stopped brokers left behind by a supervisor that is gone" in result.stderr
    wait_for(lambda: not alive(paused_pid), what="the orphaned broker to stop")


@pytest.mark.parametrize("args, message", [
    (["partition", "1"], "give at least two groups"),
    (["partition", "1", "2,x"], "'2,x' is not a comma-separated list of broker ids"),
    (["faults", "1"], "give --heal, or at least one --drop-to/--drop-from"),
    (["faults", "1", "--heal", "--drop-to", "2"], "give --heal, or at least one --drop-to/--drop-from"),
])
def test_malformed_fault_commands_are_usage_errors_before_any_cluster_is_asked(tmp_path, args, message):
    result = CliRunner().invoke(cluster, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "cluster.json").exists()
