"""ListOffsets for clients: where a partition starts, ends, or first reaches a timestamp.

One request per leader, for every partition it leads, on the blocking request connections of
a ClusterView; Admin and Consumer both answer from here."""

from __future__ import annotations

from distlog.client.cluster import ClusterView
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import ListOffsetsRequest


def list_offsets(cluster: ClusterView, requests: dict, timeout_s: float, missing_ok: bool = False) -> dict:
    """{(topic, partition): timestamp_ms or EARLIEST_TIMESTAMP/LATEST_TIMESTAMP} ->
    {(topic, partition): offset} (-1 when no record is at or after the timestamp).
    With missing_ok, a partition whose leader does not answer maps to None instead of raising."""
    by_leader: dict = {}
    offsets: dict = {}
    for (topic, partition), timestamp_ms in requests.items():
        cluster.topic(topic)
        endpoint = cluster.leader_endpoint(topic, partition)
        if endpoint is None:
            if missing_ok:
                offsets[(topic, partition)] = None  # no leader right now (an election, or offline)
                continue
            raise DistlogError(ErrorCode.NOT_LEADER if 0 <= partition < cluster.topic(topic).partition_count
                               else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                               f"partition {topic}-{partition} has no leader right now (an election is under "
                               "way, or its replicas are down)" if 0 <= partition < cluster.topic(topic).partition_count
                               else f"partition {topic}-{partition} does not exist")
        by_leader.setdefault(endpoint, []).append({"topic": topic, "partition": partition, "timestamp_ms": timestamp_ms})
    for endpoint, partitions in by_leader.items():
        try:
            response = cluster.request_connection(endpoint).request(ListOffsetsRequest(partitions), timeout_s)
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
