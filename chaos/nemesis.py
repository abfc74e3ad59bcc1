"""The nemesis: faults injected into a running cluster through its supervisor, one at a time.

Each fault is recorded as a start and an end (same id) in the history. The start names its
target brokers and the partitions of the workload's topic it touches (those the targets lead,
or the ones it damaged): the checker measures per partition how long until each accepted a
write again. The kinds:

  kill             SIGKILL a random broker; the supervisor restarts it. Ends when it answers again.
  leader-kill      the same, always the leader of some partition.
  controller-kill  the same, always the metadata controller.
  pause            SIGSTOP a broker for a while, then SIGCONT: alive but silent.
  partition        fault rules on the real transport, one shape drawn per fault: random halves,
                   the leader of a partition cut off from the others, a bridge (two sides that
                   reach only one broker between them), a one-way cut, or a broker that no client
                   can reach (while its peers still can). Healed after a while.
  torn-write       SIGKILL a broker, cut the newest segment of one of its partitions inside its last
                   batch (a write the crash tore), start it again.
  corrupt          SIGKILL one broker (a minority), flip a bit in or truncate an older segment,
                   start it again: corruption repair must restore it from the others.
  power-loss       SIGKILL one broker, or every broker at once, and cut each back to what it had
                   fsynced (disk_faults.cut_power), then start them again.
  membership       add a broker, move a partition onto it, decommission it again (its replicas move
                   back), remove it: the cluster ends as it started.

The schedule comes from a seeded random.Random: plan_faults() draws every fault's kind, shape,
picks and durations before anything about the cluster is known, so --seed replays it exactly;
a pick such as "the leader of partition 3" is resolved against the cluster when the fault
starts. Kinds go round in shuffled rounds, so a run of at least len(kinds) faults has each.
Whatever happens, a fault that was started is ended: the run's final read needs a healed cluster.
"""

from __future__ import annotations

import random
import threading
import time

from distlog.chaos import disk_faults
from distlog.client.probe import metadata, ping
from distlog.protocol.errors import DistlogError
from distlog.supervisor import cluster_file
from distlog.supervisor.control import ControlError
from distlog.supervisor.health import cluster_health, partition_leaders
from distlog.supervisor.probe import ask_every_broker
from distlog.transports.faults import CLIENTS

FAULT_KINDS = ("kill", "leader-kill", "controller-kill", "pause", "partition", "torn-write", "corrupt",
               "power-loss", "membership")
PARTITION_SHAPES = ("halves", "isolate-leader", "bridge", "one-way", "clients")
BROKER_BACK_TIMEOUT_S = 30.0  # a restarted broker that is not answering by then is reported, not waited on
MOVE_TIMEOUT_S = 60.0  # a reassignment or decommission that has not finished by then is reported
METADATA_TIMEOUT_S = 1.0
WHOLE_CLUSTER_POWER_LOSS = 0.3  # the share of power-loss faults that cut every broker at once


def plan_faults(rng: random.Random, kinds, count: int, interval_s=(1.0, 3.0), duration_s=(1.0, 3.0)):
    """Yield `count` fault plans: {"kind", "wait_s", "duration_s", "pick", "shape", "split",
    "whole_cluster", "disk_seed"}, every value drawn whatever the kind, so one seed gives one
    schedule. `pick` (0-1) chooses a broker or partition when the fault starts; `split` the
    sides of a partition."""
    kinds = tuple(kinds)
    rounds = []
    for _ in range(count):
        if not rounds:
            rounds = list(kinds)
            rng.shuffle(rounds)
        yield {"kind": rounds.pop(), "wait_s": rng.uniform(*interval_s), "duration_s": rng.uniform(*duration_s),
               "pick": rng.random(), "shape": rng.choice(PARTITION_SHAPES), "split": rng.random(),
               "whole_cluster": rng.random() < WHOLE_CLUSTER_POWER_LOSS, "disk_seed": rng.randrange(2**32)}


