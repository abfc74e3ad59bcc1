"""The supervisor's control endpoint: JSON requests over a ROUTER, and the call the CLI makes.

Request  {"op": "status" | "kill" | "restart" | "pause" | "resume" | "set-faults" | "down",
          "broker_id": N, "restart": bool (kill), "rules": {"drop_to": [...], "drop_from": [...]}}
Reply    {"ok": true, "status": {...}} or {"ok": false, "error": "what went wrong"}
Every reply carries the cluster status after the operation, so one round trip answers both.
"""

import json

from distlog.supervisor.supervisor import ClusterError, Supervisor
from distlog.transports.zmq_transport import DealerConnection, RouterServer, TransportTimeout


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
        except (ClusterError, ValueError, TypeError, KeyError) as error:
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
        broker_id = request["broker_id"]
        if not isinstance(broker_id, int):
            raise ValueError(f"broker_id must be an integer, got {broker_id!r}")
        if op == "kill":
            supervisor.kill(broker_id, restart=bool(request.get("restart", True)))
        elif op == "restart":
            supervisor.restart(broker_id)
        elif op == "pause":
            supervisor.pause(broker_id)
        elif op == "resume":
            supervisor.resume(broker_id)
        elif op == "set-faults":
            supervisor.set_fault_rules(broker_id, request.get("rules") or {})
        else:
            raise ValueError(f"unknown control op {op!r}")

    def close(self) -> None:
        """Close the endpoint, giving the last reply (to "down") a moment to leave."""
        self._server.close(linger_ms=200)


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
