"""Stand-ins for driving the clients without a real broker: a cluster object for the sender, and
in-process fake brokers on loopback ports for whole Producers and Consumers."""

import socket
import threading
import time

import zmq

from distlog.log.batch_builder import build_batch
from distlog.log.records import decode_records
from distlog.protocol.codec import decode_request, encode
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import (
    EARLIEST_TIMESTAMP,
    ApiKey,
    ErrorResponse,
    FetchRequest,
    FetchResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    MetadataRequest,
    MetadataResponse,
    ProduceRequest,
    ProduceResponse,
)
from distlog.transports.zmq_transport import RouterServer

ENDPOINT = "tcp://127.0.0.1:1"


class OneLeaderCluster:
    """Every partition's leader is ENDPOINT, reached through the one connection given."""

    def __init__(self, connection):
        self._connection = connection
        self.topics = {}
        self.invalidated = []  # (topic, partition) whose leader the sender asked to look up again

    def leader_endpoint(self, topic, partition):
        return ENDPOINT

    def invalidate(self, topic, partition):
        self.invalidated.append((topic, partition))

    def forget(self, topic):
        self.topics.pop(topic, None)

    def refresh_soon(self, topics, timeout_s):
        pass

    def connection(self, endpoint):
        return self._connection

    def close(self):
        pass


