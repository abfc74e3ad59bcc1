"""A short real chaos run: three broker processes under a live workload while the nemesis
partitions them, tears segment tails, kills and pauses them; the history must check clean and the report must exist."""

import json
import os

import psutil
import pytest

from distlog.chaos.runner import ChaosConfig, run_chaos

# Seed 12's schedule starts partition, torn-write (the nemesis draws from random.Random(seed)).
SEED = 12


@pytest.mark.timeout(180)
def test_a_short_run_with_every_fault_kind_finds_no_anomaly_and_writes_its_report(tmp_path):
    before = {p.pid for p in psutil.process_iter()}
    config = ChaosConfig(duration_s=8, brokers=3, partitions=4, seed=SEED, rate_per_s=300,
                         report_dir=str(tmp_path / "report"), interval_s=(1.0, 1.5), fault_duration_s=(1.0, 2.0))
    result = run_chaos(config, say=lambda message: None)
    kinds = [fault["f"] for fault in result["faults"]]
    assert kinds[:2] == ["partition", "torn-write"], kinds
    assert result["harness_errors"] == []
    assert result["valid"], {name: found[:5] for name, found in result["anomalies"].items() if found}
    assert result["sends"]["ok"] > 1000
    assert result["reads"]["final_records"] >= result["sends"]["ok"]
    assert all(fault["producer_progress"] for fault in result["faults"])
    for name in ("report.md", "timeline.png", "history.jsonl", "summary.json"):
        assert os.path.getsize(tmp_path / "report" / name) > 0, name
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["valid"] is True
    leftovers = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before
                 and "distlog" in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, f"the run left processes behind: {leftovers}"


@pytest.mark.timeout(180)
def test_without_idempotence_the_same_kind_of_run_is_caught_duplicating(tmp_path):
    """The checker must be able to fail on a real cluster: pauses longer than the producer's
    request timeout make it resend batches the paused broker then writes twice."""
    config = ChaosConfig(duration_s=8, brokers=3, partitions=4, faults=("pause",), seed=3, rate_per_s=300,
                         report_dir=str(tmp_path / "report"), interval_s=(1.0, 1.5), fault_duration_s=(3.0, 3.5),
                         idempotent_producer=False)
    result = run_chaos(config, say=lambda message: None)
    assert result["harness_errors"] == []
    assert not result["valid"]
    assert result["anomalies"]["duplicate"], "pauses past the request timeout should have duplicated writes"
    assert not result["anomalies"]["lost"]
    assert "FAIL" in (tmp_path / "report" / "report.md").read_text()
