"""The chaos checker: each anomaly class found in a small history that has exactly that anomaly."""

import json

import pytest

from distlog.chaos.checker import anomalies_of, check


def send(value, partition, offset, t, outcome="ok", process="producer-0"):
    """An invoke and its completion; `outcome` None leaves the send uncompleted."""
    records = [{"type": "invoke", "process": process, "f": "send", "value": value, "key": "k", "t": t}]
    if outcome == "ok":
        records.append({"type": "ok", "process": process, "f": "send", "value": value,
                        "partition": partition, "offset": offset, "t": t + 0.1})
    elif outcome is not None:
        records.append({"type": outcome, "process": process, "f": "send", "value": value,
                        "error": "boom", "t": t + 0.1})
    return records


def poll(records, t, process="consumer-0"):
    return {"type": "ok", "process": process, "f": "poll", "records": [list(r) for r in records], "t": t}


def final_read(records, t):
    return {"type": "ok", "process": "final-reader", "f": "final-read",
            "records": [list(r) for r in records], "t": t}


def clean_history():
    """Two partitions, three acknowledged sends each, polled in two polls and read at the end."""
    history = [{"type": "meta", "t": 0.0, "topic": "chaos", "partitions": 2, "seed": 7, "duration_s": 5}]
    log = []
    for i in range(6):
        partition, offset = i % 2, i // 2
        history += send(f"v{i}", partition, offset, t=0.5 * i)
        log.append((partition, offset, f"v{i}"))
    history.append(poll(log[:3], t=3.0))
    history.append(poll(log[3:], t=3.5))
    history.append(final_read(log, t=5.0))
    return history, log


def anomalies_found(result):
    return {name: found for name, found in anomalies_of(result).items() if found}


def test_clean_history_is_valid_with_counts():
    history, log = clean_history()
    result = check(history)
    assert result["valid"], anomalies_found(result)
    assert result["final_read"] == "ok"
    assert result["sends"] == {"invoked": 6, "ok": 6, "fail": 0, "info": 0}
    assert result["reads"] == {"polls": 2, "records_polled": 6, "final_records": 6}
    assert result["unseen"] == 0
    assert result["acked_writes"] == 6
    assert (result["seed"], result["duration_s"]) == (7, 5)  # from the meta record
    json.dumps(result)  # the runner stores it as JSON


def test_lost_write_acknowledged_but_not_in_the_final_read():
    history, log = clean_history()
    history[-1] = final_read([r for r in log if r[2] != "v4"], t=5.0)
    result = check(history)
    assert not result["valid"]
    # v4 was polled at (0, 2), which the final read no longer holds: it is lost, not a skip, and
    # the offset its acknowledgement named is gone from the log (None: nothing there now).
    assert anomalies_found(result) == {
        "lost": ["v4"], "inconsistent_offsets": [{"partition": 0, "offset": 2, "values": [None, "v4"]}]}


def test_duplicate_value_at_two_positions():
    history, log = clean_history()
    history[-1] = final_read(log + [(1, 3, "v1")], t=5.0)
    result = check(history)
    assert anomalies_found(result) == {"duplicates": [{"value": "v1", "positions": [[1, 0], [1, 3]]}]}
    assert not result["valid"]


def test_unexpected_value_never_invoked():
    history, log = clean_history()
    history[-1] = final_read(log + [(1, 3, "stranger")], t=5.0)
    result = check(history)
    assert anomalies_found(result) == {
        "unexpected_polls": [{"value": "stranger", "process": "final-reader", "t": 5.0, "invoked_t": None}]}


def test_aborted_read_of_a_definitely_failed_send():
    history, log = clean_history()
    history[1:1] = send("doomed", None, None, t=0.1, outcome="fail")
    history[-1] = final_read(log + [(0, 3, "doomed")], t=5.0)
    result = check(history)
    assert anomalies_found(result) == {"aborted_reads": ["doomed"]}
    assert result["sends"]["fail"] == 1


def test_info_sends_may_or_may_not_be_in_the_log():
    history, log = clean_history()
    history[1:1] = send("maybe-in", None, None, t=0.1, outcome="info")
    history[1:1] = send("maybe-out", None, None, t=0.1, outcome="info")
    history[1:1] = send("never-completed", None, None, t=0.1, outcome=None)
    history[-1] = final_read(log + [(0, 3, "maybe-in")], t=5.0)
    result = check(history)
    assert result["valid"], anomalies_found(result)
    assert result["sends"] == {"invoked": 9, "ok": 6, "fail": 0, "info": 3}


