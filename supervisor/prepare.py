"""What `distlog cluster up` starts: a new cluster, or the one the data dir already holds.

Refuses a data dir whose cluster is running or which is not a distlog data dir; clears what a dead
supervisor left behind (a stale pid, orphaned brokers); keeps ids and, when free, ports.
"""

import signal
from pathlib import Path

import psutil

from distlog.supervisor import cluster_file
from distlog.supervisor.ports import free_ports, metrics_ports_from_base, port_is_free, ports_from_base
from distlog.supervisor.supervisor import ClusterError

DEFAULT_BROKERS = 3
ORPHAN_STOP_TIMEOUT_S = 10.0

# Files a data dir may hold before its first cluster.json (a failed first `up` leaves them).
_OWN_FILES = {"supervisor.lock", "supervisor.log", cluster_file.CLUSTER_FILE_NAME}


def ensure_not_running(data_dir) -> None:
    """ClusterError if a live supervisor owns data_dir."""
    if cluster_file.data_dir_locked(data_dir):
        pid = _recorded_supervisor_pid(data_dir)
        raise ClusterError(
            f"a cluster is already running in {data_dir} (supervisor pid {pid}); see it with "
            f"`distlog cluster status --data-dir {data_dir}` or stop it with "
            f"`distlog cluster down --data-dir {data_dir}`")


def _recorded_supervisor_pid(data_dir):
    try:
        return cluster_file.load(data_dir)["supervisor"].get("pid")
    except cluster_file.ClusterFileError:
        return "unknown"


def prepare_cluster(data_dir, brokers: int | None, port_base: int | None, say) -> dict:
    """The record `up` should start. The caller holds the data dir lock. `say` takes messages
    for the user (stale pids, orphans stopped, ports moved)."""
    data_dir = Path(data_dir)
    if cluster_file.cluster_file_path(data_dir).exists():
        return _existing(data_dir, brokers, port_base, say)
    leftovers = sorted(p.name for p in data_dir.iterdir() if p.name not in _OWN_FILES)
    if leftovers:
        raise ClusterError(f"{data_dir} is not empty and holds no cluster.json ({', '.join(leftovers[:5])}); "
                           f"it is not a distlog data dir: choose another --data-dir")
    count = brokers if brokers is not None else DEFAULT_BROKERS
    ids = range(1, count + 1)
    if port_base is not None:
        ports, metrics_ports = ports_from_base(port_base, ids), metrics_ports_from_base(port_base, ids)
    else:
        picked = free_ports(2 * count)
        ports, metrics_ports = dict(zip(ids, picked[:count])), dict(zip(ids, picked[count:]))
    return cluster_file.new_record(data_dir, {i: f"tcp://127.0.0.1:{p}" for i, p in ports.items()}, metrics_ports)


def _existing(data_dir: Path, brokers: int | None, port_base: int | None, say) -> dict:
    record = cluster_file.load(data_dir)
    recorded = len(record["brokers"])
    if brokers is not None and brokers != recorded:
        raise ClusterError(f"{data_dir} holds a {recorded}-broker cluster ({record['cluster_id']}); "
                           f"bring it back with -n {recorded} (or no -n), or use another --data-dir "
                           f"for a {brokers}-broker cluster")
    pid = record["supervisor"].get("pid")
    if pid is not None:
        say(f"supervisor pid {pid} in {cluster_file.cluster_file_path(data_dir)} is gone "
            f"(or not ours); treating the cluster as stopped")
    stop_orphans(record, say)
    ids = [b["id"] for b in record["brokers"]]
    if port_base is not None:
        ports, metrics_ports = ports_from_base(port_base, ids), metrics_ports_from_base(port_base, ids)
    else:
        # A record from before metrics has no metrics ports (None): those brokers get free ones.
        recorded_metrics = {b["id"]: b.get("metrics_port") for b in record["brokers"]}
        ports = _keep_or_move({b["id"]: int(b["address"].rsplit(":", 1)[1]) for b in record["brokers"]},
                              "port", set(recorded_metrics.values()), say)
        metrics_ports = _keep_or_move(recorded_metrics, "metrics port", set(ports.values()), say)
    for broker in record["brokers"]:
        broker["address"] = f"tcp://127.0.0.1:{ports[broker['id']]}"
        broker["metrics_port"] = metrics_ports[broker["id"]]
        broker["pid"] = None
    record["supervisor"] = {"pid": None, "control": None, "create_time": None}
    record["controller"] = None
    return record


def _keep_or_move(ports: dict, kind: str, avoid: set, say) -> dict:
    """{id: port} with every taken (or missing, None) port replaced by a free one, none in avoid."""
    ports = dict(ports)
    moving = [i for i, port in ports.items() if port is None or not port_is_free(port)]
    recorded = {port for port in ports.values() if port is not None}
    for broker_id, port in zip(moving, free_ports(len(moving), avoid=avoid | recorded)):
        if ports[broker_id] is not None:
            say(f"{kind} {ports[broker_id]} of broker {broker_id} is in use; it moves to {port}")
        ports[broker_id] = port
    return ports


def stop_orphans(record: dict, say) -> bool:
    """Stop brokers a dead supervisor left running on this data dir (SIGTERM, then SIGKILL).

    Returns True if there were any."""
    orphans = []
    for broker_id, pid in cluster_file.live_broker_pids(record).items():
        say(f"broker {broker_id} (pid {pid}) outlived its supervisor; stopping it")
        try:
            process = psutil.Process(pid)
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
            orphans.append(process)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(orphans, timeout=ORPHAN_STOP_TIMEOUT_S)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=ORPHAN_STOP_TIMEOUT_S)
    return bool(orphans)
