"""`distlog cluster ...`: run a local cluster and inject faults into it from the command line.

Tables go to stdout (or JSON with --json), messages to stderr. Exit codes: 0 ok, 1 failure,
2 usage. Every command but `up` finds the cluster through DATA/cluster.json and talks to its
supervisor's control endpoint.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from tabulate import tabulate

from distlog.broker.logs import (DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LEVELS, LOG_BACKUPS_ENV, LOG_LEVEL_ENV,
                                 LOG_MAX_BYTES_ENV)
from distlog.supervisor import cluster_file
from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.control import ClusterControl, ControlError
from distlog.supervisor.health import NO_BROKER_ANSWERED, cluster_health, partitions_text, unhealthy_summary
from distlog.supervisor.prepare import ensure_not_running, stop_orphans
from distlog.supervisor.probe import ask_every_broker
from distlog.supervisor.service import run_cluster
from distlog.supervisor.supervisor import ClusterError, event_logger

DATA_DIR_ENV = "DISTLOG_DATA_DIR"
CONTROL_TIMEOUT_S = 10.0
# `down` waits for every broker's graceful stop (10 s each at worst, in parallel) on the far side.
DOWN_TIMEOUT_S = 30.0
LIVE_VIEW_REFRESH_S = 2.0
# Beyond the brokers' readiness deadline: time for the detached supervisor itself to start.
DETACH_STARTUP_MARGIN_S = 15.0
# A broker that does not answer a Metadata request this soon counts as down.
HEALTH_REQUEST_TIMEOUT_S = 1.5
HEALTH_POLL_S = 1.0
# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar=DATA_DIR_ENV,
    default=Path(".distlog"), show_default=True, show_envvar=True,
    help="Where the cluster keeps cluster.json and each broker's data.")


class ClusterCliError(click.ClickException):
    """A failure reported as "error: ..." on stderr with exit code 1, like the other commands."""

    exit_code = 1

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def say(message: str) -> None:
    click.echo(message, err=True)


@click.group()
def cluster():
    """Run a local cluster: start, inspect, stop, and inject faults (kill, pause, partition)."""


# -- up --------------------------------------------------------------------------------------------

@cluster.command()
@click.option("-n", "--brokers", type=click.IntRange(1, 99), default=None,
              help="Number of brokers (default 3; an existing cluster keeps its own).")
@data_dir_option
@click.option("--port-base", type=click.IntRange(1, 65535), default=None,
              help="Broker N listens on PORT_BASE+N-1 and serves metrics on PORT_BASE+1000+N-1 (default: free ports).")
@click.option("--detach", is_flag=True, help="Run the supervisor in the background and return once ready.")
@click.option("--no-restart", is_flag=True, help="Leave crashed brokers down.")
@click.option("--restart-backoff-s", type=click.FloatRange(0), default=RestartPolicy.initial_s,
              show_default=True, help="First restart delay; doubles per crash in a row.")
@click.option("--restart-backoff-max-s", type=click.FloatRange(0), default=RestartPolicy.max_s,
              show_default=True, help="Longest restart delay.")
@click.option("--ready-timeout-s", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="How long the cluster gets to answer and be healthy (`cluster health`) before the start fails.")
@click.option("--log-level", type=click.Choice(LEVELS), default="info", show_default=True, envvar=LOG_LEVEL_ENV,
              show_envvar=True, help="The brokers' log level.")
@click.option("--log-max-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True,
              envvar=LOG_MAX_BYTES_ENV, show_envvar=True, help="Each broker.log rotates past this size.")
@click.option("--log-backups", type=click.IntRange(min=0), default=DEFAULT_BACKUPS, show_default=True,
              envvar=LOG_BACKUPS_ENV, show_envvar=True, help="Rotated files kept per broker (broker.log.1 ... .N).")
def up(brokers, data_dir, port_base, detach, no_restart, restart_backoff_s, restart_backoff_max_s,
       ready_timeout_s, log_level, log_max_bytes, log_backups):
    """Start the cluster in DATA_DIR (a new one, or bring back the one it holds).

    Ready once every broker answers and the cluster is healthy, as `distlog cluster health` says."""
    # The supervisor's brokers (and a detached supervisor) inherit these.
    os.environ.update({LOG_LEVEL_ENV: log_level, LOG_MAX_BYTES_ENV: str(log_max_bytes),
                       LOG_BACKUPS_ENV: str(log_backups)})
    try:
        ensure_not_running(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    except ClusterError as error:
        raise ClusterCliError(str(error)) from None
    except OSError as error:
        raise ClusterCliError(f"cannot use {data_dir} as the data dir: {error.strerror}") from None
    if detach:
        _up_detached(data_dir, brokers, port_base, no_restart, restart_backoff_s,
                     restart_backoff_max_s, ready_timeout_s)
        return
    policy = RestartPolicy(enabled=not no_restart, initial_s=restart_backoff_s,
                           max_s=restart_backoff_max_s)
    view = _LiveView()
    # Events go to the log file as in detached mode, so the live table stays readable.
    with open(data_dir / "supervisor.log", "a") as events:
        try:
            run_cluster(data_dir, brokers=brokers, port_base=port_base, policy=policy,
                        ready_timeout_s=ready_timeout_s, on_ready=view.ready, on_tick=view.tick,
                        say=say, log=event_logger(events))
        except ClusterError as error:
            raise ClusterCliError(str(error)) from None
    say("cluster stopped")


class _LiveView:
    """Foreground `up`: the table once ready, then redrawn every LIVE_VIEW_REFRESH_S on a terminal."""

    def __init__(self):
        self._next_draw_s = 0.0
        self._terminal = sys.stdout.isatty()

    def ready(self, status: dict) -> None:
        click.echo(render_status(status))
        say("cluster ready; Ctrl-C stops it")
        self._next_draw_s = time.monotonic() + LIVE_VIEW_REFRESH_S

    def tick(self, supervisor) -> None:
        if not self._terminal or time.monotonic() < self._next_draw_s:
            return
        self._next_draw_s = time.monotonic() + LIVE_VIEW_REFRESH_S
        click.clear()
        click.echo(render_status(supervisor.status()))
        click.echo(f"\n{time.strftime('%H:%M:%S')}  Ctrl-C stops the cluster")


def _up_detached(data_dir: Path, brokers, port_base, no_restart, restart_backoff_s,
                 restart_backoff_max_s, ready_timeout_s) -> None:
    data_dir = data_dir.resolve()
    argv = [sys.executable, "-m", "distlog.supervisor.daemon", "--data-dir", str(data_dir),
            "--restart-backoff-s", str(restart_backoff_s),
            "--restart-backoff-max-s", str(restart_backoff_max_s),
            "--ready-timeout-s", str(ready_timeout_s)]
    if brokers is not None:
        argv += ["--brokers", str(brokers)]
    if port_base is not None:
        argv += ["--port-base", str(port_base)]
    if no_restart:
        argv.append("--no-restart")
    read_fd, write_fd = os.pipe()
    log_path = data_dir / "supervisor.log"
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen(argv + ["--ready-fd", str(write_fd)], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, start_new_session=True,
                                  pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        final = _read_readiness(read_fd, ready_timeout_s + DETACH_STARTUP_MARGIN_S)
    except KeyboardInterrupt:
        # SIGTERM makes the supervisor abort its start and stop every broker it spawned.
        daemon.send_signal(signal.SIGTERM)
        raise ClusterCliError("interrupted: the supervisor was told to stop what it started") from None
    finally:
        os.close(read_fd)
    if final is None:
        code = daemon.poll()
        if code is None:
            daemon.send_signal(signal.SIGTERM)
            code = f"none yet; sent SIGTERM after {ready_timeout_s + DETACH_STARTUP_MARGIN_S:g} s"
        raise ClusterCliError(f"the supervisor did not report readiness (exit code {code}); "
                              f"see {log_path}:\n{_tail(log_path)}")
    if not final.get("ok"):
        try:
            daemon.wait(CONTROL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"the supervisor (pid {daemon.pid}) is still cleaning up")
        raise ClusterCliError(final.get("error", f"the cluster did not start; see {log_path}"))
    status = _control(data_dir, lambda control: control.status())
    click.echo(render_status(status))
    say(f"cluster ready; supervisor pid {daemon.pid} logs to {log_path}")


def _read_readiness(read_fd: int, timeout_s: float) -> dict | None:
    """Echo the daemon's messages; its final line, or None if it died or the deadline passed."""
    deadline_s = time.monotonic() + timeout_s
    buffer = b""
    while True:
        remaining_s = deadline_s - time.monotonic()
        if remaining_s <= 0 or not select.select([read_fd], [], [], remaining_s)[0]:
            return None
        chunk = os.read(read_fd, 65536)
        if not chunk:
            return None
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if "say" in message:
                say(message["say"])
            else:
                return message


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- talking to a running cluster ------------------------------------------------------------------

