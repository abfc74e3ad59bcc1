"""The Supervisor in-process, over stand-in broker processes and a scripted probe.

The stand-in is a Python process that sleeps (or exits at once), so these tests exercise
spawning, watching, backoff, signals and shutdown without the cost of real brokers; the CLI tests
run the real ones.
"""

import json
import os
import shlex
import signal
import sys
import threading
import time

import psutil
import pytest

from distlog.supervisor import cluster_file
from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.broker_process import BROKER_COMMAND_ENV
from distlog.supervisor.control import ControlServer
from distlog.supervisor.partitions import cuts_between
from distlog.supervisor.probe import Probe
from distlog.supervisor.service import StartInterrupted, run_cluster
from distlog.supervisor.supervisor import ClusterError, Supervisor
from distlog.transports.zmq_transport import DealerConnection
from tests.supervisor.helpers import wait_for

SLEEPER = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(600)'"
CRASHER = f"{shlex.quote(sys.executable)} -c 'import sys; print(\"disk on fire\"); sys.exit(3)'"
FAST_POLICY = RestartPolicy(initial_s=0.05, max_s=0.4, stable_after_s=60)


class ScriptedProbe:
    """Answers pings (and, if asked for, metadata) as the broker the address belongs to; records
    fault-rule calls."""

    def __init__(self, record):
        self.ids = {b["address"]: b["id"] for b in record["brokers"]}
        self.silent: set[int] = set()
        self.liar = False
        self.fault_calls: list[tuple[int, dict]] = []
        # How many more of broker 1's metadata answers count broker 3 out of orders/0's ISR.
        self.lagging_answers = 0
        self.metadata_calls = 0
        self.no_metadata: set[int] = set()  # brokers that answer pings but not metadata requests

    def ping(self, address, timeout_s):
        broker_id = self.ids[address]
        if broker_id in self.silent:
            return None
        if self.liar:
            return {"broker_id": broker_id, "controller_id": 1, "cluster_id": "someone-else"}
        return {"broker_id": broker_id, "controller_id": 1}

    def metadata(self, address, timeout_s):
        """Broker 1 leads orders/0 (replicas 1, 2, 3); the others know of it from its reports."""
        broker_id = self.ids[address]
        if broker_id in self.silent | self.no_metadata:
            return None
        in_sync = [1, 2, 3]
        if broker_id == 1:
            self.metadata_calls += 1
            if self.lagging_answers:
                self.lagging_answers -= 1
                in_sync = [1, 2]
        partition = {"partition": 0, "leader": 1, "leader_epoch": 1, "replicas": [1, 2, 3],
                     "in_sync": in_sync, "high_watermark": 0, "log_end_offset": 0}
        topic = {"name": "orders", "error_code": 0, "error_message": "", "configs": {}, "partitions": [partition]}
        return {"brokers": [], "controller_id": 1, "topics": [topic]}

    def set_fault_rules(self, address, rules, timeout_s):
        self.fault_calls.append((self.ids[address], rules))

    def as_probe(self, with_metadata=False):
        return Probe(ping=self.ping, set_fault_rules=self.set_fault_rules,
                     metadata=self.metadata if with_metadata else None)


@pytest.fixture
def events():
    return []


@pytest.fixture
def make_supervisor(cluster_dir, events, monkeypatch):
    monkeypatch.setenv(BROKER_COMMAND_ENV, SLEEPER)
    cluster_dir.mkdir()
    made = []

    def make(brokers=3, policy=FAST_POLICY, ready_timeout_s=5.0, with_metadata=False):
        addresses = {i: f"tcp://127.0.0.1:{20000 + i}" for i in range(1, brokers + 1)}
        record = cluster_file.new_record(cluster_dir, addresses)
        probe = ScriptedProbe(record)
        supervisor = Supervisor(cluster_dir, record, probe=probe.as_probe(with_metadata), policy=policy,
                                ready_timeout_s=ready_timeout_s, stop_timeout_s=5.0,
                                log=lambda event, **fields: events.append((event, fields)))
        made.append(supervisor)
        return supervisor, probe

    try:
        yield make
    finally:
        for supervisor in made:
            supervisor.shutdown()


def broker(supervisor, broker_id):
    return next(b for b in supervisor.status()["brokers"] if b["id"] == broker_id)


def tick_until(supervisor, predicate, what, timeout_s=10.0):
    def ticked():
        supervisor.tick()
        return predicate()
    return wait_for(ticked, timeout_s, what)


