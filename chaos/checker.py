"""The chaos history checker: from a run's history, the verdict, the anomalies and the fault recovery.

It is a pure function of the history (a list of the dicts the runner logged, format in
docs/CHAOS.md), so a saved JSONL file can be re-checked and every anomaly class can be tested
with a small hand-written history. The anomaly names are Jepsen's (its Kafka workload), so a
reader who knows Jepsen knows what each means. One pass over the history collects what each
process did; the anomalies are then set operations and per-partition lookups, never a scan
per record, so a few hundred thousand records check in under a second.

The final read is the ground truth: it is one complete read of every partition after all faults
are healed. Without it (missing or failed) the run is invalid, and the checks that need it
(lost, poll_skips, acknowledged positions the log lacks) are left empty rather than guessed.
A run is also invalid if it acknowledged fewer than `min_acked` writes (nothing was tested) or
some partition took no write after the last fault ended (the cluster did not recover).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from itertools import chain
from operator import itemgetter

TIMELINE_BUCKET_S = 1.0
# Field getters for the record tuples below; map() with them keeps the hot loops in C.
_VALUE = itemgetter(2)            # of a [partition, offset, value] read record
_POSITION = itemgetter(0, 1)
_ACK_BINDING = itemgetter(4, 5, 0)  # (partition, offset, value) of an entry of _Collected.acks


class _Collected:
    """What one pass over the history found, grouped for the anomaly checks.

    Happens-before is the history's order (it is written in time order under one lock), so the
    checks that ask "did A complete before B started" compare record indices, never times that
    may tie; times are only used for durations.
    """

    def __init__(self):
        self.meta: dict = {}               # the meta record: run settings (seed, duration_s, topic, partitions)
        self.invoked: dict = {}            # value -> (index, t, process) of its invoke, in invoke order
        self.first_completion: dict = {}   # value -> "ok" | "fail" | "info", its first completion
        self.completions: dict = {}        # value -> [(kind, process), ...] for a send completed more than once
        self.acked: dict = {}              # value -> None for each value with an ok, in first-ok order
        self.acks: list = []               # (value, process, index, t, partition, offset) of every ok send
        self.ok_times_s: list = []
        self.failed_times_s: list = []     # fail and info completions
        self.failed: list = []             # values of fail completions, in order
        self.polled_values: set = set()    # every value a live poll returned
        self.first_read: dict = {}         # value -> (index, process, t) of the first poll or final read holding it
        self.polls: list = []              # (process, index, t, records) of every ok poll, in order
        self.commits: list = []            # (process, index, t, group, offsets) of every ok commit, in order
        self.assigns: list = []            # (process, index, group, partitions) of every assign, in order
        self.failed_commits: list = []     # (index, group, offsets) of commits that failed: maybe applied
        self.final_read = "missing"
        self.final_records: list = []
        self.fault_starts: dict = {}       # id -> start record
        self.fault_ends: dict = {}         # id -> end record
        self.last_t = 0.0


# Every anomaly class, in the order the report lists them; each is a top-level list in check()'s result.
ANOMALIES = ("lost", "duplicates", "unexpected_polls", "aborted_reads", "inconsistent_offsets",
             "nonmonotonic_polls", "nonmonotonic_sends", "poll_skips", "double_completions",
             "commit_regressions")


def anomalies_of(result: dict) -> dict:
    """The anomaly lists of a check() result (or of its summary.json), by name."""
    return {name: result[name] for name in ANOMALIES}


def check(history: list[dict], min_acked: int = 1) -> dict:
    """Check a chaos history; return the verdict, counts, anomalies, fault recovery and timeline.

    The layout is result.json's (issue #13, explained in docs/CHAOS.md): each anomaly class is a
    top-level list, complete; the whole dict is JSON-serialisable. `valid` is False if an anomaly
    was found, the final read is not "ok", fewer than `min_acked` writes were acknowledged (a run
    that wrote nothing proves nothing), or some partition took no write after the last fault.
    """
    seen = _collect(history)
    anomalies = _anomalies(seen)
    partitions, windows = _partitions(seen), _fault_windows(seen)
    progress = _progress_after_heal(seen, partitions, windows)
    faults = _faults(seen, partitions, windows)
    enough_acked = len(seen.acked) >= min_acked
    return {
        "valid": (seen.final_read == "ok" and not any(anomalies.values()) and enough_acked
                  and progress["progress_after_heal"]),
        "seed": seen.meta.get("seed"), "duration_s": seen.meta.get("duration_s"),
        "final_read": seen.final_read,
        "acked_writes": len(seen.acked), "min_acked": min_acked, "enough_acked": enough_acked,
        "sends": _send_counts(seen),
        "reads": {"polls": len(seen.polls), "records_polled": sum(len(poll[-1]) for poll in seen.polls),
                  "final_records": len(seen.final_records)},
        **anomalies,
        # Acknowledged writes no live poll saw: information, not a violation (the final read decides).
        "unseen": len(seen.acked.keys() - seen.polled_values),
        "partitions": partitions,
        **progress,
        "faults": faults,
        "faults_by_kind": _count_by_kind(faults),
        **_failover_summary(faults),
        "timeline": _timeline(seen),
    }


def _anomalies(seen: _Collected) -> dict:
    """Every anomaly class; without a final read, the classes that need it stay empty."""
    final_ok = seen.final_read == "ok"
    final, extra, acked_extra = _bindings(seen)
    final_at = {(partition, offset): value for partition, offset, value in final}
    final_values = set(map(_VALUE, final))
    nonmonotonic_polls, poll_skips = _poll_order_anomalies(
        seen, _offsets_by_partition(final_at) if final_ok else None)
    return {
        # Jepsen "lost-write": a value known to be written (acknowledged, or observed by a poll,
        # which Jepsen counts as having happened however its send ended) that the healed log lacks.
        "lost": _lost(seen, final_values) if final_ok else [],
        # Jepsen "duplicate": one value at more than one position (a retry the idempotent
        # producer should have deduplicated), across acknowledgements, polls and the final read.
        "duplicates": _duplicates(final, extra, final_values),
        # Jepsen's "unexpected" reads: a value read that no producer sent, or read before its
        # send was invoked (corruption, a record from another run, a harness bug).
        "unexpected_polls": _unexpected_polls(seen),
        # Jepsen "aborted-read": the send definitely failed, yet the value was read.
        "aborted_reads": [value for value in seen.failed
                          if value in seen.first_read and value not in seen.acked],
        "inconsistent_offsets": _inconsistent_offsets(final, extra, acked_extra, final_at, final_ok),
        # Jepsen "nonmonotonic-poll" and "poll-skip": a consumer that reads from offset 0 without
        # seeking must see each partition's offsets strictly increasing and without holes that
        # the final read fills.
        "nonmonotonic_polls": nonmonotonic_polls,
        "nonmonotonic_sends": _nonmonotonic_sends(seen),
        "poll_skips": poll_skips,
        # One send completed more than once (ok then fail, fail then ok, ok twice): the client
        # told its caller two stories, so at least one was false.
        "double_completions": [{"value": value, "process": completions[0][1],
                                "completions": [kind for kind, _process in completions]}
                               for value, completions in seen.completions.items()],
        "commit_regressions": _commit_regressions(seen.commits),
    }


def _lost(seen: _Collected, final_values: set) -> list:
    # Known written: acknowledged, or observed by a poll, which Jepsen counts as having happened
    # however its send ended. A value polled that nobody sent is unexpected, not lost.
    lost = [value for value in seen.acked if value not in final_values]
    polled_only = seen.polled_values - final_values - seen.acked.keys()
    lost += sorted((value for value in polled_only if value in seen.invoked or value in seen.first_completion),
                   key=lambda value: seen.first_read[value][0])
    return lost


def _send_counts(seen: _Collected) -> dict:
    completed = seen.first_completion
    failed = [value for value, kind in completed.items() if kind != "ok" and value not in seen.acked]
    definite = sum(1 for value in failed if completed[value] == "fail")
    uncompleted = sum(1 for value in seen.invoked if value not in completed)
    return {"invoked": len(seen.invoked), "ok": len(seen.acked), "fail": definite,
            # A send with no completion when the run stopped may or may not have been written.
            "info": len(failed) - definite + uncompleted}


def _collect(history: list[dict]) -> _Collected:
    seen = _Collected()
    last_t = 0.0
    for index, record in enumerate(history):
        t = record.get("t", 0.0)
        if t > last_t:
            last_t = t
        kind, f = record["type"], record.get("f")
        if f == "send":
            if kind == "invoke":
                seen.invoked[record["value"]] = (index, t, record.get("process"))
            else:
                _collect_completion(seen, record, kind, index, t)
        elif f == "poll" and kind == "ok":
            _collect_read(seen, record, index, t)
            seen.polls.append((record["process"], index, t, record["records"]))
            seen.polled_values.update(map(_VALUE, record["records"]))
        elif f == "commit" and kind == "ok":
            seen.commits.append((record["process"], index, t, record["group"], record["offsets"]))
        elif f == "commit" and record.get("offsets"):
            seen.failed_commits.append((index, record["group"], record["offsets"]))
        elif kind == "assign":
            seen.assigns.append((record["process"], index, record["group"], record["partitions"]))
        elif f == "final-read":
            # The last final read counts: a runner that retries one logs each attempt.
            seen.final_read = "ok" if kind == "ok" else "failed"
            seen.final_records = record.get("records", []) if kind == "ok" else []
            if kind == "ok":
                _collect_read(seen, record, index, t)
        elif kind == "meta":
            seen.meta = record
        elif kind == "nemesis":
            (seen.fault_starts if record["phase"] == "start" else seen.fault_ends)[record["id"]] = record
    seen.last_t = last_t
    return seen


def _collect_read(seen: _Collected, record: dict, index: int, t: float) -> None:
    first_read, where = seen.first_read, (index, record.get("process"), t)
    for _partition, _offset, value in record["records"]:
        if value not in first_read:
            first_read[value] = where


def _collect_completion(seen: _Collected, record: dict, kind: str, index: int, t: float) -> None:
    value = record["value"]
    first = seen.first_completion.get(value)
    if first is None:
        seen.first_completion[value] = kind
    else:  # a second completion: rare, so kept apart from the one-completion path
        seen.completions.setdefault(value, [(first, record.get("process"))]).append((kind, record.get("process")))
    if kind == "ok":
        seen.ok_times_s.append(t)
        seen.acked[value] = None
        # An offset of -1 means acknowledged without a position (an idempotent retry the broker
        # knew was written, too long ago to say where): the value is checked, the position not.
        offset = record.get("offset")
        seen.acks.append((value, record.get("process"), index, t, record.get("partition"),
                          offset if offset is not None and offset >= 0 else None))
    else:
        seen.failed_times_s.append(t)
        if kind == "fail":
            seen.failed.append(value)


def _offsets_by_partition(final_at: dict) -> dict:
    """partition -> sorted offsets present in the final read."""
    offsets: dict = {}
    for partition, offset in final_at:
        offsets.setdefault(partition, []).append(offset)
    for partition_offsets in offsets.values():
        partition_offsets.sort()
    return offsets


def _bindings(seen: _Collected) -> tuple[set, set, set]:
    """The distinct (partition, offset, value) bindings of the final read; those the polls and the
    acknowledgements add to it; and those the acknowledgements alone add. Most bindings are
    reported several times (acked, polled, read at the end), and in a clean run the two added sets
    are empty, so the position checks below look only at what the final read does not confirm."""
    final = set(map(tuple, seen.final_records))
    acked = {binding for binding in map(_ACK_BINDING, seen.acks) if binding[1] is not None}
    observed = set(acked)
    for *_where, records in seen.polls:
        observed.update(map(tuple, records))
    return final, observed - final, acked - final


def _repeated(items) -> set:
    return {item for item, count in Counter(items).items() if count > 1}


def _duplicates(final: set, extra: set, final_values: set) -> list:
    # A value at two positions has both in the final read, both among the extra bindings, or one
    # in each; the first needs counting only when the final read has fewer values than bindings.
    suspects = _repeated(map(_VALUE, extra))
    suspects.update(value for _partition, _offset, value in extra if value in final_values)
    if len(final_values) != len(final):
        suspects |= _repeated(map(_VALUE, final))
    if not suspects:
        return []
    positions: dict = {}
    for partition, offset, value in chain(final, extra):
        if value in suspects:
            positions.setdefault(value, []).append([partition, offset])
    found = [{"value": value, "positions": sorted(at)} for value, at in positions.items()]
    return sorted(found, key=lambda duplicate: duplicate["positions"][0])


def _unexpected_polls(seen: _Collected) -> list:
    unexpected = []
    for value, (index, process, t) in seen.first_read.items():
        invoke = seen.invoked.get(value)
        if invoke is None or index < invoke[0]:
            unexpected.append({"value": value, "process": process, "t": t,
                               "invoked_t": invoke[1] if invoke is not None else None})
    return unexpected


def _inconsistent_offsets(final: set, extra: set, acked_extra: set, final_at: dict, final_ok: bool) -> list:
    """Jepsen "inconsistent-offsets": one (partition, offset) bound to more than one value across
    the final read, the acknowledgements and the polls; and, with a final read, an acknowledged
    position the final read does not hold at all (the log lost an offset it promised). Each lists
    the final read's value first (None: it holds nothing there), then the others sorted."""
    # As for duplicates: two values at a position are both in the final read, both extra, or one each.
    suspects = _repeated(map(_POSITION, extra))
    suspects.update((partition, offset) for partition, offset, _value in extra if (partition, offset) in final_at)
    if len(final_at) != len(final):
        suspects |= _repeated(map(_POSITION, final))
    if final_ok:
        suspects.update((partition, offset) for partition, offset, _value in acked_extra
                        if (partition, offset) not in final_at)
    if not suspects:
        return []
    values_at: dict = {}
    for partition, offset, value in chain(final, extra):
        if (partition, offset) in suspects:
            values_at.setdefault((partition, offset), set()).add(value)
    found = []
    for position in sorted(suspects):
        values = values_at[position]
        leading = [final_at.get(position)] if final_ok else []
        values.difference_update(leading)
        found.append({"partition": position[0], "offset": position[1], "values": leading + sorted(values, key=str)})
    return found


