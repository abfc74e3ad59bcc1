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


def every_command(group=None, path=()):
    """(path, command) for every leaf command under `distlog`."""
    import click

    from distlog.cli import main

    group = group or main
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_that_takes_a_cluster_names_its_environment_variable_in_its_help():
    """Most commands used to show neither DISTLOG_DATA_DIR nor DISTLOG_BOOTSTRAP."""
    from click.testing import CliRunner

    from distlog.cli import main

    checked = 0
    for path, command in every_command():
        options = {name for param in command.params for name in param.opts}
        wanted = [env for option, env in (("--bootstrap", "DISTLOG_BOOTSTRAP"), ("--data-dir", "DISTLOG_DATA_DIR"))
                  if option in options]
        if not wanted:
            continue
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        text = " ".join(result.output.split())
        for env in wanted:
            assert f"env var: {env}" in text, (path, env)
        checked += 1
    assert checked >= 25, "the walk over the commands found too few to be looking at the real tree"


def test_every_option_of_every_command_has_help():
    """--acks, --brokers and --partitions had none."""
    import click

    missing = [(" ".join(path), param.opts[0]) for path, command in every_command() for param in command.params
               if isinstance(param, click.Option) and not param.hidden and not param.help]
    assert missing == []
    create = " ".join(run_cli("topic", "create", "--help").stdout.split())
    assert "--partitions INTEGER RANGE how many partitions" in create
    produce = " ".join(run_cli("produce", "--help").stdout.split())
    assert "--acks [all|1|0] all: committed by a majority" in produce
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
