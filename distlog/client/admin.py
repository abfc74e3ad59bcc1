"""Admin: create, delete, list and describe topics; list offsets; look at the cluster."""

from __future__ import annotations

from distlog.client.cluster import ClusterView
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    CreateTopicsRequest,
    DeleteTopicsRequest,
    ListOffsetsRequest,
)


class Admin:
    """Cluster administration, in the spirit of Kafka's AdminClient (blocking calls, clear errors).

        admin = Admin("tcp://127.0.0.1:9092")
        admin.create_topic("orders", partitions=3)
        print(admin.describe_topic("orders"))
        admin.close()
    """

    def __init__(self, bootstrap, request_timeout_s: float = 30.0):
        self.cluster = ClusterView(bootstrap, request_timeout_s)
        self.request_timeout_s = request_timeout_s

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.cluster.close()

    # ------------------------------------------------------------------------------ topics

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1, config: dict | None = None,
                     timeout_s: float | None = None) -> None:
        """Create one topic; DistlogError (TOPIC_ALREADY_EXISTS, INVALID_CONFIG, ...) if refused."""
        spec = {"name": name, "partitions": partitions, "replication_factor": replication_factor,
                "configs": {str(k): str(v) for k, v in (config or {}).items()}}
        self._controller_request(CreateTopicsRequest(topics=[spec], timeout_ms=self._timeout_ms(timeout_s)), timeout_s)
        self.cluster.topics.pop(name, None)

    def delete_topic(self, name: str, timeout_s: float | None = None) -> None:
        self._controller_request(DeleteTopicsRequest(topics=[name], timeout_ms=self._timeout_ms(timeout_s)), timeout_s)
        self.cluster.topics.pop(name, None)

    def list_topics(self) -> list:
        self.cluster.refresh()
        return sorted(name for name in self.cluster.topics if not name.startswith("__"))

    def describe_topic(self, name: str) -> dict:
        """{"name", "configs", "partitions": [{"partition", "leader", "replicas", "in_sync",
        "log_start_offset", "high_watermark"}]} — offsets asked of each partition's leader."""
        self.cluster.refresh([name])
        info = self.cluster.topic(name)
        partitions = list(range(info.partition_count))
        earliest = self.list_offsets({(name, p): EARLIEST_TIMESTAMP for p in partitions}, missing_ok=True)
        latest = self.list_offsets({(name, p): LATEST_TIMESTAMP for p in partitions}, missing_ok=True)
        return {
            "name": name,
            "configs": dict(info.configs),
            "partitions": [
                {
                    "partition": p,
                    "leader": info.leaders[p],
                    "replicas": list(info.replicas[p]),
                    "in_sync": list(info.in_sync[p]),
                    "log_start_offset": earliest.get((name, p)),
                    "high_watermark": latest.get((name, p)),
                }
                for p in partitions
            ],
        }

    # ------------------------------------------------------------------------------ offsets

    def list_offsets(self, requests: dict, missing_ok: bool = False) -> dict:
        """{(topic, partition): timestamp_ms or EARLIEST_TIMESTAMP/LATEST_TIMESTAMP} ->
        {(topic, partition): offset} (-1 when no record is at or after the timestamp).
        With missing_ok, a partition whose leader does not answer maps to None instead of raising."""
        by_leader: dict = {}
        for (topic, partition), timestamp_ms in requests.items():
            self.cluster.topic(topic)
            endpoint = self.cluster.leader_endpoint(topic, partition)
            if endpoint is None:
                raise DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"partition {topic}-{partition} does not exist")
            by_leader.setdefault(endpoint, []).append({"topic": topic, "partition": partition, "timestamp_ms": timestamp_ms})
        offsets = {}
        for endpoint, partitions in by_leader.items():
            try:
                response = self.cluster.request_connection(endpoint).request(ListOffsetsRequest(partitions), self.request_timeout_s)
            except DistlogError:
                if not missing_ok:
                    raise
                offsets.update({(p["topic"], p["partition"]): None for p in partitions})
                continue
            for entry in response.partitions:
                if entry["error_code"] and not missing_ok:
                    raise DistlogError(entry["error_code"], entry["error_message"])
                offsets[(entry["topic"], entry["partition"])] = None if entry["error_code"] else entry["offset"]
        return offsets

    def describe_cluster(self) -> dict:
        self.cluster.refresh([])
        return {"brokers": dict(self.cluster.brokers), "controller": self.cluster.controller_id}

    # ------------------------------------------------------------------------------ helpers

    def _timeout_ms(self, timeout_s) -> int:
        return int((self.request_timeout_s if timeout_s is None else timeout_s) * 1000)

    def _controller_request(self, request, timeout_s) -> None:
        """Send a topic change to the controller (following NOT_CONTROLLER once); raise the first error."""
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        for attempt in range(2):
            connection = self.cluster.controller_connection()
            response = connection.request(request, timeout_s + 5)
            errors = [t for t in response.topics if t["error_code"]]
            if errors and errors[0]["error_code"] == ErrorCode.NOT_CONTROLLER and attempt == 0:
                self.cluster.refresh([])
                continue
            if errors:
                raise DistlogError(errors[0]["error_code"], errors[0]["error_message"])
            return