def _poll_order_anomalies(seen: _Collected, final_offsets: dict | None) -> tuple[list, list]:
    """The nonmonotonic_polls and poll_skips entries; skips need the final read (None = none).

    A consumer reads each partition in lanes. One that assigned itself every partition (no
    assign record) seeks each to 0 before its first poll, so its first offset is checked against
    a virtual previous offset of -1: starting later skips offsets 0, 1, ... A group member
    starts a new lane whenever the group gives it a partition (an assign record), at the
    group's committed offset: its first read there is checked against the highest commit
    recorded before that read, counting failed ones too (a commit that timed out, or whose
    coordinator lost its leadership, may still have been applied). Starting lower re-reads,
    which at-least-once allows; starting higher skips."""
    events = sorted([(index, "poll", (process, records)) for process, index, _t, records in seen.polls]
                    + [(index, "commit", (group, offsets)) for _process, index, _t, group, offsets in seen.commits]
                    + [(index, "commit", (group, offsets)) for index, group, offsets in seen.failed_commits]
                    + [(index, "assign", (process, group, partitions))
                       for process, index, group, partitions in seen.assigns], key=lambda event: event[0])
    nonmonotonic_polls, poll_skips = [], []
    previous_offset: dict = {}  # (process, partition) -> last offset polled in its lane
    fresh: dict = {}            # (process, partition) -> group: a lane given by the group, not read yet
    committed: dict = {}        # (group, partition) -> highest offset a commit so far may have stored
    for _index, kind, what in events:
        if kind == "commit":
            group, offsets = what
            for partition, offset in offsets:
                committed[(group, partition)] = max(committed.get((group, partition), 0), offset)
            continue
        if kind == "assign":
            process, group, partitions = what
            for partition in partitions:
                fresh[(process, partition)] = group
            continue
        process, records = what
        for partition, offset, _value in records:
            lane = (process, partition)
            if lane in fresh:
                previous = committed.get((fresh.pop(lane), partition), 0) - 1
                previous_offset[lane] = offset
                if offset <= previous:
                    continue  # a re-read from below the last commit
            else:
                previous = previous_offset.get(lane, -1)
                previous_offset[lane] = offset
            if offset <= previous:
                nonmonotonic_polls.append(
                    {"process": process, "partition": partition, "previous": previous, "offset": offset})
            elif offset > previous + 1 and final_offsets is not None:
                offsets = final_offsets.get(partition, [])
                missed = offsets[bisect_right(offsets, previous):bisect_left(offsets, offset)]
                if missed:
                    poll_skips.append(
                        {"process": process, "partition": partition, "previous": previous,
                         "offset": offset, "missed": [[partition, o] for o in missed]})
    return nonmonotonic_polls, poll_skips


