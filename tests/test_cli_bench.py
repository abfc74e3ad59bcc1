"""`distlog bench NAME` runs the benchmark scripts as click commands, with help and usage errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def distlog(*args):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args], capture_output=True, text=True, timeout=120)


def test_bench_lists_every_benchmark_and_each_has_help_for_every_option():
    from click.testing import CliRunner

    from distlog.cli import main

    listing = CliRunner().invoke(main, ["bench", "--help"])
    assert listing.exit_code == 0, listing.output
    for name in ("storage", "produce", "failover", "idle", "compare"):
        assert name in listing.output
        command = main.commands["bench"].get_command(None, name)
        assert command.help, name
        assert [p.opts[0] for p in command.params if not p.help] == [], name
    bad = CliRunner().invoke(main, ["bench", "produce", "--records", "0"])
    assert bad.exit_code == 2 and "Invalid value for '--records'" in bad.output
    assert CliRunner().invoke(main, ["bench", "nosuch"]).exit_code == 2


def test_the_storage_benchmark_runs_from_distlog_and_as_a_script_alike():
    """A log smaller than a segment left nothing to compact, and the benchmark crashed."""
    small = ["--records", "2000", "--random-reads", "100", "--compaction-keys", "100", "--json"]
    from_cli = distlog("bench", "storage", *small)
    assert from_cli.returncode == 0, from_cli.stderr
    assert json.loads(from_cli.stdout)["verified"] is True
    as_script = subprocess.run([sys.executable, "bench/storage.py", *small], capture_output=True, text=True,
                               timeout=120, cwd=REPO_ROOT)
    assert as_script.returncode == 0 and json.loads(as_script.stdout)["verified"] is True, as_script.stderr


@pytest.mark.integration
def test_the_produce_benchmark_starts_its_brokers_verifies_and_stops_them():
    ran = distlog("bench", "produce", "--records", "500", "--json")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["verified"] is True and result["records"] == 500
    assert set(result["broker_rss_mb_peaks"]) == {"broker-1"}, "broker memory is reported"
    assert 10 < result["broker_rss_mb_peak"] < 2000 and result["client_rss_mb_peak"] > 10
    assert 0 < result["broker_rss_anon_mb_peak"] <= result["broker_rss_mb_peak"]
