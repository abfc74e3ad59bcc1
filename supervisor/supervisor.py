"""The Supervisor: owns a cluster's broker processes — start, readiness, watch, restart, faults, stop.

It has no loop of its own: its owner (the foreground CLI or the detached daemon) calls tick()
every few hundred milliseconds between control requests. Every public method runs to completion
in the caller's thread; nothing here is thread-safe.

Broker states:
    starting  spawned, not yet answering the probe
    running   answered the probe
    paused    SIGSTOPped by `pause` (resume sends SIGCONT)
    crashed   exited without being asked to; restarted after a backoff unless restarts are off
    stopped   stopped on purpose (`kill --stay-down`, shutdown)
"""

import json
import os
import signal
import sys
import time
from dataclasses import dataclass

from distlog.supervisor import cluster_file
from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.broker_process import BrokerProcess, broker_command
from distlog.supervisor.health import cluster_health, unhealthy_summary
from distlog.supervisor.partitions import rules_for_cuts
from distlog.supervisor.ports import free_ports
from distlog.supervisor.probe import Probe, ask_every_broker
from distlog.transports.faults import CLIENTS, FaultRules

STARTING, RUNNING, PAUSED, CRASHED, STOPPED = "starting", "running", "paused", "crashed", "stopped"
ALIVE_STATES = (STARTING, RUNNING, PAUSED)

CONTROLLER_REFRESH_S = 2.0
# How often a starting cluster is probed; a probe that gets no answer also waits its timeout.
READY_POLL_S = 0.05
# How often a starting cluster whose brokers all answer is asked whether it is healthy yet.
HEALTH_POLL_S = 0.25
FAULT_RULES_TIMEOUT_S = 2.0


class ClusterError(Exception):
    """The cluster could not do what was asked; the message says which broker and why."""


@dataclass
class _Slot:
    process: BrokerProcess
    state: str = STOPPED
    restarts: int = 0
    consecutive_crashes: int = 0
    restart_at_s: float | None = None
    last_exit_code: int | None = None
    fault_rules: dict | None = None


def event_logger(stream=None):
    """log(event, **fields) writing one JSON line per event to stream (default: stderr, which is
    DATA/supervisor.log in detached mode)."""
    def log(event: str, **fields) -> None:
        print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}),
              file=stream or sys.stderr, flush=True)
    return log