def test_start_runs_every_broker_and_records_them(make_supervisor, cluster_dir):
    supervisor, _ = make_supervisor()
    supervisor.start()
    status = supervisor.status()
    assert [b["state"] for b in status["brokers"]] == ["running"] * 3
    assert status["controller"] == 1
    record = cluster_file.load(cluster_dir)
    pids = [b["pid"] for b in record["brokers"]]
    assert all(psutil.pid_exists(pid) for pid in pids)
    assert pids == [b["pid"] for b in status["brokers"]]
    assert all(b["rss_bytes"] > 0 for b in status["brokers"])

    supervisor.shutdown()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in pids)
    record = cluster_file.load(cluster_dir)
    assert [b["pid"] for b in record["brokers"]] == [None] * 3
    assert [b["state"] for b in supervisor.status()["brokers"]] == ["stopped"] * 3


def test_killed_broker_is_restarted_after_backoff(make_supervisor, cluster_dir):
    supervisor, _ = make_supervisor()
    supervisor.start()
    old_pid = broker(supervisor, 2)["pid"]
    supervisor.kill(2)
    assert broker(supervisor, 2)["state"] == "crashed"
    tick_until(supervisor, lambda: broker(supervisor, 2)["state"] == "running", "broker 2 restarted")
    restarted = broker(supervisor, 2)
    assert restarted["pid"] != old_pid and restarted["restarts"] == 1
    assert restarted["last_exit_code"] == -9
    assert cluster_file.load(cluster_dir)["brokers"][1]["pid"] == restarted["pid"]


def test_kill_with_stay_down_leaves_it_stopped_until_restart(make_supervisor):
    supervisor, _ = make_supervisor()
    supervisor.start()
    supervisor.kill(1, restart=False)
    deadline_s = time.monotonic() + 0.5  # several backoff periods: it must not come back
    while time.monotonic() < deadline_s:
        supervisor.tick()
        assert broker(supervisor, 1)["state"] == "stopped"
    supervisor.restart(1)
    tick_until(supervisor, lambda: broker(supervisor, 1)["state"] == "running", "broker 1 running")


def test_no_restart_policy_leaves_crashed_brokers_down(make_supervisor):
    supervisor, _ = make_supervisor(policy=RestartPolicy(enabled=False))
    supervisor.start()
    supervisor.kill(3)
    supervisor.tick()
    assert broker(supervisor, 3)["state"] == "crashed"
    assert broker(supervisor, 3)["pid"] is None


def test_crash_loop_backs_off_exponentially(make_supervisor, events, monkeypatch):
    supervisor, _ = make_supervisor(brokers=1)
    supervisor.start()
    monkeypatch.setenv(BROKER_COMMAND_ENV, CRASHER)
    supervisor.kill(1)

    def exits():
        return [fields["restart_in_s"] for event, fields in events if event == "broker_exited"]
    tick_until(supervisor, lambda: len(exits()) >= 5, "five crashes in a row")
    assert exits()[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]
    assert "disk on fire" in supervisor._slots[1].process.log_tail()


def test_pause_and_resume(make_supervisor):
    supervisor, _ = make_supervisor(brokers=1)
    supervisor.start()
    pid = broker(supervisor, 1)["pid"]
    supervisor.pause(1)
    assert broker(supervisor, 1)["state"] == "paused"
    wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="SIGSTOP")
    with pytest.raises(ClusterError, match="cannot be paused"):
        supervisor.pause(1)
    supervisor.resume(1)
    assert broker(supervisor, 1)["state"] == "running"
    wait_for(lambda: psutil.Process(pid).status() != psutil.STATUS_STOPPED, what="SIGCONT")
    with pytest.raises(ClusterError, match="not paused"):
        supervisor.resume(1)


def test_paused_broker_still_stops_on_shutdown(make_supervisor, events):
    supervisor, _ = make_supervisor(brokers=1)
    supervisor.start()
    pid = broker(supervisor, 1)["pid"]
    supervisor.pause(1)
    # Stopped for real first: a SIGTERM still pending beside the SIGSTOP is delivered first.
    wait_for(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, what="SIGSTOP")
    supervisor.shutdown()
    stopped = [fields for event, fields in events if event == "broker_stopped"]
    # -SIGTERM: the SIGCONT let the SIGTERM through; -SIGKILL would mean it sat stopped until
    # the stop timeout ran out and was killed.
    assert stopped == [{"broker": 1, "exit_code": -signal.SIGTERM}]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_fault_rules_are_set_and_reapplied_after_a_restart(make_supervisor):
    supervisor, probe = make_supervisor()
    supervisor.start()
    rules = {"drop_to": ["broker-2"], "drop_from": ["broker-3"]}
    supervisor.set_fault_rules(1, rules)
    assert probe.fault_calls == [(1, rules)]
    assert broker(supervisor, 1)["fault_rules"] == rules
    supervisor.kill(1)
    tick_until(supervisor, lambda: len(probe.fault_calls) == 2, "rules re-applied")
    assert probe.fault_calls[1] == (1, rules)
    supervisor.set_fault_rules(1, {})
    assert broker(supervisor, 1)["fault_rules"] == {}
    with pytest.raises(ClusterError, match="drop_to"):
        supervisor.set_fault_rules(1, {"drop_to": "broker-2"})