class Nemesis(threading.Thread):
    """Runs plan_faults() against the cluster until stopped; `admin` serves partition moves."""

    def __init__(self, control, history, topic: str, partitions: int, admin, faults=FAULT_KINDS, seed: int = 0,
                 interval_s=(1.0, 3.0), duration_s=(1.0, 3.0)):
        super().__init__(name="chaos-nemesis", daemon=True)
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown or not faults:
            raise ValueError(f"faults must be some of {', '.join(FAULT_KINDS)}; got {', '.join(faults) or 'none'}")
        self.control, self.history, self.admin = control, history, admin
        self.topic, self.partitions = topic, partitions
        if "partition" in faults and len(self._brokers()) < 2:
            raise ValueError("a partition fault needs at least 2 brokers")
        self.faults = tuple(faults)
        self.seed = seed
        self.interval_s, self.duration_s = interval_s, duration_s
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.started = 0
        self._next_id = 1

    def run(self) -> None:
        try:
            for plan in plan_faults(random.Random(self.seed), self.faults, 1_000_000, self.interval_s, self.duration_s):
                if self.stopping.wait(plan["wait_s"]):
                    return
                self._one_fault(plan)
        except BaseException as error:  # the runner reports it; the cluster is healed either way
            self.error = error

    # ------------------------------------------------------------------------------ one fault

    def _one_fault(self, plan: dict) -> None:
        kind = plan["kind"]
        brokers = self._brokers()
        leaders = self.leaders()
        fault_id, self._next_id = self._next_id, self._next_id + 1
        self.started += 1
        start = {"id": fault_id, "f": kind}
        end = {}
        healing = []  # what ends the fault, run whatever happened in between
        try:
            if kind in ("kill", "leader-kill", "controller-kill", "pause"):
                target = self._target_broker(kind, plan, brokers, leaders)
                self._start(start, [target], leaders)
                if kind == "pause":
                    self.control.pause(target)
                    healing.append(lambda: self.control.resume(target))
                    self.stopping.wait(plan["duration_s"])
                else:
                    self.control.kill(target)
                    healing.append(lambda: wait_until_answering(self.control, [target], BROKER_BACK_TIMEOUT_S))
            elif kind == "partition":
                self._partition(plan, brokers, leaders, start, healing)
            elif kind in ("torn-write", "corrupt", "power-loss"):
                self._disk_fault(kind, plan, brokers, leaders, start, end, healing)
            else:
                self._membership(plan, brokers, leaders, start, end)
        finally:
            for step in healing:
                step()
            if "target" in start:  # it got as far as starting (an error before that injected nothing)
                self.history.add("nemesis", phase="end", **start, **end)

    def _start(self, start: dict, targets: list, leaders: dict, partitions=None, **detail) -> None:
        """Record the fault's start: its targets and the partitions they lead (or `partitions`)."""
        if partitions is None:
            partitions = sorted(p for p, (leader, _) in leaders.items() if leader in targets)
        start.update(target=sorted(targets), partitions=partitions, **detail)
        self.history.add("nemesis", phase="start", **start)

    def _target_broker(self, kind: str, plan: dict, brokers: list, leaders: dict) -> int:
        if kind == "leader-kill" and leaders:
            partition = sorted(leaders)[int(plan["pick"] * len(leaders))]
            return leaders[partition][0]
        if kind == "controller-kill":
            controller = self.controller()
            if controller in brokers:
                return controller
        return brokers[int(plan["pick"] * len(brokers))]

    def _partition(self, plan, brokers, leaders, start, healing) -> None:
        shape = plan["shape"]
        if shape == "bridge" and len(brokers) < 3:
            shape = "one-way"
        picked = brokers[int(plan["pick"] * len(brokers))]
        if shape == "isolate-leader" and leaders:
            picked = leaders[sorted(leaders)[int(plan["pick"] * len(leaders))]][0]
        others = [b for b in brokers if b != picked]
        healing.append(self.control.heal)
        if shape == "halves":
            shuffled = random.Random(plan["disk_seed"]).sample(brokers, len(brokers))
            cut_at = 1 + int(plan["split"] * (len(brokers) - 1))
            sides = [sorted(shuffled[:cut_at]), sorted(shuffled[cut_at:])]
            # The smaller side cannot elect; what it led must move (equal sides: both stall).
            cut_off = min(sides, key=len) if len(sides[0]) != len(sides[1]) else brokers
            self._start(start, cut_off, leaders, shape=shape, sides=sides)
            self.control.partition(sides)
        elif shape == "isolate-leader":
            self._start(start, [picked], leaders, shape=shape, sides=[[picked], others])
            self.control.partition([[picked], others])
        elif shape == "bridge":
            # `picked` is the bridge: the others split in two sides that reach only it.
            cut_at = 1 + int(plan["split"] * (len(others) - 1))
            sides = [others[:cut_at], others[cut_at:]]
            affected = sorted(p for p, (leader, _) in leaders.items() if leader != picked)
            self._start(start, others, leaders, partitions=affected, shape=shape, bridge=picked, sides=sides)
            self.control.partition(sides)
        elif shape == "one-way":
            to = others[int(plan["split"] * len(others))]
            self._start(start, [picked, to], leaders, shape=shape, cut=[picked, to])
            self.control.cut([(picked, to)])  # what `picked` sends to `to` is lost; the other way works
        else:  # clients: the broker and its peers talk on, but no client reaches it
            self._start(start, [picked], leaders, shape=shape)
            self.control.request({"op": "set-faults", "broker_id": picked,
                                  "rules": {"drop_to": [CLIENTS], "drop_from": [CLIENTS]}})
        self.stopping.wait(plan["duration_s"])

    def _disk_fault(self, kind, plan, brokers, leaders, start, end, healing) -> None:
        rng = random.Random(plan["disk_seed"])
        targets = [brokers[int(plan["pick"] * len(brokers))]]
        if kind == "power-loss" and plan["whole_cluster"]:
            targets = list(brokers)
        data_dirs = self._data_dirs()
        damaged = []

        def start_again():
            for target in targets:
                self.control.restart(target)
            wait_until_answering(self.control, targets, BROKER_BACK_TIMEOUT_S)

        healing.append(start_again)
        self._start(start, targets, leaders, partitions=list(range(self.partitions)) if len(targets) > 1 else None)
        for target in targets:  # all down before any disk is touched: a power cut hits them at once
            self.control.kill(target, restart=False)
        for target in targets:
            if kind == "torn-write":
                detail = disk_faults.tear_batch(data_dirs[target], rng)
            elif kind == "corrupt":
                detail = disk_faults.corrupt_older_segment(data_dirs[target], rng)
            else:
                detail = disk_faults.cut_power(data_dirs[target])
            damaged.append({"broker": target, **detail})
        end["damage"] = damaged

    def _membership(self, plan, brokers, leaders, start, end) -> None:
        """Add a broker, move one partition onto it, decommission it (its replicas move back to
        the others) and remove it."""
        partition = int(plan["pick"] * self.partitions)
        before = set(brokers)
        added = max(set(b["id"] for b in self.control.add_broker()["brokers"]) - before)
        self._start(start, [added], leaders, partitions=[partition], added=added)
        try:
            wait_until_answering(self.control, [added], BROKER_BACK_TIMEOUT_S)
            wait_for_condition(lambda: added in self._registered(), BROKER_BACK_TIMEOUT_S)
            replicas = self.admin.describe_topic(self.topic)["partitions"][partition]["replicas"]
            moved_to = [*replicas[1:], added]
            self.admin.reassign_partition(self.topic, partition, moved_to)
            end["moved"] = {"partition": partition, "from": replicas, "to": moved_to}
            end["reassigned"] = wait_for_condition(lambda: self._placed(partition, moved_to), MOVE_TIMEOUT_S)
        finally:
            # Only once the move is over: a partition that is moving refuses to move again.
            self.admin.decommission_broker(added)
            end["decommissioned"] = wait_for_condition(lambda: added not in self._registered(), MOVE_TIMEOUT_S)
            if end["decommissioned"]:
                self.control.remove_broker(added)
            # else it still holds replicas: taking it away would leave them under-replicated for
            # good; it stays, the heal waits for its move, and the transcript shows the fault's
            # end with decommissioned False.

    # -------------------------------------------------------------------------- cluster state

    def _brokers(self) -> list:
        return sorted(b["id"] for b in self.control.status()["brokers"])

    def _data_dirs(self) -> dict:
        """{broker id: data dir}, from the cluster record as it is now (brokers come and go)."""
        return {b["id"]: b["data_dir"] for b in cluster_file.load(self.control.data_dir)["brokers"]}

    def _answers(self) -> dict:
        addresses = {b["id"]: b["address"] for b in self.control.status()["brokers"] if b["state"] == "running"}
        return ask_every_broker(metadata, addresses, METADATA_TIMEOUT_S)

    def _registered(self) -> set:
        """The brokers the cluster metadata lists (a decommissioned one leaves once it holds nothing)."""
        try:
            return set(self.admin.describe_cluster()["brokers"])
        except DistlogError:  # no broker answered this time: asked again
            return {None}

    def _placed(self, partition: int, replicas: list) -> bool:
        """Whether the partition's move to `replicas` is over."""
        try:
            placed = self.admin.describe_topic(self.topic)["partitions"][partition]
        except DistlogError:
            return False
        return placed["replicas"] == replicas and placed["target_replicas"] is None

    def leaders(self) -> dict:
        """{partition: (leader, leader epoch)} of the workload's topic, from the leaders' own answers."""
        found = partition_leaders({b: a for b, a in self._answers().items() if a is not None})
        return {partition: (entry["leader"], entry["leader_epoch"]) for (topic, partition), entry in found.items()
                if topic == self.topic and entry is not None}

    def controller(self) -> int | None:
        answers = self._answers()
        return cluster_health(list(answers), answers)["controller_id"]


