"""The simulator: seeds replay exactly, correct Raft passes, a broken Raft is caught."""

import json
import subprocess
import sys

import pytest

from distlog.consensus import raft, sim


def test_a_sweep_of_seeds_finds_no_violation_and_no_liveness_failure():
    for seed in range(12):
        result = sim.run_seed(seed)
        assert result.violation is None and result.liveness_failure is None, (seed, result)


def test_the_same_seed_replays_exactly():
    first, second = sim.run_seed(5, trace=True), sim.run_seed(5, trace=True)
    assert first.trace == second.trace and first.ticks == second.ticks
    assert any("leader" in line for line in first.trace)


def test_simulator_catches_a_node_that_votes_twice_in_one_term(monkeypatch):
    def vote_for_anyone(self, m):
        resp = raft.MsgPreVoteResp if isinstance(m, raft.MsgPreVote) else raft.MsgVoteResp
        if resp is raft.MsgVoteResp:
            self.vote = m.frm
        self._send(resp(self.node_id, m.frm, m.term, reject=False))

    monkeypatch.setattr(raft.RaftNode, "_handle_vote_request", vote_for_anyone)
    failures = [r for r in map(sim.run_seed, range(10)) if r.violation]
    assert failures and "two leaders in term" in failures[0].violation


def test_cli_prints_one_json_summary():
    out = subprocess.run([sys.executable, "-m", "distlog.consensus.sim", "--seeds", "3", "--workers", "1",
                          "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert set(summary) == {"seeds", "violations", "liveness_failures", "steps", "elapsed_s"}
    assert (summary["seeds"], summary["violations"], summary["liveness_failures"]) == (3, 0, 0)


def test_cli_replays_one_seed_with_a_trace():
    out = subprocess.run([sys.executable, "-m", "distlog.consensus.sim", "--seed", "3", "--trace"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "t=" in out.stdout and out.stdout.rstrip().endswith("ticks")


@pytest.mark.slow
def test_two_thousand_seeds_pass():
    # What CI runs on every change; its speed is measured, not asserted (DESIGN.md: no timed tests).
    out = subprocess.run([sys.executable, "-m", "distlog.consensus.sim", "--seeds", "2000", "--json"],
                         capture_output=True, text=True, timeout=110)
    summary = json.loads(out.stdout)
    assert summary["seeds"] == 2000
    assert (summary["violations"], summary["liveness_failures"]) == (0, 0), out.stderr[-3000:]