def test_inconsistent_offsets_between_a_poll_and_the_final_read():
    history, log = clean_history()
    history[-3] = poll([(0, 0, "v0"), (1, 0, "v1"), (0, 1, "v3")], t=3.0)  # the log holds v2 at (0, 1)
    result = check(history)
    assert result["inconsistent_offsets"] == [{"partition": 0, "offset": 1, "values": ["v2", "v3"]}]
    assert not result["valid"]


def test_inconsistent_offsets_between_an_ok_and_the_final_read():
    history, log = clean_history()
    ok = next(r for r in history if r["type"] == "ok" and r.get("value") == "v5")
    ok["offset"] = 0  # the ok claims (1, 0), where the log holds v1
    result = check(history)
    assert result["inconsistent_offsets"] == [{"partition": 1, "offset": 0, "values": ["v1", "v5"]}]
    # The same wrong acknowledgement also puts v5 at two positions, and below v3, which the same
    # producer had acknowledged at (1, 1) before it sent v5.
    assert result["duplicates"] == [{"value": "v5", "positions": [[1, 0], [1, 2]]}]
    assert [(d["value"], d["earlier_value"]) for d in result["nonmonotonic_sends"]] == [("v5", "v3")]
    assert not result["valid"]


def test_acknowledgements_without_an_offset_are_checked_by_value_only():
    history, log = clean_history()
    for value in ("v3", "v5"):  # both on partition 1, both acknowledged as duplicates (offset -1)
        next(r for r in history if r["type"] == "ok" and r.get("value") == value)["offset"] = -1
    result = check(history)
    assert result["valid"], anomalies_found(result)


@pytest.mark.parametrize("repolled", [(1, 1, "v3"), (1, 2, "v5")], ids=["backwards", "same-offset-again"])
def test_nonmonotonic_poll(repolled):
    history, log = clean_history()
    history.insert(-1, poll([repolled], t=4.0))
    result = check(history)
    assert anomalies_found(result) == {
        "nonmonotonic_polls": [{"process": "consumer-0", "partition": 1, "previous": 2, "offset": repolled[1]}]}


def test_lost_includes_an_indeterminate_send_that_a_poll_saw():
    # Jepsen counts an observed value as having happened, however its send ended.
    history, log = clean_history()
    history[1:1] = send("maybe", None, None, t=0.1, outcome="info")
    history.insert(-1, poll([(0, 3, "maybe")], t=4.0))
    result = check(history)
    assert anomalies_found(result) == {"lost": ["maybe"]}
    assert not result["valid"]


def test_duplicate_seen_only_by_polls():
    history, log = clean_history()
    history.insert(-1, poll([(1, 5, "v1")], t=4.0))  # v1 is at (1, 0); the log has nothing at 3 or 4
    result = check(history)
    assert anomalies_found(result) == {"duplicates": [{"value": "v1", "positions": [[1, 0], [1, 5]]}]}
    assert not result["valid"]


def test_acknowledged_position_the_final_read_lacks():
    history, log = clean_history()
    ok = next(r for r in history if r["type"] == "ok" and r.get("value") == "v5")
    ok["offset"] = 4  # acknowledged at (1, 4), but the log ends at (1, 2), which holds v5
    result = check(history)
    # The log lacks an offset it acknowledged (None: nothing there), and v5 is at two positions.
    assert anomalies_found(result) == {
        "inconsistent_offsets": [{"partition": 1, "offset": 4, "values": [None, "v5"]}],
        "duplicates": [{"value": "v5", "positions": [[1, 2], [1, 4]]}]}
    assert not result["valid"]


def producer_pair(first_offset, second_offset, overlapping):
    """Two sends of producer-0 to partition 0; `overlapping` puts both in flight at once."""
    a_invoke = {"type": "invoke", "process": "producer-0", "f": "send", "value": "a", "t": 0.0}
    a_ok = {"type": "ok", "process": "producer-0", "f": "send", "value": "a", "partition": 0,
            "offset": first_offset, "t": 0.2}
    b_invoke = {"type": "invoke", "process": "producer-0", "f": "send", "value": "b", "t": 0.1}
    b_ok = {"type": "ok", "process": "producer-0", "f": "send", "value": "b", "partition": 0,
            "offset": second_offset, "t": 0.3}
    order = [a_invoke, b_invoke, a_ok, b_ok] if overlapping else [a_invoke, a_ok, b_invoke, b_ok]
    log = sorted([(0, first_offset, "a"), (0, second_offset, "b")])
    return [{"type": "meta", "t": 0.0, "partitions": 1}, *order, final_read(log, t=1.0)]


