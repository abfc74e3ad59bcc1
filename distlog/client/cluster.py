"""What a client knows about the cluster: brokers, the controller, and each partition's leader.

Built from Metadata responses, refreshed when a broker says NOT_LEADER or UNKNOWN_TOPIC, and
shared by the Producer, Consumer and Admin. It also owns one BrokerConnection per broker.

One unreachable broker must not hold up a client that has others to ask. A metadata request
goes to the broker most likely to answer (the last that did; one that recently left a request
unanswered goes last), and every HEDGE_AFTER_S without a reply it goes to the next one as well;
the first reply wins, all within the caller's timeout. Kafka sends to its least-loaded node;
asking the next broker on a timer reaches the same brokers without counting load.

Metadata can be older than what the client knows: a broker that has not heard of an election
yet still names the old leader. As in Kafka (KIP-320), a partition's leader is only replaced
by one of the same or a newer leader epoch; a broker answering NOT_LEADER makes the leader
unknown (invalidate) but keeps its epoch, so the stale answer cannot bring the old leader back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import zmq

from distlog.client.connection import BrokerConnection, check_response
from distlog.client.deadline import Deadline
from distlog.client.errors import RequestTimedOutError
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import MetadataRequest

# How long one broker gets to answer a metadata request before the next is asked as well: a
# healthy broker answers within milliseconds, so this only costs anything when one does not.
HEDGE_AFTER_S = 0.2
# A broker that left a request unanswered for HEDGE_AFTER_S is asked last for this long.
UNRESPONSIVE_FOR_S = 10.0
# refresh_soon() waits this long between attempts, doubling up to the max while attempts fail or
# leave a leader unknown: during an election there is nothing to learn for a while, and asking in
# a loop would only load the brokers. The max bounds how late a new leader is noticed after a
# failover (an election takes 0.5-1 s; with 1 s here, half the failover time was this wait).
REFRESH_BACKOFF_MIN_S = 0.1
REFRESH_BACKOFF_MAX_S = 0.25


def parse_bootstrap(bootstrap) -> list:
    """"tcp://a:1,tcp://b:2" or a list -> list of endpoints; a clear error when empty or malformed.
    A bare "host:port", what Kafka and rpk users type, means tcp://host:port."""
    endpoints = [e.strip() for e in bootstrap.split(",")] if isinstance(bootstrap, str) else list(bootstrap)
    endpoints = [e for e in endpoints if e]
    if not endpoints:
        raise ValueError("no bootstrap endpoint given (e.g. tcp://127.0.0.1:9092 or 127.0.0.1:9092)")
    return [_with_scheme(endpoint) for endpoint in endpoints]


def _with_scheme(endpoint: str) -> str:
    if "://" in endpoint:
        return endpoint
    host, sep, port = endpoint.rpartition(":")
    if sep and host and port.isdigit() and 0 < int(port) < 65536:
        return f"tcp://{endpoint}"
    raise ValueError(f"bootstrap endpoint {endpoint!r} is neither host:port nor a ZeroMQ endpoint; "
                     "give it as 127.0.0.1:9092 or tcp://127.0.0.1:9092")