def _control(data_dir: Path, call):
    """call(ClusterControl) for the running cluster in data_dir; errors become exit code 1."""
    try:
        return call(ClusterControl(data_dir, CONTROL_TIMEOUT_S))
    except ControlError as error:
        raise ClusterCliError(str(error)) from None


def render_status(status: dict) -> str:
    """A key/value summary over a table of brokers, as `distlog cluster status` prints it."""
    controller = status.get("controller")
    supervisor = status.get("supervisor") or {}
    summary = tabulate([
        ["cluster", status.get("cluster_id")],
        ["data dir", status.get("data_dir")],
        ["supervisor", f"pid {supervisor.get('pid')} control {supervisor.get('control')}"],
        ["controller", controller if controller is not None else "none"],
        *([["partitions", _partitions_text(status["partitions"])]] if "partitions" in status else []),
    ], tablefmt="plain")
    rows = []
    for broker in status["brokers"]:
        faults = broker.get("fault_rules") or {}
        rows.append([
            f"{broker['id']}{'*' if broker['id'] == controller else ''}", broker["state"],
            broker["pid"] or "-", broker["address"], f"{broker['uptime_s']:.0f}s",
            f"{broker['rss_bytes'] / 2**20:.1f}", f"{broker.get('cpu_percent', 0.0):.0f}",
            broker.get("restarts", 0), _faults_text(faults)])
    table = tabulate(rows, headers=["ID", "STATE", "PID", "ADDRESS", "UPTIME", "RSS-MIB", "CPU%",
                                    "RESTARTS", "FAULTS"])
    endpoints = [f"  {broker['id']}  {broker['metrics']}" for broker in status["brokers"] if broker.get("metrics")]
    metrics = "\n\nmetrics (Prometheus)\n" + "\n".join(endpoints) if endpoints else ""
    return f"{summary}\n\n{table}{metrics}"


