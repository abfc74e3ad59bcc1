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
from distlog.chaos.nemesis import BROKER_BACK_TIMEOUT_S, FAULT_KINDS, Nemesis, heal_everything
from distlog.chaos.report import write_report
from distlog.chaos.workload import DELIVERY_TIMEOUT_MS, ConsumerWorkload, ProducerWorkload, final_read
from distlog.client import Admin
from distlog.supervisor import cluster_file
from distlog.supervisor.control import ClusterControl, ControlError

TOPIC = "chaos"
CLUSTER_UP_TIMEOUT_S = 120.0
FINAL_READ_TIMEOUT_S = 60.0


@dataclass
class ChaosConfig:
    duration_s: float
    brokers: int = 3
    partitions: int = 6
    faults: tuple = FAULT_KINDS
    seed: int = 0
    rate_per_s: float = 1000.0
    producers: int = 1
    consumers: int = 1
    report_dir: str = "chaos-reports"
    interval_s: tuple = (2.0, 5.0)  # between faults
    fault_duration_s: tuple = (1.0, 3.0)  # how long a pause or partition lasts
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
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_commit": _git_commit()}
    harness_errors = []
    try:
        say(f"starting {config.brokers} brokers in {data_dir}")
        control = _cluster_up(data_dir, config.brokers)
        try:
            harness_errors = _run_workload(control, config, history, meta, say)
        finally:
            say("stopping the cluster")
            _cluster_down(control)
    finally:
        history.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    result = check(history.records)
    result["harness_errors"] = harness_errors
    result["valid"] = result["valid"] and not harness_errors
    meta["harness_errors"] = harness_errors
    result["report"] = write_report(result, config.report_dir, meta, os.path.basename(history.path))
    with open(os.path.join(config.report_dir, "summary.json"), "w") as summary:
        json.dump({key: value for key, value in result.items() if key != "timeline"}, summary, indent=1)
    return result


def _run_workload(control, config: ChaosConfig, history, meta: dict, say) -> list:
    """Workload + nemesis for duration_s, heal, final read; returns harness errors (strings)."""
    record = control.record
    bootstrap = ",".join(b["address"] for b in record["brokers"])
    broker_ids = [b["id"] for b in record["brokers"]]
    with Admin(bootstrap) as admin:
        admin.create_topic(TOPIC, partitions=config.partitions, replication_factor=replication_factor_of(config))
    history.add("meta", **meta)
    consumers = [ConsumerWorkload(bootstrap, TOPIC, config.partitions, history, i) for i in range(config.consumers)]
    producers = [ProducerWorkload(bootstrap, TOPIC, history, config.rate_per_s / config.producers, i,
                                  config.idempotent_producer) for i in range(config.producers)]
    nemesis = Nemesis(control, history, broker_ids, config.faults, config.seed, config.interval_s,
                      config.fault_duration_s)
    threads = (*consumers, *producers, nemesis)
    try:
        for thread in threads:
            thread.start()
        say(f"running the workload for {config.duration_s:g} s with faults: {', '.join(config.faults)}")
        threading.Event().wait(config.duration_s)
        nemesis.stopping.set()
        nemesis.join(BROKER_BACK_TIMEOUT_S + 10)
        say("healing the cluster and letting the producers finish")
        healed = heal_everything(control, broker_ids)
        for producer in producers:
            producer.stopping.set()
        for producer in producers:
            producer.join(DELIVERY_TIMEOUT_MS / 1000 + 15)
        for consumer in consumers:
            consumer.stopping.set()
            consumer.join(30)
    finally:
        for thread in threads:  # on the way out of an error too: nothing keeps running behind it
            thread.stopping.set()
    say("final read")
    final_read(bootstrap, TOPIC, config.partitions, history, FINAL_READ_TIMEOUT_S)
    errors = [f"{thread.name}: {thread.error!r}" for thread in threads if thread.error is not None]
    errors += [f"{thread.name} did not stop" for thread in threads if thread.is_alive()]
    if not healed:
        errors.append(f"not every broker answered within {BROKER_BACK_TIMEOUT_S:g} s of healing")
    return errors


def _cluster_up(data_dir: str, brokers: int) -> ClusterControl:
    command = [sys.executable, "-m", "distlog.cli", "cluster", "up", "-n", str(brokers), "--data-dir", data_dir,
               "--detach", "--restart-backoff-s", "0.2", "--restart-backoff-max-s", "1"]
    started = subprocess.run(command, capture_output=True, text=True, timeout=CLUSTER_UP_TIMEOUT_S)
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