class SilentListener:
    """A TCP port that accepts connections and never says a word: a broker paused (SIGSTOP) before
    the client connected, as its kernel still completes the TCP handshake."""

    def __init__(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.address = f"tcp://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self):
        self._socket.close()


class FakeBroker:
    """One broker of a FakeCluster: a ROUTER on a loopback port served by a thread of its own.
    Set `silent` and it reads requests but answers none, as a broker paused after clients connected."""

    def __init__(self, cluster, broker_id):
        self.cluster = cluster
        self.broker_id = broker_id
        self.silent = False
        self.received = []  # the type names of the requests it got, in order
        self._server = RouterServer("tcp://127.0.0.1:0")
        self.address = self._server.endpoint
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake-broker-{broker_id}", daemon=True)
        self._thread.start()

    def count(self, request_type) -> int:
        return self.received.count(request_type.__name__)

    def _serve(self):
        poller = zmq.Poller()
        poller.register(self._server.socket, zmq.POLLIN)
        parked = []  # [(peer, cid, fetch, answer-by time)]: long polls waiting for records
        while not self._stopping.is_set():
            poller.poll(20)
            while (item := self._server.recv_nowait()) is not None:
                peer, cid, frames = item
                request = decode_request(frames)
                self.received.append(type(request).__name__)
                if not self.silent:
                    parked.append((peer, cid, request, time.monotonic() + getattr(request, "max_wait_ms", 0) / 1000))
            still_parked = []
            for peer, cid, request, answer_by_s in parked:
                response = self.cluster.answer(self.broker_id, request, final=time.monotonic() >= answer_by_s)
                if response is None:
                    still_parked.append((peer, cid, request, answer_by_s))
                else:
                    self._server.send(peer, cid, encode(response))
            parked = still_parked

    def stop(self):
        self._stopping.set()
        self._thread.join(5)
        self._server.close()


class FakeCluster:
    """Brokers 1..count with one topic, answering Metadata, ListOffsets, Fetch and Produce from
    state the test controls: `leaders[p]` (a broker id or None), `leader_epochs[p]`, and each
    partition's log of values. A broker asked about a partition it does not lead says NOT_LEADER,
    naming the leader, as a real one does. A fetch that finds nothing is answered when records
    arrive or its max_wait_ms is up, as a real long poll is."""

    def __init__(self, count, topic, partitions):
        self.topic = topic
        self.lock = threading.Lock()
        self.leaders = [p % count + 1 for p in range(partitions)]
        self.leader_epochs = [0] * partitions
        self.logs = [[] for _ in range(partitions)]
        # How many of the next fetches / produces are refused with THROTTLING, as a broker at its
        # limits refuses them (broker/backpressure.py): before doing anything with them.
        self.throttle = {ApiKey.FETCH: 0, ApiKey.PRODUCE: 0}
        self.brokers = {}
        for broker_id in range(1, count + 1):
            self.brokers[broker_id] = FakeBroker(self, broker_id)
        # where the metadata says each broker is: point one at a SilentListener to have it paused
        # before clients connect
        self.advertised = {broker_id: broker.address for broker_id, broker in self.brokers.items()}

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers.values())

    def leader_of(self, partition) -> FakeBroker:
        return self.brokers[self.leaders[partition]]

    def metadata(self) -> MetadataResponse:
        partitions = [{"partition": p, "leader": leader, "leader_epoch": self.leader_epochs[p],
                       "replicas": [leader or 1], "target_replicas": None, "in_sync": [leader or 1], "high_watermark": -1, "log_end_offset": -1}
                      for p, leader in enumerate(self.leaders)]
        return MetadataResponse([{"broker_id": i, "address": a} for i, a in self.advertised.items()], 1,
                                [{"name": self.topic, "error_code": 0, "error_message": "", "configs": {},
                                  "partitions": partitions}])

    def answer(self, broker_id, request, final=True):
        """The response to `request`; None for a fetch that would come back empty, unless final."""
        with self.lock:
            if self.throttle.get(request.API_KEY):
                self.throttle[request.API_KEY] -= 1
                return ErrorResponse(int(ErrorCode.THROTTLING), "the fake broker is at its limits", int(request.API_KEY))
            if isinstance(request, MetadataRequest):
                return self.metadata()
            if isinstance(request, ListOffsetsRequest):
                return ListOffsetsResponse([self._offset(broker_id, p) for p in request.partitions])
            if isinstance(request, FetchRequest):
                results = [self._fetch(broker_id, p) for p in request.partitions]
                return FetchResponse(results) if final or any(r["records"] or r["error_code"] for r in results) else None
            if isinstance(request, ProduceRequest):
                return ProduceResponse([self._append(broker_id, p) for p in request.partitions])
        raise AssertionError(f"the fake cluster does not serve {type(request).__name__}")

    def _refusal(self, broker_id, partition):
        """(code, message) if broker_id does not lead the partition, else None."""
        if self.leaders[partition] == broker_id:
            return None
        where = f"broker {self.leaders[partition]} leads it" if self.leaders[partition] else "it has no leader right now"
        return ErrorCode.NOT_LEADER, f"broker {broker_id} is not the leader of {self.topic}-{partition}: {where}"

    def _offset(self, broker_id, asked):
        refusal = self._refusal(broker_id, asked["partition"]) or (0, "")
        log = self.logs[asked["partition"]]
        offset = 0 if asked["timestamp_ms"] == EARLIEST_TIMESTAMP else len(log)
        return {**asked, "error_code": int(refusal[0]), "error_message": refusal[1], "offset": offset}

    def _fetch(self, broker_id, asked):
        refusal = self._refusal(broker_id, asked["partition"]) or (0, "")
        log = self.logs[asked["partition"]][asked["fetch_offset"]:]
        records = build_batch(log, base_offset=asked["fetch_offset"]) if log and not refusal[0] else b""
        return {"topic": asked["topic"], "partition": asked["partition"], "error_code": int(refusal[0]),
                "error_message": refusal[1], "high_watermark": len(self.logs[asked["partition"]]),
                "log_start_offset": 0, "records": records}

    def _append(self, broker_id, sent):
        refusal = self._refusal(broker_id, sent["partition"])
        result = {"topic": sent["topic"], "partition": sent["partition"], "log_start_offset": 0}
        if refusal is not None:
            return {**result, "error_code": int(refusal[0]), "error_message": refusal[1], "base_offset": -1}
        log = self.logs[sent["partition"]]
        base_offset = len(log)
        log.extend(record.value for record in decode_records(sent["records"]))
        return {**result, "error_code": 0, "error_message": "", "base_offset": base_offset}

    def stop(self):
        for broker in self.brokers.values():
            broker.stop()