def _nonmonotonic_sends(seen: _Collected) -> list:
    """Jepsen "nonmonotonic-send", for one producer and partition: if send A was acknowledged
    before send B was invoked, A's offset must be below B's. Sends in flight together are not
    ordered by this (a producer with several in flight may have them written in any order)."""
    lanes: dict = {}   # (process, partition) -> its acks that named an offset, in ack order
    for ack in seen.acks:
        if ack[5] is not None:
            lanes.setdefault((ack[1], ack[4]), []).append(ack)
    found = []
    for (process, partition), acks in lanes.items():
        # A send acknowledged before B was invoked was also acknowledged before B was, so offsets
        # that rise in ack order leave nothing to find: the usual case, one pass.
        if any(earlier[5] >= later[5] for earlier, later in zip(acks, acks[1:])):
            found += _nonmonotonic_in_lane(seen, process, partition, acks)
    return found


def _nonmonotonic_in_lane(seen: _Collected, process, partition, acks: list) -> list:
    # Walk the sends in invoke order while a cursor walks them in ack order, keeping the highest
    # offset acknowledged before the current invoke.
    sends = sorted((seen.invoked[value][0], value, offset) for value, _process, _index, _t, _partition, offset in acks
                   if value in seen.invoked)
    found = []
    cursor, highest = 0, None
    for invoke_index, value, offset in sends:
        while cursor < len(acks) and acks[cursor][2] < invoke_index:
            if highest is None or acks[cursor][5] > highest[5]:
                highest = acks[cursor]
            cursor += 1
        if highest is not None and highest[5] >= offset:
            found.append({"process": process, "partition": partition, "value": value, "offset": offset,
                          "earlier_value": highest[0], "earlier_offset": highest[5]})
    return found


