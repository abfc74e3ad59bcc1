"""The nemesis: faults injected into a running cluster through its supervisor, one at a time.

Each fault is recorded as a start and an end (same id) in the history:
  kill       SIGKILL one broker; the supervisor restarts it. Ends when it answers again.
  pause      SIGSTOP one broker for a while, then SIGCONT: a process that is alive but silent.
  partition  cut one broker off from every other broker (both ways), then heal.
  torn-write SIGKILL one broker and keep it down, append 1-256 random bytes to the active segment
             of one of its partitions (what a crash in the middle of a write leaves behind),
             then start it again: recovery must cut the garbage off and lose nothing acknowledged.
             Ends when it answers again.
Faults are drawn from a seeded random.Random, so a run's schedule can be replayed with --seed.
Whatever happens, a fault that was started is ended: the run's final read needs a healed cluster.
"""

from __future__ import annotations

import os
import random
import threading
import time

from distlog.client.probe import ping

FAULT_KINDS = ("kill", "pause", "partition", "torn-write")
BROKER_BACK_TIMEOUT_S = 30.0  # a killed broker that is not answering by then is reported, not waited on


class Nemesis(threading.Thread):
    """Between faults it waits interval_s (drawn from a range); each fault lasts duration_s."""

    def __init__(self, control, history, broker_ids: list, faults=FAULT_KINDS, seed: int = 0,
                 interval_s=(2.0, 5.0), duration_s=(1.0, 3.0)):
        super().__init__(name="chaos-nemesis", daemon=True)
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown or not faults:
            raise ValueError(f"faults must be some of {', '.join(FAULT_KINDS)}; got {', '.join(faults) or 'none'}")
        if "partition" in faults and len(broker_ids) < 2:
            raise ValueError("a partition fault needs at least 2 brokers")
        self.control, self.history, self.broker_ids = control, history, list(broker_ids)
        self.data_dirs = {broker["id"]: broker["data_dir"] for broker in control.record["brokers"]}
        self.faults = tuple(faults)
        self.rng = random.Random(seed)
        self.interval_s, self.duration_s = interval_s, duration_s
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._next_id = 1

    def run(self) -> None:
        try:
            while not self.stopping.wait(self.rng.uniform(*self.interval_s)):
                self._one_fault(self.rng.choice(self.faults), self.rng.choice(self.broker_ids))
        except BaseException as error:  # the runner reports it; the cluster is healed either way
            self.error = error

    def _one_fault(self, kind: str, target: int) -> None:
        fault_id, self._next_id = self._next_id, self._next_id + 1
        self.history.add("nemesis", phase="start", id=fault_id, f=kind, target=[target])
        detail = {}
        try:
            if kind == "kill":
                self.control.kill(target)
            elif kind == "torn-write":
                self.control.kill(target, restart=False)  # returns once the process is gone
                detail = tear_a_segment_tail(self.data_dirs[target], self.rng)
                self.control.restart(target)
            elif kind == "pause":
                self.control.pause(target)
                self.stopping.wait(self.rng.uniform(*self.duration_s))
            else:
                others = [b for b in self.broker_ids if b != target]
                self.control.partition([[target], others])
                self.stopping.wait(self.rng.uniform(*self.duration_s))
        finally:
            if kind == "pause":
                self.control.resume(target)
            elif kind == "partition":
                self.control.heal()
            else:
                wait_until_answering(self.control, [target], BROKER_BACK_TIMEOUT_S)
            self.history.add("nemesis", phase="end", id=fault_id, f=kind, target=[target], **detail)


def tear_a_segment_tail(broker_data_dir: str, rng: random.Random) -> dict:
    """Append random bytes to the newest segment of a random partition of a stopped broker;
    returns {"file", "bytes"} for the history ({} if the broker holds no segment yet)."""
    topics_dir = os.path.join(broker_data_dir, "topics")
    try:
        partitions = sorted(entry.path for entry in os.scandir(topics_dir) if entry.is_dir())
    except FileNotFoundError:
        return {}
    if not partitions:
        return {}
    directory = rng.choice(partitions)
    segments = sorted(name for name in os.listdir(directory) if name.endswith(".log"))
    if not segments:
        return {}
    path = os.path.join(directory, segments[-1])
    garbage = rng.randbytes(rng.randint(1, 256))
    with open(path, "ab") as segment:
        segment.write(garbage)
    return {"file": os.path.relpath(path, broker_data_dir), "bytes": len(garbage)}


def heal_everything(control, broker_ids: list, timeout_s: float = BROKER_BACK_TIMEOUT_S) -> bool:
    """Resume paused brokers, heal every partition and wait until all answer; False if some did not."""
    for broker in control.status()["brokers"]:
        if broker["state"] == "paused":
            control.resume(broker["id"])
    control.heal()
    return wait_until_answering(control, broker_ids, timeout_s)


def wait_until_answering(control, broker_ids: list, timeout_s: float) -> bool:
    """Wait (with a deadline) until every broker in broker_ids is running and answers a ping."""
    deadline_s = time.monotonic() + timeout_s
    waiting = set(broker_ids)
    while waiting:
        for broker in control.status()["brokers"]:
            if broker["id"] in waiting and broker["state"] == "running" and ping(broker["address"], 0.5) is not None:
                waiting.discard(broker["id"])
        if waiting:
            if time.monotonic() >= deadline_s:
                return False
            time.sleep(0.1)  # polling a condition with a deadline, not a guess at how long it takes
    return True
