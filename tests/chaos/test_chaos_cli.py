"""`distlog chaos` arguments: durations parse, bad input is refused with a message and exit 2."""

import pytest
from click.testing import CliRunner

from distlog.chaos.cli import parse_duration_s
from distlog.cli import main


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("2m", 120), ("90", 90), ("1.5h", 5400), ("500ms", 0.5)])
def test_durations(text, seconds):
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("args, message", [
    (["--kill-random", "soon"], "is not a duration"),
    (["--kill-random", "0s"], "is not a duration"),
    (["--kill-random", "5s", "--faults", "kill,flood"], "choose from kill, leader-kill, controller-kill, pause, partition, torn-write"),
    (["--kill-random", "5s", "--brokers", "1"], "needs --brokers 2 or more"),
    ([], "Missing option '--kill-random'"),
])
def test_bad_arguments_are_refused_before_anything_starts(args, message):
    result = CliRunner().invoke(main, ["chaos", *args])
    assert result.exit_code == 2
    assert message in result.output