def _commit_regressions(commits: list) -> list:
    """A group's committed offset for a partition going down between successive ok commits (in
    completion order). A correct member starts where the last commit left off, even one that took
    the partition over from another member, so it never commits less."""
    committed: dict = {}   # (group, partition) -> (offset, process) of the last ok commit
    found = []
    for process, _index, t, group, offsets in commits:
        for partition, offset in offsets:
            previous = committed.get((group, partition))
            if previous is not None and offset < previous[0]:
                found.append({"group": group, "partition": partition, "previous": previous[0],
                              "previous_process": previous[1], "offset": offset, "process": process, "t": t})
            committed[(group, partition)] = (offset, process)
    return found


def _partitions(seen: _Collected) -> list:
    """The topic's partitions: the meta record's count (or list), else every partition the history names."""
    named = seen.meta.get("partitions")
    if isinstance(named, int):
        return list(range(named))
    if named is not None:
        return sorted(named)
    found = {ack[4] for ack in seen.acks if ack[4] is not None}
    found.update(partition for partition, _offset, _value in seen.final_records)
    for *_where, records in seen.polls:
        found.update(partition for partition, _offset, _value in records)
    return sorted(found)


def _fault_windows(seen: _Collected) -> list:
    """(id, start record, end_t) of each fault; one still active when the run stopped ends with
    the history, so nothing after it can count as recovery."""
    return [(fault_id, start, seen.fault_ends[fault_id]["t"] if fault_id in seen.fault_ends else seen.last_t)
            for fault_id, start in seen.fault_starts.items()]


