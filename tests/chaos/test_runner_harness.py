"""The chaos runner's own bookkeeping, without a cluster: which harness errors it reports and
what it keeps of a failed run."""

from distlog.chaos.runner import _keep_logs, stuck_moves


def membership_end(fault_id, **steps):
    return {"type": "nemesis", "phase": "end", "id": fault_id, "f": "membership", "added": 5,
            "moved": {"partition": 4, "from": [3, 1, 2], "to": [1, 2, 5]}, **steps}


def test_a_membership_fault_whose_move_or_decommission_timed_out_is_a_harness_error():
    records = [
        membership_end(3, reassigned=True, decommissioned=True),
        {"type": "nemesis", "phase": "end", "id": 4, "f": "kill", "target": [2]},
        membership_end(12, reassigned=True, decommissioned=False),
        membership_end(13, reassigned=False, decommissioned=True),
    ]
    errors = stuck_moves(records)
    assert len(errors) == 2
    assert errors[0].startswith("membership fault 12 (broker 5): not decommissioned within 60 s")
    assert errors[1].startswith("membership fault 13 (broker 5): not reassigned within 60 s")
    assert "'to': [1, 2, 5]" in errors[1]


def test_a_membership_fault_that_never_got_to_move_is_not_counted_as_stuck():
    # An error before the move (no broker answered) leaves the steps unrecorded, not False.
    assert stuck_moves([membership_end(1)]) == []


def test_a_failed_run_keeps_the_supervisor_and_broker_logs_rotated_ones_included(tmp_path):
    data_dir, logs_dir = tmp_path / "data", tmp_path / "report" / "logs"
    (data_dir / "broker-2" / "topics" / "chaos-0").mkdir(parents=True)
    (data_dir / "supervisor.log").write_text("supervisor\n")
    (data_dir / "broker-2" / "broker.log").write_text("now\n")
    (data_dir / "broker-2" / "broker.log.1").write_text("before\n")
    (data_dir / "broker-2" / "topics" / "chaos-0" / "00000000000000000000.log").write_bytes(b"\0" * 64)
    _keep_logs(str(data_dir), str(logs_dir))
    kept = sorted(str(p.relative_to(logs_dir)) for p in logs_dir.rglob("*") if p.is_file())
    assert kept == ["broker-2/broker.log", "broker-2/broker.log.1", "supervisor.log"]
    assert (logs_dir / "broker-2" / "broker.log.1").read_text() == "before\n"