@dataclass
class TopicInfo:
    name: str
    leaders: list  # leaders[p] = broker id or None
    replicas: list
    in_sync: list
    configs: dict
    leader_epochs: list = field(default_factory=list)  # leader_epochs[p]; -1 where not known

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
        self.shm = False  # pipelined connections to same-host brokers use a shared-memory ring (Producer(shm=True))
        self._connections: dict = {}  # endpoint -> BrokerConnection for pipelining (send/poll_reply)
        # Blocking calls (metadata, list offsets, admin) get a second connection per broker: a
        # blocking request() discards replies to other cids, so on the pipelining socket it would
        # eat the replies of produces and fetches in flight, and those would hang until timeout.
        self._request_connections: dict = {}  # endpoint -> BrokerConnection for request() only
        self._answered_last = None  # the endpoint that answered the last request_any
        self._unresponsive_until: dict = {}  # endpoint -> monotonic time it is asked last until
        self._next_refresh_s = 0.0
        self._refresh_backoff_s = REFRESH_BACKOFF_MIN_S

    def connection(self, endpoint: str) -> BrokerConnection:
        """The connection for pipelined send()/poll_reply(); never call request() on it."""
        connection = self._connections.get(endpoint)
        if connection is None:
            connection = self._connections[endpoint] = BrokerConnection(endpoint, self.context, shm=self.shm)
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
        """The first reply to `message` from any broker (see the module docstring for which are
        asked when); RequestTimedOutError if none comes within timeout_s."""
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        deadline = Deadline(timeout_s)
        untried = self._candidates()
        tried = list(untried)
        poller, asked = zmq.Poller(), {}  # socket -> [endpoint, connection, cid (None: not connected yet), asked_at_s]
        next_ask_s, answered = 0.0, None
        try:
            while True:
                now_s = time.monotonic()
                if untried and now_s >= next_ask_s:
                    self._ask(untried.pop(0), message, poller, asked)
                    next_ask_s = now_s + HEDGE_AFTER_S
                wait_s = deadline.remaining_s()
                if wait_s <= 0:
                    raise RequestTimedOutError(
                        f"no broker answered within {timeout_s:.3g} s (tried {', '.join(tried)}); "
                        "is the cluster running? (`distlog cluster status`)")
                if untried:
                    wait_s = min(wait_s, max(0.0, next_ask_s - now_s))
                for socket, _ in poller.poll(int(wait_s * 1000) + 1):
                    response = self._take_answer(asked[socket], message, poller)
                    if response is not None:
                        answered = asked[socket][0]
                        return check_response(response)
        finally:
            self._remember_who_answered(asked.values(), answered)

    def _candidates(self) -> list:
        """Endpoints in the order to ask them: the last to answer first, unresponsive ones last."""
        endpoints = list(dict.fromkeys([*self.brokers.values(), *self.bootstrap]))
        now_s = time.monotonic()
        return sorted(endpoints, key=lambda e: (self._unresponsive_until.get(e, 0.0) > now_s, e != self._answered_last))

    def _ask(self, endpoint: str, message, poller: zmq.Poller, asked: dict) -> None:
        connection = self.request_connection(endpoint)
        cid = connection.send(message)  # None while the connection is not up: sent once it is
        poller.register(connection.socket, zmq.POLLIN if cid is not None else zmq.POLLOUT)
        asked[connection.socket] = [endpoint, connection, cid, time.monotonic()]

    @staticmethod
    def _take_answer(entry: list, message, poller: zmq.Poller):
        """The reply to our request if it is in; sends the request first if the connection just came up."""
        _, connection, cid, _ = entry
        if cid is None:
            entry[2] = connection.send(message)
            if entry[2] is not None:
                poller.modify(connection.socket, zmq.POLLIN)
            return None
        while True:
            try:
                reply = connection.poll_reply()
            except DistlogError:
                continue  # undecodable: not an answer to count on
            if reply is None:
                return None
            if reply[0] == cid:
                return reply[1]
            # else a late reply to a request an earlier call gave up on

    def _remember_who_answered(self, entries, answered: str | None) -> None:
        now_s = time.monotonic()
        for endpoint, _, _, asked_at_s in entries:
            if endpoint == answered:
                self._unresponsive_until.pop(endpoint, None)
                self._answered_last = endpoint
            elif now_s - asked_at_s >= HEDGE_AFTER_S:
                self._unresponsive_until[endpoint] = now_s + UNRESPONSIVE_FOR_S

    def refresh(self, topics=None, timeout_s: float | None = None) -> None:
        """Fetch metadata for `topics` (None = all) and remember it."""
        response = self.request_any(MetadataRequest(topics=topics), timeout_s)
        self.brokers = {b["broker_id"]: b["address"] for b in response.brokers}
        self.controller_id = response.controller_id
        for topic in response.topics:
            if topic["error_code"]:
                self.topics.pop(topic["name"], None)
                continue
            self.topics[topic["name"]] = _merged(self.topics.get(topic["name"]), topic)
        if topics is None:
            known = {t["name"] for t in response.topics}
            for name in [n for n in self.topics if n not in known]:
                del self.topics[name]

    def refresh_soon(self, topics, timeout_s: float) -> None:
        """Refresh `topics` unless the last such attempt was too recent (see REFRESH_BACKOFF_MIN_S);
        for loops that wait on leaders anyway, so a failure only makes the backoff grow."""
        if time.monotonic() < self._next_refresh_s or timeout_s <= 0:
            return
        try:
            self.refresh(sorted(topics), timeout_s)
            complete = all(self._leaders_known(topic) for topic in topics)
        except DistlogError:
            complete = False
        self._refresh_backoff_s = REFRESH_BACKOFF_MIN_S if complete else min(REFRESH_BACKOFF_MAX_S, 2 * self._refresh_backoff_s)
        self._next_refresh_s = time.monotonic() + self._refresh_backoff_s

    def _leaders_known(self, topic: str) -> bool:
        info = self.topics.get(topic)
        return info is not None and all(self.leader_endpoint(topic, p) for p in range(info.partition_count))

    def invalidate(self, topic: str, partition: int) -> None:
        """The partition's leader is no longer known (a NOT_LEADER answer); its epoch is kept."""
        info = self.topics.get(topic)
        if info is not None and 0 <= partition < info.partition_count:
            info.leaders[partition] = None

    def forget(self, topic: str) -> None:
        """Drop all that is known about the topic, epochs too (it may have been deleted and created again)."""
        self.topics.pop(topic, None)

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

    def responsive_connection(self, timeout_s: float | None = None) -> BrokerConnection:
        """The blocking-request connection to the broker that answered last (asking around first
        if none has): for requests any broker can take, such as topic changes, which a broker
        forwards to the controller."""
        if self._answered_last is None:
            self.refresh([], timeout_s)
        return self.request_connection(self._answered_last)

    def close(self) -> None:
        for connections in (self._connections, self._request_connections):
            for connection in connections.values():
                connection.close()
            connections.clear()


def _merged(known: TopicInfo | None, topic: dict) -> TopicInfo:
    """The TopicInfo of a Metadata answer, keeping `known` leaders of newer epochs (KIP-320)."""
    partitions = sorted(topic["partitions"], key=lambda p: p["partition"])
    info = TopicInfo(topic["name"], [p["leader"] for p in partitions], [p["replicas"] for p in partitions],
                     [p["in_sync"] for p in partitions], topic["configs"],
                     [p.get("leader_epoch", -1) for p in partitions])
    if known is not None and len(known.leader_epochs) == known.partition_count:
        for p in range(min(known.partition_count, info.partition_count)):
            if info.leader_epochs[p] < known.leader_epochs[p]:
                info.leaders[p], info.leader_epochs[p] = known.leaders[p], known.leader_epochs[p]
    return info