def test_fault_rules_naming_a_broker_outside_the_cluster_or_itself_are_refused(make_supervisor):
    supervisor, probe = make_supervisor()
    supervisor.start()
    with pytest.raises(ClusterError, match=r"names broker-7, which is not in this cluster \(brokers are 1, 2, 3\)"):
        supervisor.set_fault_rules(2, {"drop_to": ["broker-7"]})
    with pytest.raises(ClusterError, match="names broker-2, which is itself"):
        supervisor.set_fault_rules(2, {"drop_from": ["broker-2"]})
    assert probe.fault_calls == [] and broker(supervisor, 2)["fault_rules"] == {}


def test_unknown_broker_is_a_clear_error(make_supervisor):
    supervisor, _ = make_supervisor()
    supervisor.start()
    with pytest.raises(ClusterError, match="no broker 9 in this cluster"):
        supervisor.kill(9)


def test_broker_exiting_at_start_fails_the_start_and_stops_the_others(make_supervisor, monkeypatch,
                                                                      cluster_dir):
    supervisor, probe = make_supervisor()
    probe.silent.update({1, 2, 3})
    monkeypatch.setenv(BROKER_COMMAND_ENV, CRASHER)
    with pytest.raises(ClusterError, match=r"(?s)broker \d exited with code 3.*disk on fire"):
        supervisor.start()
    assert all(b["state"] == "stopped" and b["pid"] is None for b in supervisor.status()["brokers"])


def test_broker_that_never_answers_fails_the_start_naming_it(make_supervisor, cluster_dir):
    supervisor, probe = make_supervisor(ready_timeout_s=0.5)
    probe.silent.add(2)
    with pytest.raises(ClusterError, match="broker 2 did not answer at tcp://127.0.0.1:20002"):
        supervisor.start()
    assert all(b["pid"] is None for b in supervisor.status()["brokers"])


def test_start_waits_until_the_cluster_is_healthy(make_supervisor, events):
    supervisor, probe = make_supervisor(with_metadata=True)
    probe.lagging_answers = 2
    supervisor.start()
    assert probe.metadata_calls == 3, "ready at the first healthy answer, not before"
    assert [b["state"] for b in supervisor.status()["brokers"]] == ["running"] * 3
    assert events[-1][0] == "cluster_ready"


def test_a_cluster_whose_partitions_stay_unhealthy_comes_up_saying_why(make_supervisor, events):
    # Every broker and a controller answer, a partition does not heal: the cluster is left up
    # to be looked at (a start that tore it down could never be inspected), and the log says why.
    supervisor, probe = make_supervisor(ready_timeout_s=0.5, with_metadata=True)
    probe.lagging_answers = 10**6
    supervisor.start()
    assert all(b["state"] == "running" for b in supervisor.status()["brokers"])
    [summary] = [fields["summary"] for event, fields in events if event == "cluster_unhealthy"]
    assert summary == "1 partition under-replicated (orders/0)"


def test_a_broker_that_answers_pings_but_not_metadata_is_down(make_supervisor):
    supervisor, probe = make_supervisor(ready_timeout_s=0.5, with_metadata=True)
    probe.no_metadata.add(2)
    with pytest.raises(ClusterError, match="not healthy within 0.5 s: broker 2 down"):
        supervisor.start()


def test_a_port_answered_by_another_broker_fails_the_start(make_supervisor):
    supervisor, probe = make_supervisor(brokers=1)
    probe.liar = True
    with pytest.raises(ClusterError, match="another cluster uses that port"):
        supervisor.start()


def test_a_partition_sets_every_brokers_rules_and_heals_the_rest(make_supervisor):
    supervisor, probe = make_supervisor()
    supervisor.start()
    supervisor.partition(cuts_between([[1], [2, 3]]))
    assert sorted(probe.fault_calls) == [
        (1, {"drop_to": ["broker-2", "broker-3"], "drop_from": ["broker-2", "broker-3"]}),
        (2, {"drop_to": ["broker-1"], "drop_from": ["broker-1"]}),
        (3, {"drop_to": ["broker-1"], "drop_from": ["broker-1"]})]
    supervisor.partition(set())
    assert all(rules == {"drop_to": [], "drop_from": []} for _, rules in probe.fault_calls[3:])
    assert all(b["fault_rules"] == {} for b in supervisor.status()["brokers"])
    with pytest.raises(ClusterError, match="not in the cluster"):
        supervisor.partition({(1, 4)})


