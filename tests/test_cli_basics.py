"""The console script exists and answers --version and --help."""

import subprocess
import sys

from distlog import __version__


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args], capture_output=True, text=True, timeout=60)


def test_version_prints_the_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_help_lists_usage_and_the_environment_variables():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout
    for name in ("DISTLOG_BOOTSTRAP", "DISTLOG_DATA_DIR", "DISTLOG_LOG_LEVEL"):
        assert name in result.stdout


def test_unknown_flag_is_a_usage_error():
    result = run_cli("--no-such-flag")
    assert result.returncode == 2


def test_every_cluster_command_names_its_environment_variables_and_every_option_has_help():
    for command in (["topic", "create"], ["topic", "list"], ["topic", "describe"], ["topic", "delete"],
                    ["produce"], ["consume"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0, result.stderr
        text = " ".join(result.stdout.split())
        assert "env var: DISTLOG_BOOTSTRAP" in text and "env var: DISTLOG_DATA_DIR" in text, command
    create = " ".join(run_cli("topic", "create", "--help").stdout.split())
    assert "--partitions INTEGER RANGE how many partitions" in create
    chaos = " ".join(run_cli("chaos", "--help").stdout.split())
    assert "--brokers INTEGER RANGE Brokers of the cluster" in chaos and "--partitions INTEGER RANGE Partitions" in chaos


def test_the_broker_and_the_simulator_are_distlog_commands_with_help_and_usage_errors():
    import json

    broker_help = " ".join(run_cli("broker", "--help").stdout.split())
    assert "Usage: distlog broker" in broker_help and "--metrics-port" in broker_help
    assert "env var: DISTLOG_LOG_LEVEL" in broker_help
    ran = run_cli("sim", "--seeds", "5", "--workers", "1", "--json")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["seeds"] == 5 and summary["violations"] == 0
    bad = run_cli("sim", "--seeds", "0")
    assert bad.returncode == 2 and "Invalid value for '--seeds'" in bad.stderr
    missing = run_cli("broker", "--data-dir", "/nonexistent")
    assert missing.returncode == 2 and "Missing option '--id'" in missing.stderr


def test_the_detached_supervisor_is_a_click_command_with_help():
    result = subprocess.run([sys.executable, "-m", "distlog.supervisor.daemon", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "--ready-fd INTEGER" in result.stdout and "first restart delay" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "distlog.supervisor.daemon"], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "Missing option '--data-dir'" in missing.stderr
