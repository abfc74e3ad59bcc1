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


def test_help_lists_usage():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


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