def _partitions_text(health) -> str:
    if health is None:
        return "unknown (no broker answered)"
    return (f"{health['total']} total, {health['under_replicated']} under-replicated, "
            f"{health['leaderless']} without a leader")


def _faults_text(faults: dict) -> str:
    parts = [f"drop-to {','.join(faults['drop_to'])}" if faults.get("drop_to") else "",
             f"drop-from {','.join(faults['drop_from'])}" if faults.get("drop_from") else ""]
    return " ".join(filter(None, parts)) or "-"


@cluster.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def status(data_dir, as_json):
    """Show each broker's state, pid, address, uptime and memory, and the controller."""
    result = _control(data_dir, lambda control: control.status())
    health = broker_health({b["id"]: b["address"] if b["state"] == "running" else None
                            for b in result["brokers"]})
    result["partitions"] = None if NO_BROKER_ANSWERED in health["unhealthy_reasons"] else {
        "total": health["partitions_total"], "under_replicated": health["under_replicated_count"],
        "leaderless": health["leaderless_count"]}
    click.echo(json.dumps(result, indent=2) if as_json else render_status(result))


def broker_health(addresses: dict, timeout_s: float = HEALTH_REQUEST_TIMEOUT_S) -> dict:
    """health.cluster_health of brokers {id: address, or None for one known not to run (not
    asked)}, every broker asked for its metadata at once."""
    from distlog.client.probe import metadata

    asked = {broker_id: address for broker_id, address in addresses.items() if address}
    return cluster_health(addresses, ask_every_broker(metadata, asked, timeout_s))


