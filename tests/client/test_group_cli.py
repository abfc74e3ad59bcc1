"""`distlog consume --group` and `distlog group ...`, run with click's CliRunner against the fake
coordinator of tests/client/group_fakes.py."""

import json

import pytest
from click.testing import CliRunner

from distlog.cli import main
from distlog.client import Consumer
from tests.client.group_fakes import FakeGroupCluster

T = "t"


@pytest.fixture
def cluster():
    """Two brokers (broker 1 coordinates), topic t of 2 partitions with 5 records each."""
    fake = FakeGroupCluster(2, T, 2)
    for p, log in enumerate(fake.logs):
        log.extend(b"p%d-%d" % (p, i) for i in range(5))
    yield fake
    fake.stop()


def run(cluster, *args):
    return CliRunner().invoke(main, [*args, "--bootstrap", cluster.bootstrap])


def printed_positions(stdout) -> dict:
    """{(topic, partition): the offset after the last record printed} of `--format '%p %o'` output."""
    positions = {}
    for line in stdout.splitlines():
        partition, offset = map(int, line.split())
        positions[(T, partition)] = max(positions.get((T, partition), 0), offset + 1)
    return positions


def test_consume_with_a_group_commits_exactly_what_it_printed_on_max_records(cluster):
    result = run(cluster, "consume", T, "--group", "g", "--from-beginning", "--max-records", "3",
                 "--format", "%p %o", "--timeout", "5")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    assert cluster.committed("g") == printed_positions(result.stdout)
    assert cluster.members("g") == {}  # left the group on exit


def test_a_second_run_of_the_group_goes_on_where_the_first_stopped(cluster):
    first = run(cluster, "consume", T, "--group", "g", "--from-beginning", "--max-records", "3", "--format", "%p %o")
    second = run(cluster, "consume", T, "--group", "g", "--from-beginning", "--timeout", "1", "--format", "%p %o")
    assert second.exit_code == 0, second.stderr
    lines = first.stdout.splitlines() + second.stdout.splitlines()
    assert sorted(lines) == sorted(f"{p} {o}" for p in range(2) for o in range(5))  # each record once
    assert cluster.committed("g") == {(T, 0): 5, (T, 1): 5}


def test_consume_with_a_group_commits_on_timeout(cluster):
    result = run(cluster, "consume", T, "--group", "g", "--from-beginning", "--timeout", "1", "--format", "%p %o")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 10 and cluster.committed("g") == {(T, 0): 5, (T, 1): 5}


def test_ctrl_c_commits_the_records_printed_before_it_and_exits_130(cluster, monkeypatch):
    real_poll = Consumer.poll
    polls = []

    def poll_then_interrupt(self, *args, **kwargs):
        if any(polls):
            raise KeyboardInterrupt
        polls.append(len(records := real_poll(self, *args, **kwargs)))
        return records

    monkeypatch.setattr(Consumer, "poll", poll_then_interrupt)
    result = run(cluster, "consume", T, "--group", "g", "--from-beginning", "--format", "%p %o")
    assert result.exit_code == 130, result.stderr
    assert "interrupted" in result.stderr and result.stdout
    assert cluster.committed("g") == printed_positions(result.stdout)


def test_group_with_partition_or_offset_is_a_usage_error(cluster):
    for extra in (["--partition", "0"], ["--offset", "start"]):
        result = run(cluster, "consume", T, "--group", "g", *extra)
        assert result.exit_code == 2 and "leave out --partition and --offset" in result.stderr