def test_nonmonotonic_send_a_later_send_at_a_lower_offset():
    result = check(producer_pair(first_offset=5, second_offset=3, overlapping=False))
    assert anomalies_found(result) == {"nonmonotonic_sends": [
        {"process": "producer-0", "partition": 0, "value": "b", "offset": 3,
         "earlier_value": "a", "earlier_offset": 5}]}
    assert not result["valid"]


def test_sends_in_flight_together_may_land_in_either_order():
    result = check(producer_pair(first_offset=5, second_offset=3, overlapping=True))
    assert result["valid"], anomalies_found(result)


def test_nonmonotonic_send_is_per_producer_and_partition():
    history = producer_pair(first_offset=5, second_offset=3, overlapping=False)
    history[3]["process"] = history[4]["process"] = "producer-1"   # b is another producer's
    assert check(history)["valid"]
    history = producer_pair(first_offset=5, second_offset=3, overlapping=False)
    history[-1] = final_read([(0, 5, "a"), (1, 3, "b")], t=1.0)
    history[4]["partition"] = 1                                     # b went to another partition
    assert check(history)["valid"], anomalies_found(check(history))


@pytest.mark.parametrize("completions", [("ok", "fail"), ("fail", "ok"), ("ok", "ok"), ("info", "ok")])
def test_double_completions(completions):
    history, log = clean_history()
    first = next(i for i, r in enumerate(history) if r["type"] != "invoke" and r.get("value") == "v2")
    history[first]["type"] = completions[0]
    second = dict(history[first], type=completions[1], t=history[first]["t"] + 0.01)
    history.insert(first + 1, second)
    if completions[0] != "ok":   # a failed completion carries no position
        del history[first]["partition"], history[first]["offset"]
    result = check(history)
    assert anomalies_found(result) == {
        "double_completions": [{"value": "v2", "process": "producer-0", "completions": list(completions)}]}
    assert not result["valid"]


def test_unexpected_poll_of_a_value_before_its_send_was_invoked():
    history, log = clean_history()
    history.insert(1, poll([(2, 0, "early")], t=0.05, process="consumer-1"))   # before anyone sent it
    history[-1:-1] = send("early", 2, 0, t=4.0)
    history[-1] = final_read(log + [(2, 0, "early")], t=5.0)
    result = check(history)
    assert anomalies_found(result) == {"unexpected_polls": [
        {"value": "early", "process": "consumer-1", "t": 0.05, "invoked_t": 4.0}]}
    assert not result["valid"]


def commit(offsets, t, group="g", process="consumer-0"):
    return {"type": "ok", "process": process, "f": "commit", "group": group,
            "offsets": [list(o) for o in offsets], "t": t}


def test_commit_regression_of_a_groups_offset():
    history, log = clean_history()
    history[-1:-1] = [commit([(0, 2), (1, 1)], t=3.1),
                      commit([(0, 2)], t=3.2, process="consumer-1"),             # the same: fine
                      commit([(0, 1)], t=3.3, group="other"),                    # another group: fine
                      commit([(0, 3), (1, 0)], t=3.4, process="consumer-1")]     # partition 1 went back
    result = check(history)
    assert anomalies_found(result) == {"commit_regressions": [
        {"group": "g", "partition": 1, "previous": 1, "previous_process": "consumer-0",
         "offset": 0, "process": "consumer-1", "t": 3.4}]}
    assert not result["valid"]


def test_nonmonotonic_is_per_consumer():
    history, log = clean_history()
    history.insert(-1, poll(log, t=4.0, process="consumer-1"))
    assert check(history)["valid"]


def test_poll_skip_over_offsets_the_final_read_holds():
    history, log = clean_history()
    history[-3] = poll([(0, 0, "v0"), (1, 0, "v1")], t=3.0)
    history[-2] = poll([(0, 2, "v4"), (1, 1, "v3"), (1, 2, "v5")], t=3.5)  # jumped over (0, 1)
    result = check(history)
    assert anomalies_found(result) == {"poll_skips": [
        {"process": "consumer-0", "partition": 0, "previous": 0, "offset": 2, "missed": [[0, 1]]}]}
    assert result["unseen"] == 1


