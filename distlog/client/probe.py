"""Small one-shot calls the supervisor makes to a single broker: is it up, what is its metadata,
and set its fault rules."""

from __future__ import annotations

import os

from distlog.client.connection import BrokerConnection
from distlog.protocol.errors import DistlogError
from distlog.protocol.messages import ApiVersionsRequest, MetadataRequest, SetFaultRulesRequest


def _probe_connection(endpoint: str) -> BrokerConnection:
    """A connection named "probe-<unique>", so fault rules that cut a broker off from its clients
    (transports.faults.CLIENTS) leave the supervisor's checks and control calls through."""
    return BrokerConnection(endpoint, identity=b"probe-" + os.urandom(6).hex().encode())


def ping(endpoint: str, timeout_s: float) -> dict | None:
    """{"broker_id", "controller_id", "cluster_id"} if the broker at `endpoint` answers in time, else None."""
    connection = _probe_connection(endpoint)
    try:
        response = connection.request(ApiVersionsRequest(), timeout_s)
    except DistlogError:
        return None
    finally:
        connection.close()
    return {"broker_id": response.broker_id, "controller_id": response.controller_id, "cluster_id": response.cluster_id}


def metadata(endpoint: str, timeout_s: float) -> dict | None:
    """The broker's view of every topic, {"brokers", "controller_id", "topics"} as in its
    MetadataResponse, if it answers in time; else None."""
    connection = _probe_connection(endpoint)
    try:
        response = connection.request(MetadataRequest(topics=None), timeout_s)
    except DistlogError:
        return None
    finally:
        connection.close()
    return {"brokers": response.brokers, "controller_id": response.controller_id, "topics": response.topics}


def set_fault_rules(endpoint: str, rules: dict, timeout_s: float) -> None:
    """Replace the broker's fault rules with {"drop_to": [peer names], "drop_from": [...]}; {} heals.

    Raises DistlogError (a RequestTimedOutError if the broker does not answer)."""
    request = SetFaultRulesRequest(drop_to=list(rules.get("drop_to", [])), drop_from=list(rules.get("drop_from", [])))
    connection = _probe_connection(endpoint)
    try:
        connection.request(request, timeout_s)
    finally:
        connection.close()