def test_group_list_and_describe_show_members_offsets_and_lag(cluster):
    consumer = Consumer(cluster.bootstrap, "g", enable_auto_commit=False, client_id="billing")
    try:
        consumer.subscribe([T])
        while len(consumer.assignment()) < 2:
            consumer.poll(timeout=0.05)
        consumer.commit({(T, 0): 2})
        consumer.poll(timeout=0.05)
        listed = run(cluster, "group", "list", "--json")
        assert listed.exit_code == 0, listed.stderr
        assert json.loads(listed.stdout) == [{"group_id": "g", "state": "Stable", "members": 1, "coordinator": 1}]
        table = run(cluster, "group", "list")
        assert table.stdout.split("\n")[0].split() == ["GROUP", "STATE", "MEMBERS", "COORDINATOR"]
        described = run(cluster, "group", "describe", "g", "--json")
        assert described.exit_code == 0, described.stderr
        report = json.loads(described.stdout)
        assert (report["group"], report["state"], report["coordinator"], report["total_lag"]) == ("g", "Stable", 1, 3)
        assert report["partitions"] == [
            {"topic": T, "partition": 0, "committed_offset": 2, "log_end_offset": 5, "lag": 3, "member_id": "member-1"},
            {"topic": T, "partition": 1, "committed_offset": None, "log_end_offset": 5, "lag": None,
             "member_id": "member-1"}]
        assert [m["client_id"] for m in report["members"]] == ["billing"]
        text = run(cluster, "group", "describe", "g").stdout.splitlines()
        assert [line.split()[0] for line in text[:5]] == ["GROUP", "COORDINATOR", "STATE", "MEMBERS", "TOTAL-LAG"]
        assert text[4].split() == ["TOTAL-LAG", "3"]
        assert text[6].split() == ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER-ID",
                                   "CLIENT-ID"]
        assert text[8].split() == [T, "0", "2", "5", "3", "member-1", "billing"]
        assert text[9].split() == [T, "1", "-", "5", "-", "member-1", "billing"]
        # reset-offsets and delete are refused while the group has a member
        refused = run(cluster, "group", "reset-offsets", "g", "--topic", T, "--to-earliest", "--execute")
        assert refused.exit_code == 1 and "has 1 member(s)" in refused.stderr
        not_empty = run(cluster, "group", "delete", "g")
        assert not_empty.exit_code == 1 and "NON_EMPTY_GROUP" in not_empty.stderr
    finally:
        consumer.close()


def test_reset_offsets_prints_the_plan_and_applies_it_only_with_execute(cluster):
    run(cluster, "consume", T, "--group", "g", "--from-beginning", "--timeout", "1")
    dry = run(cluster, "group", "reset-offsets", "g", "--topic", T, "--to-offset", "3")
    assert dry.exit_code == 0, dry.stderr
    assert [line.split() for line in dry.stdout.splitlines()[2:]] == [[T, "0", "5", "3"], [T, "1", "5", "3"]]
    assert "dry run" in dry.stderr and cluster.committed("g") == {(T, 0): 5, (T, 1): 5}
    applied = run(cluster, "group", "reset-offsets", "g", "--topic", T, "--to-earliest", "--execute")
    assert applied.exit_code == 0, applied.stderr
    assert cluster.committed("g") == {(T, 0): 0, (T, 1): 0}
    run(cluster, "group", "reset-offsets", "g", "--topic", T, "--to-offset", "99", "--execute")
    assert cluster.committed("g") == {(T, 0): 5, (T, 1): 5}  # kept within the partitions' range


def test_reset_offsets_to_a_datetime_after_the_last_record_goes_to_the_log_end(cluster):
    result = run(cluster, "group", "reset-offsets", "new", "--topic", T, "--to-datetime", "2999-01-01T00:00:00Z",
                 "--execute")
    assert result.exit_code == 0, result.stderr
    assert cluster.committed("new") == {(T, 0): 5, (T, 1): 5}
    past = run(cluster, "group", "reset-offsets", "new", "--topic", T, "--to-datetime", "2000-01-01T00:00:00",
               "--execute")
    assert past.exit_code == 0 and cluster.committed("new") == {(T, 0): 0, (T, 1): 0}


def test_reset_offsets_needs_exactly_one_target_and_a_valid_datetime(cluster):
    none = run(cluster, "group", "reset-offsets", "g", "--topic", T)
    assert none.exit_code == 2 and "exactly one of" in none.stderr
    two = run(cluster, "group", "reset-offsets", "g", "--topic", T, "--to-earliest", "--to-latest")
    assert two.exit_code == 2 and "--to-earliest, --to-latest" in two.stderr
    bad = run(cluster, "group", "reset-offsets", "g", "--topic", T, "--to-datetime", "yesterday")
    assert bad.exit_code == 2 and "not an ISO 8601 time" in bad.stderr


def test_delete_forgets_an_empty_group_and_an_unknown_one_is_an_error_with_a_hint(cluster):
    run(cluster, "consume", T, "--group", "g", "--from-beginning", "--timeout", "1")
    deleted = run(cluster, "group", "delete", "g")
    assert deleted.exit_code == 0, deleted.stderr
    assert cluster.committed("g") == {}
    unknown = run(cluster, "group", "describe", "g")
    assert unknown.exit_code == 1 and "GROUP_ID_NOT_FOUND" in unknown.stderr and "distlog group list" in unknown.stderr