def _progress_after_heal(seen: _Collected, partitions: list, windows: list) -> dict:
    """Every partition must accept a write (an ok completes) after the last fault ended; with no
    faults, at some point in the run. A partition that never does is stuck, whatever else passed."""
    healed_t = max((end_t for _id, _start, end_t in windows), default=0.0)
    last_ok_t: dict = {}
    for _value, _process, _index, t, partition, _offset in seen.acks:
        if t > last_ok_t.get(partition, float("-inf")):
            last_ok_t[partition] = t
    stalled = [p for p in partitions if last_ok_t.get(p, float("-inf")) <= healed_t]
    return {"progress_after_heal": not stalled, "stalled_after_heal": stalled, "healed_t": healed_t}


def _first_ok_after(seen: _Collected) -> dict:
    """partition -> (invoke times, ok time of the earliest-completing send invoked at or after
    each): sends sorted by invoke time, with a suffix minimum of their ok times, so "the first ok
    of a send invoked after t" is one bisection."""
    sends: dict = {}
    for value, _process, _index, ok_t, partition, _offset in seen.acks:
        invoke = seen.invoked.get(value)
        if invoke is not None and partition is not None:
            sends.setdefault(partition, []).append((invoke[1], ok_t))
    lookup = {}
    for partition, timed in sends.items():
        timed.sort()
        earliest_ok, suffix = float("inf"), [0.0] * len(timed)
        for i in range(len(timed) - 1, -1, -1):
            earliest_ok = min(earliest_ok, timed[i][1])
            suffix[i] = earliest_ok
        lookup[partition] = ([invoke_t for invoke_t, _ok_t in timed], suffix)
    return lookup


