"""One chaos run, start to finish: a fresh cluster, a live workload, a nemesis, a healed final
read, the checker's verdict and a report.

    result = run_chaos(ChaosConfig(duration_s=60))   # what `distlog chaos --kill-random 60s` does

The cluster is started with `distlog cluster up --detach` in a temporary data dir, exactly as a
user would, and always taken down again. The history, report.md, timeline.png and summary.json
land in the report dir.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

from distlog.chaos.checker import check
from distlog.chaos.history import History
from distlog.chaos.nemesis import BROKER_BACK_TIMEOUT_S, FAULT_KINDS, MOVE_TIMEOUT_S, Nemesis, heal_everything
from distlog.chaos.report import write_report
from distlog.chaos.transcript import LeaderWatcher, write_transcript
from distlog.chaos.workload import DELIVERY_TIMEOUT_MS, GroupMemberWorkload, ProducerWorkload, final_read
from distlog.client import Admin
from distlog.log.synced import RECORD_SYNCED_ENV
from distlog.supervisor import cluster_file
from distlog.supervisor.control import ClusterControl, ControlError
from distlog.supervisor.health import unhealthy_summary

TOPIC = "chaos"
CLUSTER_UP_TIMEOUT_S = 120.0
FINAL_READ_TIMEOUT_S = 60.0
HEALTHY_TIMEOUT_S = 60.0  # after healing, how long the cluster gets to be healthy again
PROGRESS_EVERY_S = 5.0
SEGMENT_BYTES = 64 * 1024
# Fewer acknowledged writes than this per second of fault window make the run vacuous: too
# little was written for its PASS to mean anything.
MIN_ACKED_PER_S = 20
RESULT_FIELDS = ("valid", "seed", "duration_s", "faults", "faults_by_kind", "acked_writes", "lost", "unseen",
                 "duplicates", "inconsistent_offsets", "nonmonotonic_polls", "nonmonotonic_sends", "poll_skips",
                 "aborted_reads", "failover_ms_p50", "failover_ms_max", "progress_after_heal")


@dataclass
class ChaosConfig:
    duration_s: float
    brokers: int = 3
    partitions: int = 6
    faults: tuple = FAULT_KINDS
    seed: int = 0
    rate_per_s: float = 1000.0
    producers: int = 2
    consumers: int = 2  # members of one consumer group
    report_dir: str = "chaos-reports"
    interval_s: tuple = (1.0, 3.0)  # between faults
    fault_duration_s: tuple = (1.0, 3.0)  # how long a pause or partition lasts
    # The control runs: acks="1", or flush_policy="never" (with power-loss), are unsafe on
    # purpose, so a run can show the checker catching the writes they lose.
    acks: str = "all"
    flush_policy: Optional[str] = None
    # False shows what the checker catches without idempotence: retries after a pause duplicate.
    idempotent_producer: bool = True
    # Copies of each partition; None: 3, or every broker when there are fewer. At RF=3 a kill,
    # pause or partition of one broker is a failover the run must get through without losing or
    # duplicating an acknowledged write; at RF=1 it makes that broker's partitions wait for it.
    replication_factor: Optional[int] = None
    command: str = field(default="", compare=False)


def replication_factor_of(config: ChaosConfig) -> int:
    return config.replication_factor or min(3, config.brokers)


class ChaosRunError(RuntimeError):
    """The run itself could not be carried out (the cluster did not start)."""


def run_chaos(config: ChaosConfig, say=print) -> dict:
    """Run, check, report. Returns the checker's result plus "report" (the report.md path) and
    "harness_errors"; result["valid"] is False if anything went wrong."""
    os.makedirs(config.report_dir, exist_ok=True)
    data_dir = tempfile.mkdtemp(prefix="distlog-chaos-")
    history = History(os.path.join(config.report_dir, "history.jsonl"))
    meta = {"command": config.command, **{k: v for k, v in asdict(config).items() if k != "command"},
            "topic": TOPIC, "replication_factor": replication_factor_of(config),
            "min_acked": int(MIN_ACKED_PER_S * config.duration_s),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": _git_commit()}
    harness_errors = []
    went_wrong = True  # until the run got through: an exception keeps the logs too
    try:
        say(f"starting {config.brokers} brokers in {data_dir}")
        control = _cluster_up(data_dir, config.brokers)
        try:
            harness_errors = _run_workload(control, config, history, meta, say)
            went_wrong = bool(harness_errors)
        finally:
            say("stopping the cluster")
            _cluster_down(control)
    finally:
        history.close()
        if went_wrong:  # what went wrong is in the brokers' logs, which the data dir takes with it
            _keep_logs(data_dir, os.path.join(config.report_dir, "logs"))
        shutil.rmtree(data_dir, ignore_errors=True)
    result = check(history.records, min_acked=meta["min_acked"])
    result["harness_errors"] = harness_errors
    result["valid"] = result["valid"] and not harness_errors
    meta["harness_errors"] = harness_errors
    result["report"] = write_report(result, config.report_dir, meta, os.path.basename(history.path))
    write_transcript(history.records, result, os.path.join(config.report_dir, "transcript.md"))
    with open(os.path.join(config.report_dir, "summary.json"), "w") as summary:
        json.dump({key: value for key, value in result.items() if key != "timeline"}, summary, indent=1)
    with open(os.path.join(config.report_dir, "result.json"), "w") as out:
        json.dump({key: result.get(key) for key in RESULT_FIELDS}, out, indent=1)
    return result


def _run_workload(control, config: ChaosConfig, history, meta: dict, say) -> list:
    """Workload + nemesis for duration_s, heal, final read; returns harness errors (strings)."""
    record = control.record
    bootstrap = ",".join(b["address"] for b in record["brokers"])
    # Small segments, so a partition has older (closed) segments for the corrupt fault to damage
    # and its segment rolls happen under the faults too.
    topic_config = {"segment.bytes": str(SEGMENT_BYTES)}
    if config.flush_policy == "never":
        # Raft entries are fsynced before any ack whatever flush.policy says; the control run
        # lifts that on purpose, so a power cut on every replica can take acknowledged writes.
        topic_config.update({"flush.policy": "never", "unsafe.skip.raft.fsync": "true"})
    elif config.flush_policy:
        topic_config["flush.policy"] = config.flush_policy
    errors = []
    with Admin(bootstrap) as admin:
        admin.create_topic(TOPIC, partitions=config.partitions, replication_factor=replication_factor_of(config),
                           config=topic_config)
        history.add("meta", **meta)
        members = [GroupMemberWorkload(bootstrap, TOPIC, history, i) for i in range(config.consumers)]
        producers = [ProducerWorkload(bootstrap, TOPIC, history, config.rate_per_s / config.producers, i,
                                      config.idempotent_producer, config.acks) for i in range(config.producers)]
        nemesis = Nemesis(control, history, TOPIC, config.partitions, admin, config.faults, config.seed,
                          config.interval_s, config.fault_duration_s)
        watcher = LeaderWatcher(nemesis.leaders, history)
        threads = (*members, *producers, nemesis, watcher)
        try:
            for thread in threads:
                thread.start()
            say(f"running the workload for {config.duration_s:g} s with faults: {', '.join(config.faults)}")
            _show_progress(history, nemesis, config.duration_s, say)
            nemesis.stopping.set()
            nemesis.join(BROKER_BACK_TIMEOUT_S + 60)
            say("healing the cluster, waiting until it is healthy, letting the producers finish")
            health = heal_everything(control, HEALTHY_TIMEOUT_S)
            if not health["healthy"]:
                errors.append(f"the cluster was not healthy within {HEALTHY_TIMEOUT_S:g} s of healing: "
                              f"{unhealthy_summary(health)}")
            history.add("healed")
            # A few seconds of writes on the healed cluster: the checker wants each partition to
            # accept one again (progress after heal).
            threading.Event().wait(min(5.0, config.duration_s / 4))
            for producer in producers:
                producer.stopping.set()
            for producer in producers:
                producer.join(DELIVERY_TIMEOUT_MS / 1000 + 15)
            for member in members:
                member.stopping.set()
                member.join(30)
        finally:
            for thread in threads:  # on the way out of an error too: nothing keeps running behind it
                thread.stopping.set()
            watcher.join(5)
    say("final read")
    final_read(bootstrap, TOPIC, config.partitions, history, FINAL_READ_TIMEOUT_S)
    errors += stuck_moves(history.records)
    errors += [f"{thread.name}: {thread.error!r}" for thread in threads if thread.error is not None]
    errors += [f"{thread.name} did not stop" for thread in threads if thread.is_alive()]
    return errors


def stuck_moves(records) -> list:
    """Harness errors for the membership faults whose move or decommission did not finish within
    MOVE_TIMEOUT_S: with no other fault running, a stuck reassignment is a bug in itself."""
    errors = []
    for record in records:
        if record.get("type") == "nemesis" and record.get("phase") == "end" and record.get("f") == "membership":
            for step in ("reassigned", "decommissioned"):
                if record.get(step) is False:
                    errors.append(f"membership fault {record['id']} (broker {record.get('added')}): not {step} "
                                  f"within {MOVE_TIMEOUT_S:g} s ({record.get('moved')})")
    return errors


def _show_progress(history, nemesis, duration_s: float, say) -> None:
    """Wait out the fault window, saying every few seconds how the workload is doing. The window
    lasts until every chosen fault kind has started once (the schedule goes round the kinds),
    up to twice duration_s, so a run "with every fault kind" has every kind."""
    started_s = time.monotonic()
    ends_s = started_s + duration_s
    while (left_s := ends_s - time.monotonic()) > 0 or (
            nemesis.started < len(nemesis.faults) and nemesis.is_alive() and time.monotonic() < started_s + 2 * duration_s):
        left_s = max(left_s, 0.5)
        threading.Event().wait(min(PROGRESS_EVERY_S, left_s))
        counts = history.counts
        say(f"t={history.now():5.1f}s  acked {counts.get(('ok', 'send'), 0)}, "
            f"indeterminate {counts.get(('info', 'send'), 0)}, failed {counts.get(('fail', 'send'), 0)}, "
            f"polls {counts.get(('ok', 'poll'), 0)}, commits {counts.get(('ok', 'commit'), 0)}, "
            f"faults {nemesis.started}")


def _keep_logs(data_dir: str, logs_dir: str) -> None:
    """Copy the supervisor's and every broker's logs (rotated ones too) out of the run's data dir
    into logs_dir, so a failed run can be understood after the data dir is gone."""
    for root, _dirs, files in os.walk(data_dir):
        for name in files:
            if name.startswith(("broker.log", "supervisor.log")):
                source = os.path.join(root, name)
                target = os.path.join(logs_dir, os.path.relpath(source, data_dir))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(source, target)


def _cluster_up(data_dir: str, brokers: int) -> ClusterControl:
    command = [sys.executable, "-m", "distlog.cli", "cluster", "up", "-n", str(brokers), "--data-dir", data_dir,
               "--detach", "--restart-backoff-s", "0.2", "--restart-backoff-max-s", "1"]
    # The brokers record how far each segment was fsynced, which the power-loss fault cuts back to.
    env = {**os.environ, RECORD_SYNCED_ENV: "1"}
    started = subprocess.run(command, capture_output=True, text=True, timeout=CLUSTER_UP_TIMEOUT_S, env=env)
    if started.returncode != 0:
        raise ChaosRunError(f"the cluster did not start:\n{started.stdout}{started.stderr}")
    return ClusterControl(data_dir)


def _cluster_down(control: ClusterControl) -> None:
    """Stop the cluster; if its supervisor does not answer, kill what the cluster record names,
    so a failed run never leaves brokers behind."""
    try:
        control.down()
    except ControlError:
        record = cluster_file.load(control.data_dir)
        pids = [record["supervisor"].get("pid")] + [b.get("pid") for b in record["brokers"]]
        for pid in filter(None, pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