def heal_everything(control, timeout_s: float = BROKER_BACK_TIMEOUT_S) -> dict:
    """Resume paused brokers, start stopped ones, heal every cut, and wait until the cluster is
    healthy as `distlog cluster health` says (every broker answers, every partition has a leader
    and all its replicas in sync). Returns the last health report (supervisor.health's shape):
    report["healthy"] is False if the cluster was not healthy within timeout_s, and the report
    says what was wrong."""
    for broker in control.status()["brokers"]:
        if broker["state"] == "paused":
            control.resume(broker["id"])
        elif broker["state"] == "stopped":
            control.restart(broker["id"])
    deadline_s = time.monotonic() + timeout_s
    last = {}

    def healed():
        try:
            control.heal()
            return True
        except ControlError as error:  # a broker started a moment ago is not listening yet: again
            last["heal_error"] = str(error)
            return False

    def healthy():
        brokers = control.status()["brokers"]
        answers = ask_every_broker(metadata, {b["id"]: b["address"] for b in brokers}, METADATA_TIMEOUT_S)
        last["report"] = cluster_health([b["id"] for b in brokers], answers)
        return last["report"]["healthy"]

    if not wait_for_condition(healed, timeout_s):
        raise ControlError(f"the cut between brokers could not be healed within {timeout_s:g} s: {last['heal_error']}")
    wait_for_condition(healthy, max(0.0, deadline_s - time.monotonic()))
    return last["report"]


def wait_until_answering(control, broker_ids: list, timeout_s: float) -> bool:
    """Wait (with a deadline) until every broker in broker_ids is running and answers a ping."""
    waiting = set(broker_ids)

    def answering():
        for broker in control.status()["brokers"]:
            if broker["id"] in waiting and broker["state"] == "running" and ping(broker["address"], 0.5) is not None:
                waiting.discard(broker["id"])
        return not waiting

    return wait_for_condition(answering, timeout_s)


def wait_for_condition(condition, timeout_s: float) -> bool:
    """Poll condition() every 0.1 s until it holds (True) or timeout_s passes (False)."""
    deadline_s = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline_s:
            return False
        time.sleep(0.1)  # polling a condition with a deadline, not a guess at how long it takes
    return True
