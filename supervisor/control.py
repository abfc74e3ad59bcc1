"""The supervisor's control endpoint: JSON requests over a ROUTER, and the client for it.

Request  {"op": "status" | "kill" | "restart" | "pause" | "resume" | "set-faults" | "partition"
               | "add-broker" | "remove-broker" | "down",
          "broker_id": N, "restart": bool (kill), "rules": {"drop_to": [...], "drop_from": [...]},
          "cuts": [[from_id, to_id], ...] (partition: exactly these cuts, everything else healed)}
Reply    {"ok": true, "status": {...}} or {"ok": false, "error": "what went wrong"}
Every reply carries the cluster status after the operation, so one round trip answers both.
"""

import json
import time
from pathlib import Path

import psutil

from distlog.supervisor import cluster_file
from distlog.supervisor.partitions import cuts_between
from distlog.supervisor.supervisor import ClusterError, Supervisor
from distlog.transports.zmq_transport import DealerConnection, RouterServer, TransportTimeout


_BROKER_OPS = ("kill", "restart", "pause", "resume", "set-faults", "remove-broker")


class ControlError(Exception):
    """The supervisor refused or failed a control request, or did not answer."""


class ControlServer:
    """Answers control requests for one Supervisor on an ephemeral loopback port."""

    def __init__(self, supervisor: Supervisor):
        self._supervisor = supervisor
        self._server = RouterServer("tcp://127.0.0.1:0")
        self.endpoint = self._server.endpoint
        self.socket = self._server.socket
        self.down_requested = False

    def handle_pending(self) -> None:
        """Answer every request waiting; a "down" request shuts the cluster down before replying."""
        while (request := self._server.recv_nowait()) is not None:
            peer, cid, frames = request
            reply = self._handle(bytes(frames[0]))
            self._server.send(peer, cid, [json.dumps(reply).encode()])

    def _handle(self, payload: bytes) -> dict:
        try:
            request = json.loads(payload)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
            self._dispatch(request)
        except (ClusterError, ValueError, TypeError) as error:
            return {"ok": False, "error": str(error) or type(error).__name__,
                    "status": self._supervisor.status()}
        return {"ok": True, "status": self._supervisor.status()}

    def _dispatch(self, request: dict) -> None:
        op = request.get("op")
        supervisor = self._supervisor
        if op == "status":
            return
        if op == "down":
            supervisor.shutdown()
            self.down_requested = True
            return
        if op == "partition":
            supervisor.partition({(int(a), int(b)) for a, b in request.get("cuts", [])})
            return
        if op == "add-broker":
            supervisor.add_broker()
            return
        if op not in _BROKER_OPS:
            raise ValueError(f"unknown control op {op!r}")
        broker_id = request.get("broker_id")
        if not isinstance(broker_id, int) or isinstance(broker_id, bool):
            raise ValueError(f"broker_id must be an integer, got {broker_id!r}")
        if op == "kill":
            supervisor.kill(broker_id, restart=bool(request.get("restart", True)))
        elif op == "restart":
            supervisor.restart(broker_id)
        elif op == "pause":
            supervisor.pause(broker_id)
        elif op == "resume":
            supervisor.resume(broker_id)
        elif op == "remove-broker":
            supervisor.remove_broker(broker_id)
        else:
            supervisor.set_fault_rules(broker_id, request.get("rules") or {})

    def close(self) -> None:
        """Close the endpoint, giving the last reply (to "down") a moment to leave."""
        self._server.close(linger_ms=200)


class ClusterControl:
    """A running cluster, found through DATA/cluster.json: what the CLI and chaos runs drive.

    Every method returns the cluster status after the operation (see Supervisor.status) and
    raises ControlError with a message for the user if the supervisor refuses or is not there.
    """

    def __init__(self, data_dir, timeout_s: float = 10.0):
        """ControlError if data_dir holds no cluster or its supervisor is not running."""
        self.data_dir = Path(data_dir)
        self.timeout_s = timeout_s
        try:
            self.record = cluster_file.load(data_dir)
        except cluster_file.ClusterFileError as error:
            raise ControlError(str(error)) from None
        if not cluster_file.supervisor_running(self.record):
            pid = self.record["supervisor"].get("pid")
            stale = f" (supervisor pid {pid} is gone or not ours)" if pid is not None else ""
            raise ControlError(f"the cluster in {data_dir} is not running{stale}; start it with "
                               f"`distlog cluster up --data-dir {data_dir}`")
        self.endpoint = self.record["supervisor"]["control"]

    def request(self, request: dict, timeout_s: float | None = None) -> dict:
        return control_request(self.endpoint, request, timeout_s or self.timeout_s)

    def status(self) -> dict:
        return self.request({"op": "status"})

    def kill(self, broker_id: int, restart: bool = True) -> dict:
        """SIGKILL; the supervisor restarts it after its backoff unless restart is False."""
        return self.request({"op": "kill", "broker_id": broker_id, "restart": restart})

    def restart(self, broker_id: int) -> dict:
        return self.request({"op": "restart", "broker_id": broker_id})

    def pause(self, broker_id: int) -> dict:
        return self.request({"op": "pause", "broker_id": broker_id})

    def resume(self, broker_id: int) -> dict:
        return self.request({"op": "resume", "broker_id": broker_id})

    def set_fault_rules(self, broker_id: int, drop_to=(), drop_from=()) -> dict:
        """Replace one broker's rules; peers by id (2 -> "broker-2"). No peers heals it."""
        rules = {"drop_to": [f"broker-{peer}" for peer in drop_to],
                 "drop_from": [f"broker-{peer}" for peer in drop_from]}
        return self.request({"op": "set-faults", "broker_id": broker_id, "rules": rules})

    def partition(self, groups) -> dict:
        """Groups of broker ids that cannot talk to each other ([[1], [2, 3]]); brokers in no
        group still reach everyone. Replaces every broker's rules."""
        return self.request({"op": "partition", "cuts": sorted(cuts_between(groups))})

    def cut(self, cuts) -> dict:
        """Exactly these one-way cuts [(from_id, to_id), ...]; everything else healed."""
        return self.request({"op": "partition", "cuts": sorted(cuts)})

    def heal(self) -> dict:
        return self.request({"op": "partition", "cuts": []})

    def add_broker(self) -> dict:
        return self.request({"op": "add-broker"})

    def remove_broker(self, broker_id: int) -> dict:
        """Stop a decommissioned broker for good and drop it from the cluster record."""
        return self.request({"op": "remove-broker", "broker_id": broker_id}, self.timeout_s + 10.0)

    def down(self, timeout_s: float = 30.0) -> dict:
        """Stop every broker gracefully and the supervisor; returns once it has exited."""
        status = self.request({"op": "down"}, timeout_s)
        pid = self.record["supervisor"]["pid"]
        if not _wait_exited(pid, self.timeout_s):
            raise ControlError(f"brokers stopped but the supervisor (pid {pid}) has not exited")
        return status


def _wait_exited(pid: int, timeout_s: float) -> bool:
    """Wait until pid has exited. A zombie counts: the detached supervisor is not our child, and
    whoever reaps it (init) may take its time."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def control_request(endpoint: str, request: dict, timeout_s: float) -> dict:
    """Send one request to the supervisor at endpoint; the status on success, ControlError if not."""
    connection = DealerConnection(endpoint)
    try:
        frames = connection.request([json.dumps(request).encode()], timeout_s)
    except TransportTimeout as error:
        raise ControlError(f"the supervisor did not answer: {error}") from error
    finally:
        connection.close()
    reply = json.loads(bytes(frames[0]))
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "the supervisor refused the request"))
    return reply["status"]