def test_poll_skip_at_the_start_of_a_partition():
    history, log = clean_history()
    history[-3] = poll([(1, 0, "v1"), (0, 1, "v2")], t=3.0)  # never saw (0, 0)
    result = check(history)
    assert anomalies_found(result)["poll_skips"][0]["missed"] == [[0, 0]]


def assign(partitions, t, process="consumer-1", group="g"):
    return {"type": "assign", "process": process, "group": group, "partitions": partitions, "t": t}


def group_history():
    """Partition 0 holds v0, v2, v4 at 0..2; consumer-0 reads two and commits 2; then the group
    gives partition 0 to consumer-1."""
    history = [{"type": "meta", "t": 0.0, "topic": "chaos", "partitions": 1, "seed": 7, "duration_s": 5}]
    log = [(0, 0, "v0"), (0, 1, "v2"), (0, 2, "v4")]
    for partition, offset, value in log:
        history += send(value, partition, offset, t=0.1 * offset)
    history += [assign([0], 1.0, process="consumer-0"), poll(log[:2], t=1.1), commit([(0, 2)], t=1.2),
                assign([0], 2.0)]
    return history, log


@pytest.mark.parametrize("first_read, found", [
    ([(0, 2, "v4")], {}),                          # at the committed offset: nothing skipped
    ([(0, 1, "v2"), (0, 2, "v4")], {}),            # below it: a re-read, which at-least-once allows
])
def test_a_group_member_starts_a_partition_it_is_given_at_the_committed_offset(first_read, found):
    history, log = group_history()
    history += [poll(first_read, t=2.1, process="consumer-1"), final_read(log, t=3.0)]
    result = check(history)
    assert anomalies_found(result) == found and result["valid"]


def test_a_group_member_starting_past_the_committed_offset_skips():
    history, log = group_history()
    history[-1:-1] = send("v6", 0, 3, t=1.5)
    log.append((0, 3, "v6"))
    history += [poll([(0, 3, "v6")], t=2.1, process="consumer-1"), final_read(log, t=3.0)]
    assert anomalies_found(check(history)) == {"poll_skips": [
        {"process": "consumer-1", "partition": 0, "previous": 1, "offset": 3, "missed": [[0, 2]]}]}


def test_a_group_member_may_start_where_a_commit_that_failed_would_have_put_it():
    """A commit that timed out may have been applied: starting there is no skip."""
    history, log = group_history()
    history[-1:-1] = [{"type": "fail", "process": "consumer-0", "f": "commit", "group": "g",
                       "offsets": [[0, 3]], "error": "REQUEST_TIMED_OUT", "t": 1.3}]
    history[-1:-1] = send("v6", 0, 3, t=1.5)
    log.append((0, 3, "v6"))
    history += [poll([(0, 3, "v6")], t=2.1, process="consumer-1"), final_read(log, t=3.0)]
    result = check(history)
    assert result["valid"], anomalies_found(result)


def test_a_member_given_a_partition_again_may_start_below_what_it_read_before():
    history, log = group_history()
    history += [assign([0], 2.5, process="consumer-0"), poll(log[1:], t=2.6, process="consumer-0"),
                final_read(log, t=3.0)]
    result = check(history)
    assert result["valid"], anomalies_found(result)


def test_gap_with_nothing_in_the_final_read_is_not_a_skip():
    # Offsets 1 and 2 of partition 0 hold no records (e.g. Raft leader markers) and the
    # consumer correctly jumps from 0 to 3.
    history = send("a", 0, 0, t=0.0) + send("b", 0, 3, t=1.0)
    history.append(poll([(0, 0, "a"), (0, 3, "b")], t=2.0))
    history.append(final_read([(0, 0, "a"), (0, 3, "b")], t=3.0))
    result = check(history)
    assert result["valid"], anomalies_found(result)


@pytest.mark.parametrize("last_record, verdict", [
    (None, "missing"),
    ({"type": "fail", "process": "final-reader", "f": "final-read", "error": "timeout", "t": 5.0}, "failed"),
])
def test_no_final_read_makes_the_run_invalid(last_record, verdict):
    history, log = clean_history()
    history.pop()
    if last_record:
        history.append(last_record)
    result = check(history)
    assert result["final_read"] == verdict
    assert not result["valid"]
    # Without the ground truth nothing can be called lost.
    assert anomalies_found(result) == {}