# -- health ----------------------------------------------------------------------------------------

@cluster.command()
@data_dir_option
@click.option("--bootstrap", envvar="DISTLOG_BOOTSTRAP", show_envvar=True,
              help="Find the brokers through these endpoints (e.g. 127.0.0.1:9092) instead of DATA_DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines (one line per change with --watch).")
@click.option("--watch", is_flag=True, help="Print the health again whenever it changes, until Ctrl-C.")
@click.option("--exit-when-healthy", is_flag=True, help="Wait until the cluster is healthy, then exit 0.")
@click.option("--timeout-s", type=click.FloatRange(0), default=60.0, show_default=True,
              help="How long --exit-when-healthy waits before it gives up with exit code 1.")
def health(data_dir, bootstrap, as_json, watch, exit_when_healthy, timeout_s):
    """Whether the cluster is healthy: exit code 0 if so, 1 if not.

    Healthy means a controller is known, every broker answers, and every partition has a leader
    whose in-sync replicas are all of its replicas. Each broker is asked for its metadata at once,
    and a partition's numbers come from its leader's own answer.
    """
    check = _health_check(data_dir, bootstrap)

    def show(report: dict) -> None:
        click.echo(_health_text(report, as_json, watch))

    try:
        report = _watch_health(check, show if watch else lambda report: None,
                               until_healthy=exit_when_healthy, forever=watch, timeout_s=timeout_s)
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    if not watch:
        show(report)
    if exit_when_healthy and not report["healthy"]:
        raise ClusterCliError(f"the cluster was not healthy within {timeout_s:g} s: {unhealthy_summary(report)}")
    sys.exit(0 if report["healthy"] else 1)


def _watch_health(check, show, *, until_healthy: bool, forever: bool, timeout_s: float) -> dict:
    """The report that ends the wait: the first one without until_healthy or forever, else the
    first healthy one with until_healthy, or the last one when timeout_s runs out. show(report)
    sees every report that differs from the one before."""
    deadline_s = time.monotonic() + timeout_s
    last = None
    while True:
        started_s = time.monotonic()
        report = check()
        if report != last:
            show(report)
        last = report
        if not (until_healthy or forever) or (until_healthy and report["healthy"]):
            return report
        if until_healthy and time.monotonic() >= deadline_s:
            return report
        wake_s = started_s + HEALTH_POLL_S
        if until_healthy:
            wake_s = min(wake_s, deadline_s)
        time.sleep(max(0.0, wake_s - time.monotonic()))


def _health_check(data_dir: Path, bootstrap: str | None):
    """check() -> the health report now, of the brokers in DATA_DIR/cluster.json or, with
    bootstrap, of those the first bootstrap endpoint to answer lists (looked up on each check)."""
    if bootstrap:
        from distlog.client.cluster import parse_bootstrap

        try:
            endpoints = parse_bootstrap(bootstrap)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--bootstrap") from None
        return lambda: broker_health(_listed_brokers(endpoints))
    try:
        record = cluster_file.load(data_dir)
    except cluster_file.ClusterFileError as error:
        raise ClusterCliError(f"{error}; or point at a cluster with --bootstrap HOST:PORT") from None
    addresses = {broker["id"]: broker["address"] for broker in record["brokers"]}
    return lambda: broker_health(addresses)


def _listed_brokers(endpoints: list) -> dict:
    """{id: address} of the brokers the first bootstrap endpoint to answer lists; {} if none does."""
    from distlog.client.probe import metadata

    answers = ask_every_broker(metadata, dict(enumerate(endpoints)), HEALTH_REQUEST_TIMEOUT_S)
    for _, answer in sorted(answers.items()):
        if answer is not None:
            return {broker["broker_id"]: broker["address"] for broker in answer["brokers"]}
    return {}