def _failover_ms(start_t: float, partition, first_ok_after: dict):
    """Time from the fault's start to the first ok of a send to the partition invoked after it
    started (Jepsen's time to recovery); None if no such send ever succeeded. A send invoked
    earlier is not counted: its ok may be an acknowledgement that was already on its way."""
    invoke_times, earliest_ok = first_ok_after.get(partition, ([], []))
    i = bisect_left(invoke_times, start_t)
    return round((earliest_ok[i] - start_t) * 1000, 3) if i < len(invoke_times) else None


def _faults(seen: _Collected, partitions: list, windows: list) -> list:
    """Each fault with whether producers and consumers made progress after it ended, and the
    failover time of each partition it touched (the start record's "partitions"; all if absent)."""
    faults = []
    poll_times_s = sorted(t for _process, _index, t, _records in seen.polls)
    ok_times_s = sorted(seen.ok_times_s)
    first_ok_after = _first_ok_after(seen) if windows else {}   # a per-partition index: only if needed
    for fault_id, start, end_t in windows:
        next_ok = bisect_right(ok_times_s, end_t)
        affected = start.get("partitions", partitions)
        failover = [[p, _failover_ms(start["t"], p, first_ok_after)] for p in affected]
        faults.append({
            "id": fault_id, "f": start["f"], "target": start.get("target"),
            "start_t": start["t"], "end_t": end_t,
            "producer_progress": next_ok < len(ok_times_s),
            "consumer_progress": bisect_right(poll_times_s, end_t) < len(poll_times_s),
            "next_ok_after_s": ok_times_s[next_ok] - end_t if next_ok < len(ok_times_s) else None,
            "partitions": list(affected), "failover_ms": failover,
            "failover_ms_max": max((ms for _p, ms in failover if ms is not None), default=None),
        })
    faults.sort(key=lambda fault: (fault["start_t"], str(fault["id"])))
    return faults


def _failover_summary(faults: list) -> dict:
    """p50 (nearest rank) and max over every (fault, partition) pair that recovered, and how
    many never did (no send invoked after the fault's start succeeded on that partition)."""
    recovered = sorted(ms for fault in faults for _p, ms in fault["failover_ms"] if ms is not None)
    unrecovered = sum(1 for fault in faults for _p, ms in fault["failover_ms"] if ms is None)
    return {"failover_ms_p50": recovered[(len(recovered) - 1) // 2] if recovered else None,
            "failover_ms_max": recovered[-1] if recovered else None,
            "failover_unrecovered": unrecovered}


def _count_by_kind(faults: list) -> dict:
    counts: dict = {}
    for fault in faults:
        counts[fault["f"]] = counts.get(fault["f"], 0) + 1
    return counts


def _timeline(seen: _Collected) -> dict:
    """Per-second counts from t=0 to the last record; a send without a completion has no time."""
    bucket_count = int(seen.last_t // TIMELINE_BUCKET_S) + 1

    def buckets(timed_counts):
        counts = [0] * bucket_count
        for t, count in timed_counts:
            counts[min(int(t // TIMELINE_BUCKET_S), bucket_count - 1)] += count
        return counts

    # The slowest acknowledgement completing in each second (invoke to ok), in milliseconds.
    slowest_ms = [0.0] * bucket_count
    for value, _process, _index, t, _partition, _offset in seen.acks:
        invoked = seen.invoked.get(value)
        if invoked is not None:
            bucket = min(int(t // TIMELINE_BUCKET_S), bucket_count - 1)
            slowest_ms[bucket] = max(slowest_ms[bucket], round((t - invoked[1]) * 1000, 1))
    return {"bucket_s": TIMELINE_BUCKET_S,
            "max_ack_latency_ms": slowest_ms,
            "ok_sends": buckets((t, 1) for t in seen.ok_times_s),
            "failed_sends": buckets((t, 1) for t in seen.failed_times_s),
            "polled_records": buckets((t, len(records)) for _process, _index, t, records in seen.polls)}
