"""The chaos history checker: from a run's history, the verdict, the anomalies and the fault recovery.

It is a pure function of the history (a list of the dicts the runner logged, format in
docs/CHAOS.md), so a saved JSONL file can be re-checked and every anomaly class can be tested
with a small hand-written history. The anomaly names are Jepsen's (its Kafka workload), so a
reader who knows Jepsen knows what each means. One pass over the history collects what each
process did; the anomalies are then set operations and per-partition lookups, never a scan
per record, so a few hundred thousand records check in well under a second.

The final read is the ground truth: it is one complete read of every partition after all faults
are healed. Without it (missing or failed) the run is invalid, and the anomalies that need it
(lost, duplicate, poll_skip) are left empty rather than guessed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

TIMELINE_BUCKET_S = 1.0


class _Collected:
    """What one pass over the history found, grouped for the anomaly checks."""

    def __init__(self):
        self.meta: dict = {}               # the meta record: run settings (seed, duration_s, topic, partitions)
        self.invoked: dict = {}            # value -> None, in invoke order (a dict keeps the order)
        self.outcome: dict = {}            # value -> "ok" | "fail" | "info", the first completion
        self.ok_position: dict = {}        # value -> (partition, offset) the ok reported
        self.ok_times_s: list = []
        self.failed_times_s: list = []     # fail and info completions
        self.polled_values: dict = {}      # value -> None, in first-read order
        self.polls: list = []              # (process, t, records) of every ok poll, in order
        self.final_read = "missing"
        self.final_records: list = []
        self.fault_starts: dict = {}       # id -> start record
        self.fault_end_t: dict = {}        # id -> end t
        self.last_t = 0.0


# Every anomaly class, in the order the report lists them; each is a top-level list in check()'s result.
ANOMALIES = ("lost", "duplicates", "unexpected", "aborted_reads", "inconsistent_offsets",
             "nonmonotonic_polls", "poll_skips")


def anomalies_of(result: dict) -> dict:
    """The anomaly lists of a check() result (or of its summary.json), by name."""
    return {name: result[name] for name in ANOMALIES}


def check(history: list[dict]) -> dict:
    """Check a chaos history; return the verdict, counts, anomalies, fault recovery and timeline.

    The layout is result.json's (issue #13, explained in docs/CHAOS.md): each anomaly class is a
    top-level list, complete; the whole dict is JSON-serialisable. `valid` is False iff an
    anomaly was found or the final read is not "ok".
    """
    seen = _collect(history)
    final_offsets = _final_positions(seen.final_records)
    final_values = {}
    for partition, offset, value in seen.final_records:
        final_values.setdefault(value, []).append([partition, offset])
    final_ok = seen.final_read == "ok"

    ok_values = [v for v, outcome in seen.outcome.items() if outcome == "ok"]
    read_values = dict(seen.polled_values)
    read_values.update(dict.fromkeys(final_values))
    nonmonotonic_polls, poll_skips = _poll_order_anomalies(seen.polls, final_offsets if final_ok else None)
    meta = seen.meta
    anomalies = {
        # Jepsen "lost-write": the send was acknowledged, yet the healed log does not hold the value.
        "lost": [v for v in ok_values if v not in final_values] if final_ok else [],
        # Jepsen "duplicate": one value written at more than one position (a retry that the
        # idempotent producer should have deduplicated).
        "duplicates": [{"value": v, "positions": positions}
                      for v, positions in final_values.items() if len(positions) > 1],
        # Jepsen "unexpected-read": a value read back (by a poll or the final read) that no
        # producer ever invoked: corruption, or a record from another run.
        "unexpected": [v for v in read_values if v not in seen.invoked],
        # Jepsen "aborted-read": the send definitely failed, yet the value was read.
        "aborted_reads": [v for v in read_values if seen.outcome.get(v) == "fail"],
        # Jepsen "inconsistent-offsets": one (partition, offset) bound to more than one value
        # across the polls, the final read and the positions that ok sends reported.
        "inconsistent_offsets": _inconsistent_offsets(seen),
        # Jepsen "nonmonotonic-poll" and "poll-skip": a consumer that reads from offset 0 without
        # seeking must see each partition's offsets strictly increasing and without holes that
        # the final read fills.
        "nonmonotonic_polls": nonmonotonic_polls,
        "poll_skips": poll_skips,
    }
    faults = _faults(seen)
    info_count = sum(1 for outcome in seen.outcome.values() if outcome == "info")
    uncompleted = sum(1 for v in seen.invoked if v not in seen.outcome)
    return {
        "valid": final_ok and not any(anomalies.values()),
        "seed": meta.get("seed"), "duration_s": meta.get("duration_s"),
        "final_read": seen.final_read,
        "acked_writes": len(ok_values),
        "sends": {"invoked": len(seen.invoked), "ok": len(ok_values),
                  "fail": sum(1 for outcome in seen.outcome.values() if outcome == "fail"),
                  # A send with no completion when the run stopped may or may not have been written.
                  "info": info_count + uncompleted},
        "reads": {"polls": len(seen.polls), "records_polled": sum(len(records) for *_, records in seen.polls),
                  "final_records": len(seen.final_records)},
        **anomalies,
        # Acknowledged writes no live poll saw: information, not a violation (the final read decides).
        "unseen": sum(1 for v in ok_values if v not in seen.polled_values),
        "faults": faults,
        "faults_by_kind": _count_by_kind(faults),
        "timeline": _timeline(seen),
    }


def _collect(history: list[dict]) -> _Collected:
    seen = _Collected()
    for record in history:
        t = record.get("t", 0.0)
        seen.last_t = max(seen.last_t, t)
        kind, f = record.get("type"), record.get("f")
        if f == "send":
            _collect_send(seen, record, kind, t)
        elif f == "poll" and kind == "ok":
            records = record["records"]
            seen.polls.append((record["process"], t, records))
            for _partition, _offset, value in records:
                seen.polled_values.setdefault(value, None)
        elif f == "final-read":
            # The last final read counts: a runner that retries one logs each attempt.
            seen.final_read = "ok" if kind == "ok" else "failed"
            seen.final_records = record.get("records", []) if kind == "ok" else []
        elif kind == "meta":
            seen.meta = record
        elif kind == "nemesis":
            if record["phase"] == "start":
                seen.fault_starts[record["id"]] = record
            else:
                seen.fault_end_t[record["id"]] = t
    return seen


def _collect_send(seen: _Collected, record: dict, kind: str, t: float) -> None:
    value = record["value"]
    if kind == "invoke":
        seen.invoked[value] = None
        return
    if value in seen.outcome:
        return  # exactly one completion per send: a second one is a harness bug, not the log's
    seen.outcome[value] = kind
    if kind == "ok":
        seen.ok_times_s.append(t)
        # An offset of -1 means acknowledged without a position (an idempotent retry the broker
        # knew was written, too long ago to say where): the value is checked, the position not.
        if record.get("partition") is not None and record.get("offset") is not None and record["offset"] >= 0:
            seen.ok_position[value] = (record["partition"], record["offset"])
    else:
        seen.failed_times_s.append(t)


def _final_positions(final_records: list) -> dict:
    """partition -> sorted offsets present in the final read."""
    offsets_by_partition: dict = {}
    for partition, offset, _value in final_records:
        offsets_by_partition.setdefault(partition, []).append(offset)
    for offsets in offsets_by_partition.values():
        offsets.sort()
    return offsets_by_partition


def _inconsistent_offsets(seen: _Collected) -> list:
    first_value: dict = {}   # (partition, offset) -> the first value seen there
    conflicts: dict = {}     # (partition, offset) -> every distinct value seen there, first one first

    def observe(partition, offset, value):
        position = (partition, offset)
        first = first_value.setdefault(position, value)
        if first != value:
            values = conflicts.setdefault(position, [first])
            if value not in values:
                values.append(value)

    # The final read goes first so that a conflict lists the value the log holds first.
    for partition, offset, value in seen.final_records:
        observe(partition, offset, value)
    for value, (partition, offset) in seen.ok_position.items():
        observe(partition, offset, value)
    for _process, _t, records in seen.polls:
        for partition, offset, value in records:
            observe(partition, offset, value)
    return [{"partition": p, "offset": o, "values": conflicts[(p, o)]} for p, o in sorted(conflicts)]


def _poll_order_anomalies(polls: list, final_offsets: dict | None) -> tuple[list, list]:
    """The nonmonotonic_poll and poll_skip entries; skips need the final read (None = none)."""
    # Each consumer seeks every partition to 0 before its first poll, so its first offset is
    # checked against a virtual previous offset of -1: starting later skips offsets 0, 1, ...
    nonmonotonic_polls, poll_skips = [], []
    previous_offset: dict = {}   # (process, partition) -> last offset polled
    for process, _t, records in polls:
        for partition, offset, _value in records:
            previous = previous_offset.get((process, partition), -1)
            previous_offset[(process, partition)] = offset
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


def _faults(seen: _Collected) -> list:
    """Each fault with whether producers and consumers made progress after it ended."""
    faults = []
    poll_times_s = sorted(t for _process, t, _records in seen.polls)
    ok_times_s = sorted(seen.ok_times_s)
    for fault_id, start in seen.fault_starts.items():
        # A fault still active when the run stopped ends with the history.
        end_t = seen.fault_end_t.get(fault_id, seen.last_t)
        next_ok = bisect_right(ok_times_s, end_t)
        faults.append({
            "id": fault_id, "f": start["f"], "target": start.get("target"),
            "start_t": start["t"], "end_t": end_t,
            "producer_progress": next_ok < len(ok_times_s),
            "consumer_progress": bisect_right(poll_times_s, end_t) < len(poll_times_s),
            "next_ok_after_s": ok_times_s[next_ok] - end_t if next_ok < len(ok_times_s) else None,
        })
    faults.sort(key=lambda fault: (fault["start_t"], str(fault["id"])))
    return faults


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

    return {"bucket_s": TIMELINE_BUCKET_S,
            "ok_sends": buckets((t, 1) for t in seen.ok_times_s),
            "failed_sends": buckets((t, 1) for t in seen.failed_times_s),
            "polled_records": buckets((t, len(records)) for _process, t, records in seen.polls)}
