"""Short real chaos runs: three broker processes at RF=3 under a live workload (two producers,
a consumer group of two) while the nemesis injects every fault kind. A clean run must check
clean, with every fault kind injected and recovered from; a run that duplicates must make the
chaos command say FAIL and exit 1. Neither may leave a process behind."""

import json
import os
import tempfile
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from distlog.chaos import runner
from distlog.chaos.checker import anomalies_of
from distlog.chaos.nemesis import FAULT_KINDS
from distlog.chaos.runner import ChaosConfig, run_chaos
from distlog.cli import main
from tests.supervisor.helpers import kill_all, processes_using

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTITIONS = 4


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """The run's temporary cluster data dir lands under tmp_path, so its processes can be found."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    try:
        yield tmp_path
    finally:
        leftovers = processes_using(scratch)
        kill_all(leftovers)
        assert not leftovers, f"the chaos run left processes behind: {[p.pid for p in leftovers]}"


def history_of(report_dir):
    with open(os.path.join(report_dir, "history.jsonl")) as lines:
        return [json.loads(line) for line in lines]


def test_a_short_run_with_every_fault_kind_finds_no_anomaly_and_writes_its_report(run_dir):
    report_dir = run_dir / "report"
    # The schedule goes round the kinds and the window stretches until each has started once,
    # so "every fault kind" is drawn however short the run.
    config = ChaosConfig(duration_s=20, brokers=3, partitions=PARTITIONS, seed=12, rate_per_s=300,
                         report_dir=str(report_dir), interval_s=(0.3, 0.8), fault_duration_s=(0.5, 1.0))
    result = run_chaos(config, say=lambda message: None)
    assert result["harness_errors"] == []
    assert result["valid"], {name: found[:5] for name, found in anomalies_of(result).items() if found}
    history = history_of(report_dir)
    starts = {r["id"]: r for r in history if r["type"] == "nemesis" and r["phase"] == "start"}
    ends = {r["id"]: r for r in history if r["type"] == "nemesis" and r["phase"] == "end"}
    assert {r["f"] for r in starts.values()} == set(FAULT_KINDS), starts
    assert ends.keys() == starts.keys(), "a fault that was started was never ended"
    assert result["sends"]["ok"] > 1000
    assert result["reads"]["final_records"] >= result["sends"]["ok"]
    # Every partition a fault touched took an acknowledged write again afterwards, and the
    # group committed (the consumers ran as a group, through the faults).
    assert result["progress_after_heal"] and result["failover_unrecovered"] == 0
    assert any(r["type"] == "ok" and r.get("f") == "commit" for r in history)
    for name in ("report.md", "timeline.png", "history.jsonl", "summary.json", "result.json", "transcript.md"):
        assert os.path.getsize(report_dir / name) > 0, name
    assert json.loads((report_dir / "result.json").read_text())["valid"] is True
    assert "SIGKILL" in (report_dir / "transcript.md").read_text()


@dataclass
class NonIdempotentConfig(ChaosConfig):
    """What `distlog chaos` builds, with pauses past the producer's request timeout and
    idempotence off: the producer resends batches the paused broker then writes twice."""

    interval_s: tuple = (1.0, 1.5)
    fault_duration_s: tuple = (3.0, 3.5)
    idempotent_producer: bool = False


def test_the_chaos_command_says_fail_and_exits_1_when_a_run_duplicates(run_dir, monkeypatch):
    monkeypatch.setattr(runner, "ChaosConfig", NonIdempotentConfig)
    report_dir = run_dir / "report"
    result = CliRunner().invoke(main, ["chaos", "--kill-random", "8s", "--faults", "pause", "--seed", "3",
                                       "--brokers", "3", "--partitions", str(PARTITIONS), "--rate", "300",
                                       "--replication-factor", "1", "--report-dir", str(report_dir)])
    assert result.exit_code == 1, result.output
    assert "FAIL:" in result.output and "duplicates" in result.output
    assert "FAIL" in (report_dir / "report.md").read_text()
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["valid"] is False and summary["harness_errors"] == []
    assert summary["duplicates"], "pauses past the request timeout should have duplicated writes"
    assert not summary["lost"]
