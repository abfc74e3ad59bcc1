"""The transcript of a chaos run: a timeline a person can read, from the history.

    t=12.3s SIGKILL broker 2 (leader of chaos-0, chaos-2)
    t=12.9s broker 3 leads chaos-0, epoch 5
    t=13.6s kill #4 over: broker 2 answers again (1.3 s)

The leader lines come from LeaderWatcher, which asks the brokers every half second who leads
each partition and records only changes ("leader" records; the checker passes over them).
"""

from __future__ import annotations

import threading

LEADER_POLL_S = 0.5


class LeaderWatcher(threading.Thread):
    """Records {"type": "leader", "partition", "leader", "epoch"} whenever a partition's leader
    changes, as `leaders()` ({partition: (leader, epoch)}) reports it, until stopped."""

    def __init__(self, leaders, history):
        super().__init__(name="chaos-leader-watcher", daemon=True)
        self.leaders, self.history = leaders, history
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._known: dict = {}

    def run(self) -> None:
        while not self.stopping.wait(LEADER_POLL_S):
            try:
                now = self.leaders()
            except Exception:  # a broker down or the supervisor busy: asked again next time
                continue
            for partition in sorted(set(now) | set(self._known)):
                leader, epoch = now.get(partition, (None, None))
                if self._known.get(partition, (None, None)) != (leader, epoch):
                    self.history.add("leader", partition=partition, leader=leader, epoch=epoch)
            self._known = dict(now)


def write_transcript(records: list, result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(render_transcript(records, result))


def render_transcript(records: list, result: dict) -> str:
    topic = next((r.get("topic") for r in records if r["type"] == "meta"), "?")
    leaders: dict = {}  # partition -> leader, as the transcript has seen so far
    started: dict = {}  # fault id -> its start record
    lines = ["# Chaos run transcript", ""]
    for record in records:
        kind = record["type"]
        t = f"t={record['t']:.1f}s"
        if kind == "meta":
            lines.append(f"{t} run starts: seed {record.get('seed')}, {record.get('brokers')} brokers, "
                         f"{record.get('partitions')} partitions of {topic} at RF {record.get('replication_factor')}, "
                         f"acks={record.get('acks', 'all')}, faults {', '.join(record.get('faults', []))}")
        elif kind == "leader":
            leaders[record["partition"]] = record["leader"]
            name = f"{topic}-{record['partition']}"
            lines.append(f"{t} broker {record['leader']} leads {name}, epoch {record['epoch']}"
                         if record["leader"] is not None else f"{t} {name} has no leader")
        elif kind == "nemesis" and record["phase"] == "start":
            started[record["id"]] = record
            lines.append(f"{t} {describe_fault(record, leaders, topic)}")
        elif kind == "nemesis":
            began = started.get(record["id"])
            took = f" ({record['t'] - began['t']:.1f} s)" if began else ""
            lines.append(f"{t} {record['f']} #{record['id']} over{took}{_damage_text(record)}")
        elif kind == "healed":
            lines.append(f"{t} every fault healed and the cluster healthy again")
        elif kind in ("ok", "fail") and record.get("f") == "final-read":
            lines.append(f"{t} final read: {kind}" + (f" ({len(record['records'])} records)" if kind == "ok" else
                                                       f" ({record.get('error')})"))
    verdict = "PASS" if result.get("valid") else "FAIL"
    lines += ["", f"Verdict: **{verdict}**, {result.get('acked_writes', 0)} acknowledged writes; "
              f"failover p50 {result.get('failover_ms_p50')} ms, max {result.get('failover_ms_max')} ms."]
    return "\n".join(lines) + "\n"


def describe_fault(record: dict, leaders: dict, topic: str) -> str:
    """One line for a fault's start, with what its targets were doing."""
    kind, targets = record["f"], record.get("target", [])
    who = ", ".join(f"broker {b}{_role(b, leaders, topic)}" for b in targets)
    shape = record.get("shape")
    if kind in ("kill", "leader-kill", "controller-kill"):
        return f"SIGKILL {who}" + (" (the controller)" if kind == "controller-kill" else "")
    if kind == "pause":
        return f"SIGSTOP {who}"
    if kind == "partition":
        sides = " | ".join("{" + ", ".join(map(str, side)) + "}" for side in record.get("sides", []))
        if shape == "bridge":
            return f"partition, bridge: {sides}, only broker {record.get('bridge')} reaches both"
        if shape == "one-way":
            a, b = record.get("cut", targets)
            return f"partition, one-way: what broker {a} sends to broker {b} is lost"
        if shape == "clients":
            return f"partition: no client reaches {who}"
        return f"partition, {shape}: {sides}"
    if kind == "power-loss":
        return f"power cut: SIGKILL {who}, each cut back to what it had fsynced"
    if kind == "torn-write":
        return f"SIGKILL {who}, then tear the last batch of a segment"
    if kind == "corrupt":
        return f"SIGKILL {who}, then damage an older segment"
    if kind == "membership":
        return f"membership: add broker {record.get('added')}, move {topic}-{record.get('partitions', ['?'])[0]} onto it"
    return f"{kind} {who}"


def _role(broker: int, leaders: dict, topic: str) -> str:
    led = sorted(p for p, leader in leaders.items() if leader == broker)
    return f" (leader of {', '.join(f'{topic}-{p}' for p in led)})" if led else ""


def _damage_text(record: dict) -> str:
    damage = record.get("damage")
    if damage:
        return ": " + "; ".join(_one_damage(entry) for entry in damage)
    if "moved" in record:
        moved = record["moved"]
        return (f": partition {moved['partition']} moved {moved['from']} -> {moved['to']}"
                f", reassigned {record.get('reassigned')}, decommissioned {record.get('decommissioned')}")
    return ""


def _one_damage(entry: dict) -> str:
    if "files" in entry:  # a power cut: how much it took, not every file
        return f"broker {entry['broker']} lost {entry['bytes']} unsynced bytes in {len(entry['files'])} files"
    if len(entry) == 1:
        return f"broker {entry['broker']} had nothing to lose"
    return ", ".join(f"{k} {v}" for k, v in entry.items())
