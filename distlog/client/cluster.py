"""What a client knows about the cluster: brokers, the controller, and each partition's leader.

Built from Metadata responses, refreshed when a broker says NOT_LEADER or UNKNOWN_TOPIC, and
shared by the Producer, Consumer and Admin. It also owns one BrokerConnection per broker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zmq

from distlog.client.connection import BrokerConnection
from distlog.client.errors import RequestTimedOutError
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import MetadataRequest


def parse_bootstrap(bootstrap) -> list:
    """"tcp://a:1,tcp://b:2" or a list -> list of endpoints; a clear error when empty or malformed."""
    endpoints = [e.strip() for e in bootstrap.split(",")] if isinstance(bootstrap, str) else list(bootstrap)
    endpoints = [e for e in endpoints if e]
    if not endpoints:
        raise ValueError("no bootstrap endpoint given (e.g. tcp://127.0.0.1:9092)")
    for endpoint in endpoints:
        if "://" not in endpoint:
            raise ValueError(f"bootstrap endpoint {endpoint!r} needs a scheme, e.g. tcp://127.0.0.1:9092")
    return endpoints


@dataclass
class TopicInfo:
    name: str
    leaders: list  # leaders[p] = broker id or None
    replicas: list
    in_sync: list
    configs: dict

    @property
    def partition_count(self) -> int:
        return len(self.leaders)


class ClusterView:
    """Brokers, controller and partition leaders as last seen, plus a connection per broker."""

    def __init__(self, bootstrap, request_timeout_s: float = 30.0, context: zmq.Context | None = None):
        self.bootstrap = parse_bootstrap(bootstrap)
        self.request_timeout_s = request_timeout_s
        self.context = context or zmq.Context.instance()
        self.brokers: dict = {}  # id -> address
        self.controller_id = None
        self.topics: dict = {}  # name -> TopicInfo
        self._connections: dict = {}  # endpoint -> BrokerConnection for pipelining (send/poll_reply)
        # Blocking calls (metadata, list offsets, admin) get a second connection per broker: a
        # blocking request() discards replies to other cids, so on the pipelining socket it would
        # eat the replies of produces and fetches in flight, and those would hang until timeout.
        self._request_connections: dict = {}  # endpoint -> BrokerConnection for request() only

    def connection(self, endpoint: str) -> BrokerConnection:
        """The connection for pipelined send()/poll_reply(); never call request() on it."""
        connection = self._connections.get(endpoint)
        if connection is None:
            connection = self._connections[endpoint] = BrokerConnection(endpoint, self.context)
        return connection

    def request_connection(self, endpoint: str) -> BrokerConnection:
        """The connection for one blocking request() at a time."""
        connection = self._request_connections.get(endpoint)
        if connection is None:
            connection = self._request_connections[endpoint] = BrokerConnection(endpoint, self.context)
        return connection

    def broker_connection(self, broker_id: int) -> BrokerConnection:
        """The blocking-request connection to a broker named in the metadata."""
        address = self.brokers.get(broker_id)
        if address is None:
            raise DistlogError(ErrorCode.BROKER_NOT_AVAILABLE, f"broker {broker_id} is not in the cluster metadata")
        return self.request_connection(address)

    def request_any(self, message, timeout_s: float | None = None):
        """Send to the first broker that answers: known brokers first, then the bootstrap list."""
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        candidates = list(dict.fromkeys([*self.brokers.values(), *self.bootstrap]))
        while True:
            for endpoint in candidates:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    return self.request_connection(endpoint).request(message, min(remaining, max(1.0, timeout_s / len(candidates))))
                except RequestTimedOutError:
                    continue  # try the next broker
            if time.monotonic() >= deadline:
                raise RequestTimedOutError(
                    f"no broker answered within {timeout_s:.3g} s (tried {', '.join(candidates)}); "
                    "is the cluster running? (`distlog cluster status`)"
                )

    def refresh(self, topics=None, timeout_s: float | None = None) -> None:
        """Fetch metadata for `topics` (None = all) and remember it."""
        response = self.request_any(MetadataRequest(topics=topics), timeout_s)
        self.brokers = {b["broker_id"]: b["address"] for b in response.brokers}
        self.controller_id = response.controller_id
        for topic in response.topics:
            if topic["error_code"]:
                self.topics.pop(topic["name"], None)
                continue
            partitions = sorted(topic["partitions"], key=lambda p: p["partition"])
            self.topics[topic["name"]] = TopicInfo(
                topic["name"],
                [p["leader"] for p in partitions],
                [p["replicas"] for p in partitions],
                [p["in_sync"] for p in partitions],
                topic["configs"],
            )
        if topics is None:
            known = {t["name"] for t in response.topics}
            for name in [n for n in self.topics if n not in known]:
                del self.topics[name]

    def topic(self, name: str, timeout_s: float | None = None) -> TopicInfo:
        """The topic's info, refreshing once if unknown; UNKNOWN_TOPIC_OR_PARTITION if it doesn't exist."""
        info = self.topics.get(name)
        if info is None:
            self.refresh([name], timeout_s)
            info = self.topics.get(name)
        if info is None:
            raise DistlogError(
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic '{name}' does not exist (create it with `distlog topic create {name}`)",
            )
        return info

    def leader_endpoint(self, topic: str, partition: int) -> str | None:
        info = self.topics.get(topic)
        if info is None or not 0 <= partition < info.partition_count:
            return None
        leader = info.leaders[partition]
        return self.brokers.get(leader) if leader is not None else None

    def controller_connection(self) -> BrokerConnection:
        if self.controller_id is None:
            self.refresh([])
        if self.controller_id is None:
            raise DistlogError(ErrorCode.NOT_CONTROLLER, "the cluster has no controller right now; retry shortly")
        return self.broker_connection(self.controller_id)

    def close(self) -> None:
        for connections in (self._connections, self._request_connections):
            for connection in connections.values():
                connection.close()
            connections.clear()