def _health_text(report: dict, as_json: bool, watch: bool) -> str:
    if as_json:
        return json.dumps(report) if watch else json.dumps(report, indent=2)
    text = render_health(report)
    return f"{time.strftime('%H:%M:%S')}\n{text}\n" if watch else text


def render_health(report: dict) -> str:
    """The key/value block `distlog cluster health` prints."""
    controller = report["controller_id"]
    reasons = ", ".join(report["unhealthy_reasons"])
    return tabulate([
        ["healthy", "yes" if report["healthy"] else f"no ({reasons})"],
        ["controller", controller if controller is not None else "none"],
        ["brokers", ", ".join(map(str, report["all_brokers"])) or "none known"],
        ["brokers down", ", ".join(map(str, report["brokers_down"])) or "-"],
        ["partitions", report["partitions_total"]],
        [f"leaderless ({report['leaderless_count']})", partitions_text(report["leaderless_partitions"]) or "-"],
        [f"under-replicated ({report['under_replicated_count']})",
         partitions_text(report["under_replicated_partitions"]) or "-"],
    ], tablefmt="plain")


@cluster.command()
@data_dir_option
def down(data_dir):
    """Stop the cluster gracefully (SIGTERM each broker, SIGKILL after a deadline)."""
    try:
        record = cluster_file.load(data_dir)
    except cluster_file.ClusterFileError as error:
        raise ClusterCliError(str(error)) from None
    if not cluster_file.supervisor_running(record) and stop_orphans(record, say):
        say("stopped brokers left behind by a supervisor that is gone")
        return
    _control(data_dir, lambda control: control.down(DOWN_TIMEOUT_S))
    say(f"cluster {record['cluster_id']} stopped")


broker_id_argument = click.argument("broker_id", metavar="ID", type=int)


@cluster.command()
@broker_id_argument
@data_dir_option
@click.option("--stay-down", is_flag=True, help="Do not restart it (until `distlog cluster restart ID`).")
def kill(broker_id, data_dir, stay_down):
    """SIGKILL broker ID; the supervisor restarts it after its backoff."""
    click.echo(render_status(_control(data_dir, lambda c: c.kill(broker_id, restart=not stay_down))))


@cluster.command()
@broker_id_argument
@data_dir_option
def restart(broker_id, data_dir):
    """Stop broker ID gracefully and start it again."""
    click.echo(render_status(_control(data_dir, lambda c: c.restart(broker_id))))


@cluster.command()
@broker_id_argument
@data_dir_option
def pause(broker_id, data_dir):
    """Freeze broker ID with SIGSTOP (sockets stay open, nothing is answered)."""
    click.echo(render_status(_control(data_dir, lambda c: c.pause(broker_id))))


@cluster.command()
@broker_id_argument
@data_dir_option
def resume(broker_id, data_dir):
    """Unfreeze a paused broker ID with SIGCONT."""
    click.echo(render_status(_control(data_dir, lambda c: c.resume(broker_id))))


@cluster.command()
@broker_id_argument
@data_dir_option
@click.option("--drop-to", "drop_to", type=int, multiple=True, metavar="PEER",
              help="Drop everything broker ID sends to broker PEER (repeatable).")
@click.option("--drop-from", "drop_from", type=int, multiple=True, metavar="PEER",
              help="Drop everything broker ID receives from broker PEER (repeatable).")
@click.option("--heal", is_flag=True, help="Lift every fault rule of broker ID.")
def faults(broker_id, data_dir, drop_to, drop_from, heal):
    """Set broker ID's transport fault rules, replacing its old ones (a one-sided partition)."""
    if heal == bool(drop_to or drop_from):
        raise click.UsageError("give --heal, or at least one --drop-to/--drop-from")
    click.echo(render_status(_control(
        data_dir, lambda c: c.set_fault_rules(broker_id, drop_to=drop_to, drop_from=drop_from))))


