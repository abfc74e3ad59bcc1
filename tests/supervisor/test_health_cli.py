"""`distlog cluster health`: exit codes, --watch, --exit-when-healthy, and a real cluster losing a broker."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from distlog.supervisor import cli, cluster_file
from distlog.supervisor.health import cluster_health
from tests.supervisor.helpers import REPO_ROOT, run_cli, wait_for

HEALTHY = cluster_health([1, 2], {1: {"controller_id": 1, "topics": []}, 2: {"controller_id": 1, "topics": []}})
ONE_DOWN = cluster_health([1, 2], {1: {"controller_id": 1, "topics": []}, 2: None})


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """A recorded 2-broker cluster whose health checks return the reports in `reports`, in turn
    (the last one for good); invoke(*args) runs `distlog cluster health` against it."""
    cluster_file.save(tmp_path, cluster_file.new_record(tmp_path, {1: "tcp://127.0.0.1:1", 2: "tcp://127.0.0.1:2"}))
    reports = []
    asked = []

    def broker_health(addresses):
        asked.append(addresses)
        report = reports[0] if len(reports) == 1 else reports.pop(0)
        if isinstance(report, BaseException):
            raise report
        return report

    monkeypatch.setattr(cli, "broker_health", broker_health)
    monkeypatch.setattr(cli, "HEALTH_POLL_S", 0.01)

    def invoke(*args):
        return CliRunner().invoke(cli.cluster, ["health", "--data-dir", str(tmp_path), *args])
    invoke.reports, invoke.asked = reports, asked
    return invoke


def test_exit_code_says_whether_the_cluster_is_healthy(scripted):
    scripted.reports.append(HEALTHY)
    result = scripted()
    assert result.exit_code == 0
    assert "healthy               yes" in result.stdout
    assert scripted.asked == [{1: "tcp://127.0.0.1:1", 2: "tcp://127.0.0.1:2"}], "the brokers of cluster.json"

    scripted.reports[:] = [ONE_DOWN]
    result = scripted("--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == ONE_DOWN


def test_exit_when_healthy_waits_for_it(scripted):
    scripted.reports.extend([ONE_DOWN, ONE_DOWN, HEALTHY])
    result = scripted("--exit-when-healthy", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["healthy"] is True, "only the final report is printed"
    assert len(scripted.asked) == 3


def test_exit_when_healthy_gives_up_at_the_timeout_saying_why(scripted):
    scripted.reports.append(ONE_DOWN)
    result = scripted("--exit-when-healthy", "--timeout-s", "0.1")
    assert result.exit_code == 1
    assert "error: the cluster was not healthy within 0.1 s: broker 2 down" in result.stderr
    assert "brokers down          2" in result.stdout


def test_watch_prints_each_change_once(scripted):
    scripted.reports.extend([ONE_DOWN, ONE_DOWN, HEALTHY, HEALTHY, ONE_DOWN, KeyboardInterrupt()])
    result = scripted("--watch", "--json")
    assert result.exit_code == 130
    assert [json.loads(line) for line in result.stdout.splitlines()] == [ONE_DOWN, HEALTHY, ONE_DOWN]
    assert result.stderr == "interrupted\n" and "Traceback" not in result.stderr


def test_watch_with_exit_when_healthy_stops_at_healthy(scripted):
    scripted.reports.extend([ONE_DOWN, HEALTHY])
    result = scripted("--watch", "--exit-when-healthy")
    assert result.exit_code == 0
    assert result.stdout.count("healthy ") == 2


@pytest.mark.parametrize("args", [["--timeout-s", "-1"], ["--bootstrap", "no port"], ["--frobnicate"]])
def test_bad_flags_are_usage_errors(scripted, args):
    scripted.reports.append(HEALTHY)
    assert scripted(*args).exit_code == 2
    assert scripted.asked == []


def test_a_missing_cluster_is_an_error_naming_the_fix(tmp_path):
    result = CliRunner().invoke(cli.cluster, ["health", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "distlog cluster up" in result.stderr and "--bootstrap" in result.stderr


def test_no_bootstrap_broker_answering_is_unhealthy():
    # Port 1 on 127.0.0.1: nothing listens, so the request times out.
    result = CliRunner().invoke(cli.cluster, ["health", "--bootstrap", "127.0.0.1:1", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["unhealthy_reasons"] == ["no_broker_answered"]


# -- a real cluster --------------------------------------------------------------------------------

def health(data_dir, *args):
    """(exit code, report) of `distlog cluster health --json`."""
    result = run_cli("health", "--json", "--data-dir", data_dir, *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def describe(data_dir, topic) -> dict:
    result = subprocess.run([sys.executable, "-m", "distlog.cli", "topic", "describe", topic, "--json",
                             "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.integration
def test_health_follows_a_broker_going_down_and_coming_back(cluster_dir):
    assert run_cli("up", "--detach", "-n", "3", "--data-dir", cluster_dir).returncode == 0
    code, report = health(cluster_dir)
    assert code == 0 and report["healthy"] and report["partitions_total"] == 0, "ready means healthy"
    created = subprocess.run([sys.executable, "-m", "distlog.cli", "topic", "create", "orders", "--partitions", "3",
                              "--replication-factor", "3", "--data-dir", str(cluster_dir)],
                             capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert created.returncode == 0, created.stderr
    code, report = health(cluster_dir, "--exit-when-healthy", "--timeout-s", "15")
    assert code == 0 and report["healthy"] and report["partitions_total"] == 3
    assert report["all_brokers"] == [1, 2, 3] and report["brokers_down"] == []
    controller = report["controller_id"]
    assert controller in (1, 2, 3)

    # A broker that leads a partition, and (the controller moving is not what this checks) not the controller.
    leaders = {p["leader"] for p in describe(cluster_dir, "orders")["partitions"]}
    victim = min((leaders - {controller}) or ({1, 2, 3} - {controller}))
    assert run_cli("kill", victim, "--stay-down", "--data-dir", cluster_dir).returncode == 0

    def degraded():
        code, report = health(cluster_dir)
        return (code == 1 and report["brokers_down"] == [victim] and report["leaderless_count"] == 0
                and report["under_replicated_count"] == 3 and report)
    report = wait_for(degraded, timeout_s=25, what=f"3 under-replicated partitions, led by brokers other than {victim}")
    assert report["unhealthy_reasons"] == ["brokers_down", "under_replicated_partitions"]

    assert run_cli("restart", victim, "--data-dir", cluster_dir).returncode == 0
    code, report = health(cluster_dir, "--exit-when-healthy", "--timeout-s", "20")
    assert code == 0 and report["healthy"] and report["brokers_down"] == []
