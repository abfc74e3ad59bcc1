"""Running a cluster until told to stop: lock, prepare, start, then watch and serve control requests.

The same loop serves `distlog cluster up` in the foreground and the detached supervisor process;
they differ only in what they do once the cluster is ready and on each tick (a live table or
nothing). SIGINT, SIGTERM and SIGHUP end the loop with a graceful shutdown.
"""

import os
import signal
import time
from pathlib import Path

import zmq

from distlog.supervisor import cluster_file
from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.control import ControlServer
from distlog.supervisor.prepare import ensure_not_running, prepare_cluster
from distlog.supervisor.probe import load_probe
from distlog.supervisor.supervisor import ClusterError, Supervisor

TICK_S = 0.2


class StartInterrupted(ClusterError):
    """A stop signal arrived before the cluster was ready."""


class _StopSignals:
    """SIGINT/SIGTERM/SIGHUP (terminal closed) while starting abort the start; once running
    they set a flag the loop checks, so shutdown happens in order. Restores the previous handlers
    on exit."""

    def __init__(self):
        self.received: int | None = None
        self.raising = True
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _note(self, signum, _frame):
        self.received = signum
        if self.raising:
            raise StartInterrupted(f"interrupted by {signal.Signals(signum).name} while starting; "
                                   f"every broker started was stopped")

    def __exit__(self, *_exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_cluster(data_dir, *, brokers: int | None = None, port_base: int | None = None,
                policy: RestartPolicy = RestartPolicy(), ready_timeout_s: float = 30.0,
                on_ready=lambda status: None, on_tick=lambda supervisor: None, say=print,
                log=None) -> None:
    """Bring the cluster in data_dir up, call on_ready(status), then supervise until a signal or
    a "down" request; always stops every broker it started. ClusterError if it cannot start.
    say(message) tells the user things; log(event, **fields) records supervisor events."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = cluster_file.DataDirLock(data_dir)
    if not lock.acquire():
        ensure_not_running(data_dir)
        raise ClusterError(f"another process is starting a cluster in {data_dir}")
    try:
        with _StopSignals() as signals:
            _run_locked(data_dir, brokers, port_base, policy, ready_timeout_s, on_ready, on_tick,
                        say, log, signals)
    finally:
        lock.release()


def _run_locked(data_dir, brokers, port_base, policy, ready_timeout_s, on_ready, on_tick, say,
                log, signals):
    try:
        probe = load_probe()
    except ImportError as error:
        raise ClusterError(f"cannot load the broker probe: {error}") from error
    record = prepare_cluster(data_dir, brokers, port_base, say)
    supervisor = Supervisor(data_dir, record, probe=probe, policy=policy,
                            ready_timeout_s=ready_timeout_s, log=log)
    control = ControlServer(supervisor)
    try:
        supervisor.set_supervisor(os.getpid(), control.endpoint)
        supervisor.start()
        signals.raising = False
        on_ready(supervisor.status())
        _supervise(supervisor, control, on_tick, signals)
    finally:
        signals.raising = False
        supervisor.shutdown()
        supervisor.set_supervisor(None, None)
        control.close()


def _supervise(supervisor: Supervisor, control: ControlServer, on_tick, signals) -> None:
    poller = zmq.Poller()
    poller.register(control.socket, zmq.POLLIN)
    next_tick_s = 0.0
    while signals.received is None and not control.down_requested:
        poller.poll(TICK_S * 1000)
        control.handle_pending()
        if control.down_requested:
            return
        if time.monotonic() >= next_tick_s:
            next_tick_s = time.monotonic() + TICK_S
            supervisor.tick()
            on_tick(supervisor)