class Supervisor:
    """The brokers of one cluster record, and the record itself (saved on every change)."""

    def __init__(self, data_dir, record: dict, *, probe: Probe, policy: RestartPolicy = RestartPolicy(),
                 ready_timeout_s: float = 30.0, stop_timeout_s: float = 10.0,
                 probe_timeout_s: float = 0.5, log=None):
        self.data_dir = data_dir
        self.record = record
        self.policy = policy
        self._probe = probe
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._log = log or event_logger()
        self._next_controller_refresh_s = 0.0
        self._last_health: dict | None = None  # while starting: the latest unhealthy report
        self._slots = {b["id"]: self._new_slot(b) for b in record["brokers"]}

    def _peers_arg(self) -> str:
        return ",".join(f"{b['id']}={b['address']}" for b in self.record["brokers"])

    def _new_slot(self, broker: dict) -> _Slot:
        return _Slot(BrokerProcess(broker["id"], broker["address"], broker["data_dir"], broker["log_file"],
                                   self._peers_arg(), self.record["cluster_id"], broker.get("metrics_port")))

    # -- start and readiness ---------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every broker and wait until each answers the probe, a controller is known and
        the brokers' metadata says the cluster is healthy (see health.py).

        On any failure every broker started here is stopped again and ClusterError names the
        broker that failed, with the last lines of its log.
        """
        try:
            for slot in self._slots.values():
                self._spawn(slot)
            self._save()
            self._wait_ready(time.monotonic() + self._ready_timeout_s)
        except BaseException:
            self.shutdown()
            raise
        self._save()
        self._log("cluster_ready", cluster_id=self.record["cluster_id"],
                  controller=self.record["controller"])

    def _wait_ready(self, deadline_s: float) -> None:
        next_health_check_s = 0.0
        while True:
            for broker_id, slot in self._slots.items():
                self._check_started(broker_id, slot)
            if all(s.state == RUNNING for s in self._slots.values()):
                if self.record["controller"] is None:
                    self._refresh_controller()
                if self.record["controller"] is not None and time.monotonic() >= next_health_check_s:
                    next_health_check_s = time.monotonic() + HEALTH_POLL_S
                    if self._healthy():
                        return
            if time.monotonic() >= deadline_s:
                if self._last_health is not None and not self._last_health["brokers_down"] \
                        and self._last_health["controller_id"] is not None:
                    # Every broker and a controller are up, some partitions are not (a log that
                    # failed to open, say): the cluster is up to be looked at, not torn down.
                    self._log("cluster_unhealthy", summary=unhealthy_summary(self._last_health))
                    return
                raise ClusterError(self._not_ready_message())
            time.sleep(READY_POLL_S)

    def _check_started(self, broker_id: int, slot: _Slot) -> None:
        """Probe a starting broker once; a broker that exits before the cluster is ready fails
        the start."""
        code = slot.process.exit_code()
        if code is not None:
            raise ClusterError(
                f"broker {broker_id} exited with code {code} while starting "
                f"(log {slot.process.log_file}):\n{slot.process.log_tail()}")
        if slot.state == STARTING:
            self._probe_once(broker_id, slot)

    def _healthy(self) -> bool:
        """Whether every broker's metadata says the cluster is healthy; a probe that cannot ask
        for metadata (a stand-in broker) leaves it at "every broker answers"."""
        if self._probe.metadata is None:
            return True
        addresses = {broker_id: slot.process.address for broker_id, slot in self._slots.items()}
        answers = ask_every_broker(self._probe.metadata, addresses, self._probe_timeout_s)
        health = cluster_health(addresses, answers)
        self._last_health = None if health["healthy"] else health
        return health["healthy"]

    def _not_ready_message(self) -> str:
        waiting = [i for i, s in self._slots.items() if s.state != RUNNING]
        if not waiting and self._last_health is not None:
            return (f"the cluster was not healthy within {self._ready_timeout_s:g} s: "
                    f"{unhealthy_summary(self._last_health)}")
        if not waiting:
            return f"no controller was elected within {self._ready_timeout_s:g} s"
        slot = self._slots[waiting[0]]
        return (f"broker {waiting[0]} did not answer at {slot.process.address} within "
                f"{self._ready_timeout_s:g} s (log {slot.process.log_file}):\n{slot.process.log_tail()}")

    def _probe_once(self, broker_id: int, slot: _Slot) -> None:
        answer = self._probe.ping(slot.process.address, self._probe_timeout_s)
        if answer is None:
            return
        cluster_id = answer.get("cluster_id", self.record["cluster_id"])
        if answer.get("broker_id") != broker_id or cluster_id != self.record["cluster_id"]:
            raise ClusterError(f"{slot.process.address} is answered by broker {answer.get('broker_id')} "
                               f"of cluster {cluster_id}, not broker {broker_id} of cluster "
                               f"{self.record['cluster_id']}: another cluster uses that port")
        slot.state = RUNNING
        self._log("broker_running", broker=broker_id, pid=slot.process.pid)
        self._note_controller(answer.get("controller_id"))
        if slot.fault_rules:
            self._apply_fault_rules(broker_id, slot.fault_rules)

    def _spawn(self, slot: _Slot) -> None:
        try:
            slot.process.spawn()
        except OSError as error:
            raise ClusterError(f"cannot start broker {slot.process.broker_id}: {error} "
                               f"(command: {' '.join(broker_command())})") from error
        slot.state = STARTING
        slot.restart_at_s = None
        self._log("broker_spawned", broker=slot.process.broker_id, pid=slot.process.pid)

    # -- watching --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Notice exits, restart crashed brokers when their backoff is over, probe starting ones.

        Never raises for one broker's trouble (it is logged): the others still need watching.
        """
        now_s = time.monotonic()
        changed = False
        for broker_id, slot in self._slots.items():
            try:
                changed |= self._watch(broker_id, slot, now_s)
            except ClusterError as error:
                self._log("broker_error", broker=broker_id, error=str(error))
        if now_s >= self._next_controller_refresh_s:
            self._next_controller_refresh_s = now_s + CONTROLLER_REFRESH_S
            changed |= self._refresh_controller()
        if changed:
            self._save()

    def _watch(self, broker_id: int, slot: _Slot, now_s: float) -> bool:
        """One broker's share of a tick; True if its pid changed."""
        changed = False
        if slot.state in ALIVE_STATES and slot.process.exit_code() is not None:
            self._note_exit(broker_id, slot, now_s)
            changed = True
        if slot.state == CRASHED and slot.restart_at_s is not None and now_s >= slot.restart_at_s:
            slot.restarts += 1
            try:
                self._spawn(slot)
            except ClusterError:
                slot.consecutive_crashes += 1
                self._schedule_restart(slot, now_s)
                raise
            changed = True
        if slot.state == STARTING:
            self._probe_once(broker_id, slot)
        return changed

    def _note_exit(self, broker_id: int, slot: _Slot, now_s: float) -> None:
        slot.last_exit_code = slot.process.exit_code()
        uptime_s = now_s - slot.process.started_monotonic_s
        stable = uptime_s >= self.policy.stable_after_s
        slot.consecutive_crashes = 1 if stable else slot.consecutive_crashes + 1
        slot.state = CRASHED
        self._schedule_restart(slot, now_s)
        self._log("broker_exited", broker=broker_id, exit_code=slot.last_exit_code,
                  uptime_s=round(uptime_s, 3),
                  restart_in_s=None if slot.restart_at_s is None else round(slot.restart_at_s - now_s, 3))

    def _schedule_restart(self, slot: _Slot, now_s: float) -> None:
        """Set when a crashed broker comes back, or never if restarts are off."""
        slot.state = CRASHED
        if self.policy.enabled:
            slot.restart_at_s = now_s + self.policy.delay_s(slot.consecutive_crashes)
        else:
            slot.restart_at_s = None

    def _refresh_controller(self) -> bool:
        """Ask one running broker who the controller is; True if that changed the record."""
        for broker_id, slot in self._slots.items():
            if slot.state == RUNNING:
                answer = self._probe.ping(slot.process.address, self._probe_timeout_s)
                if answer is not None:
                    return self._note_controller(answer.get("controller_id"))
        return False

    def _note_controller(self, controller_id) -> bool:
        if controller_id == self.record["controller"]:
            return False
        self.record["controller"] = controller_id
        self._log("controller", controller=controller_id)
        return True

    # -- fault controls --------------------------------------------------------------------------

    def _slot(self, broker_id: int) -> _Slot:
        try:
            return self._slots[broker_id]
        except KeyError:
            raise ClusterError(f"no broker {broker_id} in this cluster "
                               f"(brokers are {', '.join(map(str, self._slots))})") from None

    def kill(self, broker_id: int, restart: bool = True) -> None:
        """SIGKILL the broker. It counts as a crash (restarted after the backoff) unless restart
        is False, which leaves it stopped until `restart`."""
        slot = self._slot(broker_id)
        if not slot.process.send_signal(signal.SIGKILL):
            raise ClusterError(f"broker {broker_id} is not running (state {slot.state})")
        slot.process.wait(self._stop_timeout_s)
        self._log("broker_killed", broker=broker_id, restart=restart)
        self._note_exit(broker_id, slot, time.monotonic())
        if not restart:
            slot.state, slot.restart_at_s = STOPPED, None
        self._save()

    def pause(self, broker_id: int) -> None:
        """SIGSTOP: the broker freezes with its sockets open, like a long GC pause or a VM stall."""
        slot = self._slot(broker_id)
        if slot.state not in (STARTING, RUNNING) or not slot.process.send_signal(signal.SIGSTOP):
            raise ClusterError(f"broker {broker_id} cannot be paused in state {slot.state}")
        slot.state = PAUSED
        self._log("broker_paused", broker=broker_id)

    def resume(self, broker_id: int) -> None:
        """SIGCONT a paused broker."""
        slot = self._slot(broker_id)
        if slot.state != PAUSED or not slot.process.send_signal(signal.SIGCONT):
            raise ClusterError(f"broker {broker_id} is not paused (state {slot.state})")
        slot.state = RUNNING
        self._log("broker_resumed", broker=broker_id)

    def restart(self, broker_id: int) -> None:
        """Stop the broker gracefully (if it runs) and start it again; returns once spawned."""
        slot = self._slot(broker_id)
        if slot.process.running():
            slot.state = STOPPED
            slot.process.stop(self._stop_timeout_s)
        slot.consecutive_crashes = 0
        slot.restarts += 1
        self._spawn(slot)
        self._save()

    def set_fault_rules(self, broker_id: int, rules: dict) -> None:
        """Replace the broker's transport fault rules ({} heals). They are re-applied if the
        broker restarts, as a network partition outlives a process restart."""
        slot = self._slot(broker_id)
        known = {f"broker-{other}": other for other in self._slots}
        named = [peer for key in ("drop_to", "drop_from") if isinstance(rules.get(key), (list, tuple))
                 for peer in rules[key]]  # (rules of the wrong shape are refused by _set_rules)
        for peer in named:
            if peer != CLIENTS and known.get(peer, broker_id) == broker_id:
                raise ClusterError(f"a fault rule of broker {broker_id} names {peer}, which is "
                                   + ("itself" if known.get(peer) == broker_id else "not in this cluster")
                                   + f" (brokers are {', '.join(map(str, self._slots))})")
        self._set_rules(broker_id, slot, rules)
        if slot.state != RUNNING:
            raise ClusterError(f"broker {broker_id} is {slot.state}; its fault rules are recorded "
                               f"and will be applied when it runs again")

    def partition(self, cuts) -> None:
        """Make exactly these cuts (a, b) — frames from a to b lost — and heal everything else.
        Brokers that are not running get their rules when they run again."""
        try:
            every_rule = rules_for_cuts(self._slots, cuts)
        except ValueError as error:
            raise ClusterError(str(error)) from error
        failures = []
        for broker_id, rules in every_rule.items():
            try:
                self._set_rules(broker_id, self._slots[broker_id], rules)
            except ClusterError as error:  # the other brokers still get their rules
                failures.append(str(error))
        if failures:
            raise ClusterError("; ".join(failures))

    def _set_rules(self, broker_id: int, slot: _Slot, rules: dict) -> None:
        try:
            FaultRules.from_dict(rules)
        except ValueError as error:
            raise ClusterError(str(error)) from error
        normalized = {key: list(rules.get(key, [])) for key in ("drop_to", "drop_from")}
        slot.fault_rules = normalized if any(normalized.values()) else None
        if slot.state == RUNNING:
            self._apply_fault_rules(broker_id, normalized)

    def _apply_fault_rules(self, broker_id: int, rules: dict) -> None:
        slot = self._slots[broker_id]
        try:
            self._probe.set_fault_rules(slot.process.address, rules, FAULT_RULES_TIMEOUT_S)
        except Exception as error:  # the probe raises its own library's errors; say which broker
            raise ClusterError(f"broker {broker_id} did not take fault rules {rules}: "
                               f"{error}") from error
        self._log("fault_rules", broker=broker_id, **rules)

    # -- membership ------------------------------------------------------------------------------

    def add_broker(self) -> int:
        """Record and spawn one more broker (the next unused id, a free port); returns its id.
        It registers with the controller by itself; the caller waits for that (the CLI does)."""
        retired = self.record.setdefault("decommissioned", [])
        broker_id = max([*self._slots, *retired]) + 1  # ids are never reused
        taken = {int(b["address"].rsplit(":", 1)[1]) for b in self.record["brokers"]}
        taken |= {b["metrics_port"] for b in self.record["brokers"] if b.get("metrics_port")}
        port, metrics_port = free_ports(2, avoid=taken)
        broker_dir = os.path.join(os.path.dirname(self.record["brokers"][0]["data_dir"]), f"broker-{broker_id}")
        broker = {"id": broker_id, "address": f"tcp://127.0.0.1:{port}", "metrics_port": metrics_port, "pid": None,
                  "data_dir": broker_dir, "log_file": os.path.join(broker_dir, "broker.log")}
        self.record["brokers"].append(broker)
        self._slots[broker_id] = slot = self._new_slot(broker)
        self._spread_peers()
        self._spawn(slot)
        self._save()
        self._log("broker_added", broker=broker_id, address=broker["address"])
        return broker_id

    def remove_broker(self, broker_id: int) -> None:
        """Stop a decommissioned broker for good: it leaves the record (the next `cluster up`
        does not start it) and is listed under "decommissioned"; its data dir stays on disk."""
        slot = self._slot(broker_id)
        slot.state, slot.restart_at_s = STOPPED, None
        if slot.process.send_signal(signal.SIGTERM):
            slot.process.send_signal(signal.SIGCONT)
            slot.process.wait(self._stop_timeout_s)
        if slot.process.running():
            slot.process.send_signal(signal.SIGKILL)
            slot.process.wait(self._stop_timeout_s)
        del self._slots[broker_id]
        self.record["brokers"] = [b for b in self.record["brokers"] if b["id"] != broker_id]
        self.record.setdefault("decommissioned", []).append(broker_id)
        self._spread_peers()
        self._save()
        self._log("broker_removed", broker=broker_id)

    def _spread_peers(self) -> None:
        """Every broker's next start gets the current broker list."""
        peers_arg = self._peers_arg()
        for slot in self._slots.values():
            slot.process.set_peers(peers_arg)

    # -- status and shutdown ---------------------------------------------------------------------

    def status(self) -> dict:
        """Cluster status: the record's identity plus each broker's state and psutil numbers."""
        brokers = []
        for broker_id, slot in self._slots.items():
            stats = slot.process.stats()
            brokers.append({
                "id": broker_id, "pid": stats["pid"], "state": slot.state,
                "address": slot.process.address, "uptime_s": stats["uptime_s"],
                "rss_bytes": stats["rss_bytes"], "cpu_percent": stats["cpu_percent"],
                "process_status": stats["process_status"], "restarts": slot.restarts,
                "last_exit_code": slot.last_exit_code, "fault_rules": slot.fault_rules or {},
                "log_file": slot.process.log_file,
                "metrics_port": slot.process.metrics_port,
                "metrics": cluster_file.metrics_url(slot.process.metrics_port) if slot.state == RUNNING else None,
            })
        return {"cluster_id": self.record["cluster_id"], "data_dir": str(self.data_dir),
                "supervisor": self.record["supervisor"], "controller": self.record["controller"],
                "brokers": brokers}

    def shutdown(self) -> None:
        """Stop every broker: SIGTERM all, wait up to stop_timeout_s, SIGKILL the rest."""
        stopping = {}
        for broker_id, slot in self._slots.items():
            slot.state, slot.restart_at_s = STOPPED, None
            if slot.process.send_signal(signal.SIGTERM):
                slot.process.send_signal(signal.SIGCONT)
                stopping[broker_id] = slot
        deadline_s = time.monotonic() + self._stop_timeout_s
        for broker_id, slot in stopping.items():
            code = slot.process.wait(max(0.0, deadline_s - time.monotonic()))
            self._log("broker_stopped", broker=broker_id, exit_code=code)
        self.record["controller"] = None
        self._save()

    def set_supervisor(self, pid: int | None, control: str | None) -> None:
        """Record who supervises the cluster and where its control endpoint is."""
        create_time = cluster_file.process_create_time(pid) if pid is not None else None
        self.record["supervisor"] = {"pid": pid, "control": control, "create_time": create_time}
        self._save()

    def _save(self) -> None:
        for broker in self.record["brokers"]:
            slot = self._slots[broker["id"]]
            broker["pid"] = slot.process.pid if slot.process.running() else None
        cluster_file.save(self.data_dir, self.record)