def _group(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of broker ids") from None


@cluster.command()
@click.argument("groups", nargs=-1, required=True, metavar="GROUP GROUP...")
@data_dir_option
def partition(groups, data_dir):
    """Split the network: brokers in different GROUPs (e.g. `1 2,3`) cannot talk, both ways.

    Brokers in no group still reach everyone (`1,2 4,5` leaves 3 as a bridge). Replaces all
    fault rules; `distlog cluster heal` undoes it.
    """
    if len(groups) < 2:
        raise click.UsageError("give at least two groups, e.g. `distlog cluster partition 1 2,3`")
    parsed = [_group(group) for group in groups]
    click.echo(render_status(_control(data_dir, lambda c: c.partition(parsed))))


@cluster.command()
@data_dir_option
def heal(data_dir):
    """Lift every fault rule on every broker."""
    click.echo(render_status(_control(data_dir, lambda c: c.heal())))


# -- leadership --------------------------------------------------------------------------------

@cluster.command("rebalance-leaders")
@data_dir_option
@click.option("--bootstrap", envvar="DISTLOG_BOOTSTRAP", show_envvar=True,
              help="Find the brokers through these endpoints (e.g. 127.0.0.1:9092) instead of DATA_DIR.")
@click.option("--topic", "topics", multiple=True, help="Only this topic's partitions (repeatable; default: all).")
@click.option("--timeout-s", type=click.FloatRange(0), default=10.0, show_default=True,
              help="How long to wait for the moved leaderships to arrive.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def rebalance_leaders(data_dir, bootstrap, topics, timeout_s, as_json):
    """Hand every partition's leadership back to its preferred (first) replica.

    Brokers do it by themselves a few seconds after a preferred replica returns; this does it
    now, where the preferred replica is up and caught up (Kafka's preferred leader election).
    Prints how many partitions each broker leads afterwards; exit 1 if some could not move.
    """
    from distlog.client import Admin
    from distlog.protocol.errors import DistlogError

    endpoints = bootstrap or ",".join(b["address"] for b in _cluster_record(data_dir)["brokers"])
    try:
        with Admin(endpoints, request_timeout_s=5) as admin:
            result = admin.elect_preferred_leaders(list(topics) or None)
            deadline_s = time.monotonic() + timeout_s
            while (pending := _not_yet_moved(admin, result["moving"])) and time.monotonic() < deadline_s:
                time.sleep(0.1)  # polling a condition: the hand-offs take a few hundred ms
            counts = _leader_counts(admin)
    except (DistlogError, ValueError) as error:
        raise ClusterCliError(str(error)) from None
    report = {"moved": [list(m) for m in result["moving"] if m not in pending],
              "still_moving": [list(m) for m in pending],
              "not_ready": [list(m) for m in result["not_ready"]],
              "unreachable_brokers": result["unreachable"], "leaders_per_broker": counts}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"moved {len(report['moved'])} leadership(s) to their preferred replica")
        for topic, partition, preferred in report["not_ready"] + report["still_moving"]:
            click.echo(f"  {topic}/{partition}: broker {preferred} is not ready to lead it (down or behind)")
        for broker_id in report["unreachable_brokers"]:
            click.echo(f"  broker {broker_id} did not answer")
        click.echo("leaders per broker: " + ", ".join(f"{b}: {n}" for b, n in sorted(counts.items())))
    sys.exit(1 if report["not_ready"] or report["still_moving"] or report["unreachable_brokers"] else 0)


# -- membership --------------------------------------------------------------------------------

@cluster.command("add-broker")
@data_dir_option
@click.option("--timeout-s", type=click.FloatRange(0), default=30.0, show_default=True,
              help="How long to wait for the new broker to register with the controller.")
def add_broker(data_dir, timeout_s):
    """Start one more broker under the running supervisor and wait until the cluster knows it.

    It holds nothing at first: move partitions to it with `distlog topic reassign`, or move a
    broker's partitions to it with `distlog cluster decommission`. New topics use it at once."""
    from distlog.client import Admin
    from distlog.protocol.errors import DistlogError

    before = {b["id"] for b in _cluster_record(data_dir)["brokers"]}
    status = _control(data_dir, lambda control: control.add_broker())
    [broker] = [b for b in status["brokers"] if b["id"] not in before]
    endpoints = ",".join(b["address"] for b in status["brokers"] if b["id"] in before)
    try:
        with Admin(endpoints, request_timeout_s=5) as admin:
            deadline_s = time.monotonic() + timeout_s
            while broker["id"] not in admin.describe_cluster()["brokers"]:
                if time.monotonic() >= deadline_s:
                    raise ClusterCliError(f"broker {broker['id']} started (log {broker['log_file']}) but has not "
                                          f"registered within {timeout_s:g} s; `distlog cluster health` shows the cluster")
                time.sleep(0.2)  # polling a condition: registration takes one metadata sync and one commit
    except DistlogError as error:
        raise ClusterCliError(str(error)) from None
    say(f"broker {broker['id']} joined at {broker['address']}")


@cluster.command()
@broker_id_argument
@data_dir_option
@click.option("--timeout-s", type=click.FloatRange(0), default=300.0, show_default=True,
              help="How long to wait for every replica to move off the broker.")
def decommission(broker_id, data_dir, timeout_s):
    """Move every replica off broker ID (the controller quorum's too), then stop it for good.

    Each partition's Raft group adds its new replica as a learner, lets it catch up, promotes
    it and only then removes broker ID, so writes keep flowing. The broker leaves cluster.json:
    the next `cluster up` does not start it. Interrupted, the moves go on; run it again."""
    from distlog.client import Admin
    from distlog.protocol.errors import DistlogError

    record = _cluster_record(data_dir)
    if broker_id not in {b["id"] for b in record["brokers"]}:
        raise ClusterCliError(f"no broker {broker_id} in this cluster (brokers are "
                              f"{', '.join(str(b['id']) for b in record['brokers'])})")
    endpoints = ",".join(b["address"] for b in record["brokers"] if b["id"] != broker_id)
    try:
        with Admin(endpoints, request_timeout_s=10) as admin:
            if broker_id in admin.describe_cluster()["brokers"]:
                admin.decommission_broker(broker_id)
            deadline_s = time.monotonic() + timeout_s
            next_report_s = 0.0
            while broker_id in admin.describe_cluster()["brokers"]:
                now_s = time.monotonic()
                if now_s >= deadline_s:
                    raise ClusterCliError(f"replicas are still moving off broker {broker_id} after {timeout_s:g} s; "
                                          "they go on: run this again to wait and then stop it")
                if now_s >= next_report_s:
                    next_report_s = now_s + 5.0
                    say(f"moving {len(admin.reassignments())} partition(s) off broker {broker_id}")
                time.sleep(0.2)  # polling a condition: each move is a few membership changes
    except DistlogError as error:
        raise ClusterCliError(str(error)) from None
    _control(data_dir, lambda control: control.remove_broker(broker_id))
    say(f"broker {broker_id} holds no replica any more; it is stopped and will not be started again")


def _cluster_record(data_dir: Path) -> dict:
    try:
        return cluster_file.load(data_dir)
    except cluster_file.ClusterFileError as error:
        raise ClusterCliError(f"{error}; or point at a cluster with --bootstrap HOST:PORT") from None


def _not_yet_moved(admin, moving: list) -> list:
    """The (topic, partition, to) of `moving` whose leader is not `to` yet."""
    admin.cluster.refresh(sorted({topic for topic, _, _ in moving}) or [])
    return [(t, p, to) for t, p, to in moving
            if t in admin.cluster.topics and admin.cluster.topics[t].leaders[p] != to]


def _leader_counts(admin) -> dict:
    admin.cluster.refresh()
    counts = {broker_id: 0 for broker_id in admin.cluster.brokers}
    for info in admin.cluster.topics.values():
        for leader in info.leaders:
            if leader is not None:
                counts[leader] = counts.get(leader, 0) + 1
    return counts