def test_fault_progress_and_next_ok_after():
    history = [
        {"type": "nemesis", "phase": "start", "id": 1, "f": "kill", "target": [2], "t": 1.0},
        {"type": "nemesis", "phase": "end", "id": 1, "f": "kill", "target": [2], "t": 2.0},
        *send("a", 0, 0, t=2.4),     # its ok at 2.5
        poll([(0, 0, "a")], t=2.6),
        {"type": "nemesis", "phase": "start", "id": 2, "f": "pause", "target": [1], "t": 3.0},
        {"type": "nemesis", "phase": "end", "id": 2, "f": "pause", "target": [1], "t": 4.0},
        *send("b", 0, 1, t=3.5),     # its ok at 3.6, during the pause
        {"type": "nemesis", "phase": "start", "id": 3, "f": "partition", "target": [[1], [2, 3]], "t": 5.0},
        final_read([(0, 0, "a"), (0, 1, "b")], t=7.0),
    ]
    faults = {fault["id"]: fault for fault in check(history)["faults"]}
    assert faults[1]["producer_progress"] and faults[1]["consumer_progress"]
    assert faults[1]["next_ok_after_s"] == pytest.approx(0.5)
    assert faults[1]["start_t"] == 1.0 and faults[1]["end_t"] == 2.0 and faults[1]["target"] == [2]
    assert not faults[2]["producer_progress"] and not faults[2]["consumer_progress"]
    assert faults[2]["next_ok_after_s"] is None
    assert faults[3]["end_t"] == 7.0  # never ended: it lasts to the end of the history
    assert [fault["id"] for fault in check(history)["faults"]] == [1, 2, 3]


RESULT_JSON_KEYS = {"valid", "seed", "duration_s", "faults", "faults_by_kind", "acked_writes", "lost", "unseen",
                    "duplicates", "inconsistent_offsets", "nonmonotonic_polls", "nonmonotonic_sends", "poll_skips",
                    "aborted_reads", "failover_ms_p50", "failover_ms_max", "progress_after_heal"}


def test_the_result_has_result_json_keys():
    history, log = clean_history()
    assert RESULT_JSON_KEYS <= check(history).keys()


def test_a_run_with_no_acknowledged_write_is_invalid():
    history = [{"type": "meta", "t": 0.0, "partitions": 1}, *send("a", None, None, t=0.1, outcome="info"),
               final_read([], t=1.0)]
    result = check(history)
    assert result["acked_writes"] == 0 and not result["enough_acked"]
    assert anomalies_found(result) == {} and not result["valid"]


def test_fewer_acknowledged_writes_than_asked_for_is_invalid():
    history, log = clean_history()   # 6 acknowledged writes
    assert check(history, min_acked=6)["valid"]
    result = check(history, min_acked=7)
    assert not result["valid"] and not result["enough_acked"] and result["min_acked"] == 7
    assert anomalies_found(result) == {} and result["progress_after_heal"]


def nemesis(fault_id, start_t, end_t, partitions=None, f="kill"):
    start = {"type": "nemesis", "phase": "start", "id": fault_id, "f": f, "target": [1], "t": start_t}
    if partitions is not None:
        start["partitions"] = partitions
    end = {"type": "nemesis", "phase": "end", "id": fault_id, "f": f, "target": [1], "t": end_t}
    return [start, end]


def test_progress_after_heal_needs_a_write_on_every_partition():
    history, log = clean_history()   # the last acks: v4 on partition 0 at 2.1, v5 on partition 1 at 2.6
    history[1:1] = nemesis(1, 1.9, 2.0)
    assert check(history)["progress_after_heal"]
    history[1:3] = nemesis(1, 1.9, 2.2)   # healed after partition 0's last write
    result = check(history)
    assert not result["progress_after_heal"] and result["stalled_after_heal"] == [0]
    assert anomalies_found(result) == {} and not result["valid"]


def test_a_partition_the_meta_record_names_that_never_took_a_write_is_stalled():
    history, log = clean_history()
    history[0]["partitions"] = 3   # partition 2 never got a write, even without faults
    result = check(history)
    assert result["stalled_after_heal"] == [2] and not result["valid"]


