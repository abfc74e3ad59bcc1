"""The cluster record, DATA/cluster.json: what every `distlog cluster` command reads to find a cluster.

Written atomically (temp file, fsync, rename) so a reader never sees half a record. Whether the
recorded supervisor still runs is decided here too: a pid counts only if that process exists, was
started when the record says, and runs distlog (pids get reused).

    {"cluster_id", "created_at",
     "supervisor": {"pid", "control", "create_time"},
     "brokers": [{"id", "address", "metrics_port", "pid", "data_dir", "log_file"}],
     "controller": id | null}
"""

import datetime
import json
import uuid
from pathlib import Path

import psutil

from distlog.durable import write_file_atomically
from distlog.file_lock import FileLock

CLUSTER_FILE_NAME = "cluster.json"

# psutil derives create_time from boot time and clock ticks; allow for rounding, not for reuse.
CREATE_TIME_TOLERANCE_S = 1.0


class ClusterFileError(Exception):
    """cluster.json is missing or unreadable; the message says which file and what to do."""


def cluster_file_path(data_dir) -> Path:
    return Path(data_dir) / CLUSTER_FILE_NAME


def new_record(data_dir, addresses: dict[int, str], metrics_ports: dict[int, int] | None = None) -> dict:
    """A fresh record for brokers {id: address} serving metrics on {id: port} (None: no metrics),
    nothing running yet."""
    data_dir = Path(data_dir).resolve()
    metrics_ports = metrics_ports or {}
    return {
        "cluster_id": uuid.uuid4().hex[:16],
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "supervisor": {"pid": None, "control": None, "create_time": None},
        "brokers": [
            {"id": broker_id, "address": address, "metrics_port": metrics_ports.get(broker_id), "pid": None,
             "data_dir": str(data_dir / f"broker-{broker_id}"),
             "log_file": str(data_dir / f"broker-{broker_id}" / "broker.log")}
            for broker_id, address in sorted(addresses.items())
        ],
        "controller": None,
    }


def load(data_dir) -> dict:
    """The record in data_dir; ClusterFileError if there is none or it is not a cluster record."""
    path = cluster_file_path(data_dir)
    try:
        with open(path) as file:
            record = json.load(file)
    except FileNotFoundError:
        raise ClusterFileError(
            f"no cluster in {data_dir} ({path} does not exist; start one with "
            f"`distlog cluster up --data-dir {data_dir}`)") from None
    except (OSError, ValueError) as error:
        raise ClusterFileError(f"{path} is unreadable: {error}") from error
    if not isinstance(record, dict) or not {"cluster_id", "brokers", "supervisor"} <= record.keys():
        raise ClusterFileError(f"{path} is not a distlog cluster record")
    return record


def save(data_dir, record: dict) -> None:
    """Replace cluster.json atomically."""
    write_file_atomically(cluster_file_path(data_dir), (json.dumps(record, indent=2) + "\n").encode())


def metrics_url(metrics_port: int | None) -> str | None:
    """Where a broker serves its Prometheus metrics (None for None: a record from before metrics)."""
    return f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None


def process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, IndexError):
        return None


def _is_process(pid, create_time, marker: str) -> bool:
    """True if pid runs now, started at create_time (when given) and its command line has marker."""
    if not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(process.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return False
        return marker in " ".join(process.cmdline())
    except (psutil.Error, IndexError):  # IndexError: psutil reading a process as it exits
        return False


def supervisor_running(record: dict) -> bool:
    """True if the supervisor the record names is alive and is a distlog supervisor."""
    supervisor = record.get("supervisor") or {}
    return _is_process(supervisor.get("pid"), supervisor.get("create_time"), "distlog")


def live_broker_pids(record: dict) -> dict[int, int]:
    """{broker id: pid} of recorded brokers still running with this broker's data dir."""
    return {broker["id"]: broker["pid"] for broker in record["brokers"]
            if _is_process(broker.get("pid"), None, f"--data-dir {broker['data_dir']} ")}


class DataDirLock(FileLock):
    """The lock on DATA/supervisor.lock, held by the one supervisor of a data dir (see FileLock)."""

    def __init__(self, data_dir):
        super().__init__(Path(data_dir) / "supervisor.lock")


def data_dir_locked(data_dir) -> bool:
    """True if a live supervisor holds data_dir's lock (checked by briefly trying to take it)."""
    if not (Path(data_dir) / "supervisor.lock").exists():
        return False
    probe = DataDirLock(data_dir)
    if probe.acquire():
        probe.release()
        return False
    return True