def test_a_broker_that_cannot_be_spawned_any_more_does_not_stop_the_watch(make_supervisor, events,
                                                                        monkeypatch):
    supervisor, _ = make_supervisor(brokers=2)
    supervisor.start()
    monkeypatch.setenv(BROKER_COMMAND_ENV, "/nonexistent/broker-binary")
    supervisor.kill(1)
    tick_until(supervisor, lambda: any(event == "broker_error" for event, _ in events),
               "the spawn failure to be logged")
    monkeypatch.setenv(BROKER_COMMAND_ENV, SLEEPER)
    supervisor.kill(2)
    tick_until(supervisor, lambda: [b["state"] for b in supervisor.status()["brokers"]] == ["running"] * 2,
               "both brokers back once the command works again")


def test_a_missing_broker_program_fails_the_start_clearly(make_supervisor, monkeypatch):
    supervisor, _ = make_supervisor(brokers=1)
    monkeypatch.setenv(BROKER_COMMAND_ENV, "/nonexistent/broker-binary")
    with pytest.raises(ClusterError, match="cannot start broker 1.*nonexistent"):
        supervisor.start()


def test_control_endpoint_answers_bad_requests_with_errors(make_supervisor):
    supervisor, _ = make_supervisor(brokers=1)
    supervisor.start()
    control = ControlServer(supervisor)
    client = DealerConnection(control.endpoint)
    try:
        def ask(payload: bytes) -> dict:
            cid = client.send_request([payload]) if client.wait_connected(5) else None
            assert cid is not None
            wait_for(lambda: control.socket.poll(10), what="the request to arrive")
            control.handle_pending()
            wait_for(lambda: client.socket.poll(10), what="the reply")
            return json.loads(bytes(client.recv_reply_nowait()[1][0]))

        for payload, message in [(b"\xff not json", "utf-8"), (b"[1, 2]", "JSON object"),
                                 (b'{"op": "explode"}', "unknown control op"),
                                 (b'{"op": "kill"}', "broker_id must be an integer"),
                                 (b'{"op": "kill", "broker_id": 5}', "no broker 5"),
                                 (b'{"op": "partition", "cuts": [[1]]}', "")]:
            reply = ask(payload)
            assert reply["ok"] is False and message in reply["error"], (payload, reply)
            assert reply["status"]["brokers"][0]["state"] == "running"
        assert ask(b'{"op": "status"}')["ok"] is True
    finally:
        client.close()
        control.close()


def test_a_stop_signal_while_starting_stops_everything_started(cluster_dir, monkeypatch):
    monkeypatch.setenv(BROKER_COMMAND_ENV, SLEEPER)  # never answers the (real) probe
    spawned = []
    handler_before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))

    def note_spawns(event, **fields):
        if event == "broker_spawned":
            spawned.append(fields["pid"])
    timer.start()
    try:
        with pytest.raises(StartInterrupted, match="SIGTERM while starting"):
            run_cluster(cluster_dir, brokers=2, ready_timeout_s=20, say=lambda message: None,
                        log=note_spawns)
    finally:
        timer.cancel()
    assert len(spawned) == 2
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in spawned)
    assert signal.getsignal(signal.SIGTERM) == handler_before, "the previous handler is back"
    assert not cluster_file.data_dir_locked(cluster_dir)


def test_an_added_broker_gets_a_new_id_and_every_broker_learns_it_and_a_removed_one_stays_gone(make_supervisor,
                                                                                              cluster_dir):
    supervisor, probe = make_supervisor()
    supervisor.start()
    assert supervisor.add_broker() == 4
    added = cluster_file.load(cluster_dir)["brokers"][-1]
    assert added["id"] == 4 and added["data_dir"].endswith("broker-4")
    assert added["address"] not in {b["address"] for b in cluster_file.load(cluster_dir)["brokers"][:-1]}
    probe.ids[added["address"]] = 4
    tick_until(supervisor, lambda: broker(supervisor, 4)["state"] == "running", "broker 4 running")
    for slot in supervisor._slots.values():  # their next start names broker 4 among the peers
        assert f"4={added['address']}" in slot.process._argv[slot.process._peers_at]

    pid_1 = broker(supervisor, 1)["pid"]
    supervisor.remove_broker(1)
    wait_for(lambda: not psutil.pid_exists(pid_1) or psutil.Process(pid_1).status() == psutil.STATUS_ZOMBIE,
             what="broker 1 stopped")
    record = cluster_file.load(cluster_dir)
    assert [b["id"] for b in record["brokers"]] == [2, 3, 4] and record["decommissioned"] == [1]
    for slot in supervisor._slots.values():
        assert [int(peer.split("=")[0]) for peer in slot.process._argv[slot.process._peers_at].split(",")] == [2, 3, 4]
    supervisor.tick()
    assert [b["id"] for b in supervisor.status()["brokers"]] == [2, 3, 4], "a removed broker is not restarted"
    assert supervisor.add_broker() == 5, "ids are never reused"
    with pytest.raises(ClusterError, match="no broker 1"):
        supervisor.remove_broker(1)