def test_failover_per_fault_and_partition():
    history, log = clean_history()   # send i is invoked at 0.5 * i and acknowledged 0.1 s later
    history[1:1] = [
        # Partition 1 only: v1 (invoked 0.5, before the start) does not count; v3 (1.5 -> 1.6) does.
        *nemesis(1, 0.55, 0.6, partitions=[1]),
        # No "partitions": all of them. v2 (partition 0, 1.0 -> 1.1) and v3 (1.5 -> 1.6).
        *nemesis(2, 0.7, 0.8, f="pause"),
        # Nothing is sent to partition 1 after 2.55, so it never recovers from this one.
        *nemesis(3, 1.95, 2.0, partitions=[0, 1]),
    ]
    result = check(history)
    faults = {fault["id"]: fault for fault in result["faults"]}
    assert faults[1]["partitions"] == [1] and faults[1]["failover_ms"] == [[1, pytest.approx(1050)]]
    assert faults[2]["failover_ms"] == [[0, pytest.approx(400)], [1, pytest.approx(900)]]
    assert faults[2]["failover_ms_max"] == pytest.approx(900)
    assert faults[3]["failover_ms"] == [[0, pytest.approx(150)], [1, pytest.approx(650)]]
    # Over the five (fault, partition) pairs: 150, 400, 650, 900, 1050.
    assert result["failover_ms_p50"] == pytest.approx(650) and result["failover_ms_max"] == pytest.approx(1050)
    assert result["faults_by_kind"] == {"kill": 2, "pause": 1}
    assert result["valid"], anomalies_found(result)


def test_failover_never_when_no_later_send_succeeds():
    history, log = clean_history()
    history[1:1] = nemesis(1, 2.55, 2.58, partitions=[0, 1])   # after the last invoke (v5 at 2.5)
    result = check(history)
    assert result["faults"][0]["failover_ms"] == [[0, None], [1, None]]
    assert result["failover_ms_max"] is None and result["failover_unrecovered"] == 2
    # v5 was invoked before the fault but acknowledged after it healed: partition 1 progressed.
    assert result["stalled_after_heal"] == [0]


def test_timeline_buckets_per_second():
    history = send("a", 0, 0, t=0.2) + send("b", 0, 1, t=0.5) + send("c", None, None, t=2.0, outcome="info")
    history[-3]["t"] = 0.75  # b acknowledged 250 ms after its invoke, a after 100 ms
    history.append(poll([(0, 0, "a"), (0, 1, "b")], t=1.5))
    history.append(final_read([(0, 0, "a"), (0, 1, "b")], t=3.2))
    timeline = check(history)["timeline"]
    assert timeline == {"bucket_s": 1.0, "ok_sends": [2, 0, 0, 0], "failed_sends": [0, 0, 1, 0],
                        "polled_records": [0, 2, 0, 0], "max_ack_latency_ms": [250.0, 0.0, 0.0, 0.0]}


def test_a_200k_record_history_is_checked_completely():
    """At run scale every record is still looked at: one lost and one duplicated write among
    100 000 are both found. (How long the check takes is a benchmark's question, not a test's;
    the suite's timeout is the only hang guard.)"""
    partitions, sends = 6, 100_000
    history = []
    log = []
    for i in range(sends):
        partition, offset = i % partitions, i // partitions
        t = i * 0.0005
        history.append({"type": "invoke", "process": "producer-0", "f": "send", "value": f"v{i}", "t": t})
        history.append({"type": "ok", "process": "producer-0", "f": "send", "value": f"v{i}",
                        "partition": partition, "offset": offset, "t": t})
        log.append([partition, offset, f"v{i}"])
    history += [poll(log[i:i + 500], t=50.0 + i * 1e-5) for i in range(0, sends, 500)]
    clean = check(history + [final_read(log, t=60.0)])
    assert clean["valid"] and clean["reads"]["final_records"] == sends
    assert clean["sends"]["ok"] == sends and anomalies_found(clean) == {}

    lost, duplicated = log[77_777], log[99_998]
    damaged = [r for r in log if r is not lost] + [[duplicated[0], sends, duplicated[2]]]
    result = check(history + [final_read(damaged, t=60.0)])
    assert not result["valid"]
    assert result["lost"] == [lost[2]]
    assert [d["value"] for d in result["duplicates"]] == [duplicated[2]]
