"""Admin: create, delete, list and describe topics and consumer groups; list offsets; look at the cluster."""

from __future__ import annotations

import contextlib
import time

from distlog.client.cluster import ClusterView
from distlog.client.consumer import TopicPartition
from distlog.client.deadline import Deadline
from distlog.client.group import (GroupError, commit_error, commit_request, coordinator_call, fetch_request,
                                  topic_partitions)
from distlog.client.offsets import list_offsets
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import (
    EARLIEST_TIMESTAMP,
    LEAVE_EPOCH,
    AlterConfigsRequest,
    CreatePartitionsRequest,
    CreateTopicsRequest,
    DecommissionBrokerRequest,
    DeleteGroupsRequest,
    DeleteTopicsRequest,
    DescribeGroupsRequest,
    ElectLeadersRequest,
    ListGroupsRequest,
    ListOffsetsRequest,
    MetadataRequest,
    ReassignPartitionsRequest,
)

# A controller answers a change once committed and, within about this long, applied by every
# live broker; a client waits that long beyond the request's own timeout.
CHANGE_SPREAD_S = 6.0
# Pauses between attempts while the cluster has no controller (elections take about a second).
CONTROLLER_RETRY_BACKOFF_MIN_S = 0.1
CONTROLLER_RETRY_BACKOFF_MAX_S = 0.5


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
        request = CreateTopicsRequest(topics=[spec], timeout_ms=self._timeout_ms(timeout_s))
        self._controller_request(request, timeout_s, kept_earlier=lambda: self._created_as_asked(spec))
        self.cluster.topics.pop(name, None)

    def _created_as_asked(self, spec: dict) -> bool:
        """Whether the topic exists with the partitions and replication factor `spec` asked for:
        a retried create that finds that took effect the first time."""
        partitions = self._controller_partitions(spec["name"])
        return (partitions is not None and len(partitions) == spec["partitions"]
                and all(len(p["replicas"]) == spec["replication_factor"] for p in partitions))

    def _controller_partition_count(self, name: str) -> int | None:
        partitions = self._controller_partitions(name)
        return None if partitions is None else len(partitions)

    def _controller_partitions(self, name: str) -> list | None:
        """The topic's partitions as the controller has them, None if it has no such topic."""
        # Ask the controller, whose metadata is the committed truth: any other broker pulls it
        # every 100 ms and may lag, or may be failing to save it (a full disk) and keep the old.
        deadline_s = time.monotonic() + 1.0
        while True:
            with contextlib.suppress(DistlogError):
                connection = self.cluster.broker_connection(self.cluster.controller_id)
                response = connection.request(MetadataRequest(topics=[name]), max(0.2, deadline_s - time.monotonic()))
                found = [t for t in response.topics if t["name"] == name and not t["error_code"]]
                if found:
                    return found[0]["partitions"]
            if time.monotonic() >= deadline_s:
                return None
            time.sleep(0.1)  # a new controller may still be catching up: a backoff, not a synchronisation
            with contextlib.suppress(DistlogError):
                self.cluster.refresh([], 0.5)  # learn who the controller is now

    def delete_topic(self, name: str, timeout_s: float | None = None) -> None:
        # A retry told the topic is unknown is this request's own first attempt, kept (the
        # controller changed before it answered): the topic is gone, as asked.
        self._controller_request(DeleteTopicsRequest(topics=[name], timeout_ms=self._timeout_ms(timeout_s)), timeout_s,
                                 kept_earlier=lambda: self._controller_partitions(name) is None,
                                 kept_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        self.cluster.topics.pop(name, None)

    def alter_topic_config(self, name: str, set_configs: dict | None = None, delete: list | None = None,
                           timeout_s: float | None = None) -> None:
        """Set some of a topic's configs and return others to the broker defaults, leaving the
        rest (Kafka's incremental alter); INVALID_CONFIG names a bad key or value."""
        spec = {"name": name, "set": {str(k): str(v) for k, v in (set_configs or {}).items()},
                "delete": [str(k) for k in (delete or [])]}
        self._controller_request(AlterConfigsRequest(topics=[spec], timeout_ms=self._timeout_ms(timeout_s)), timeout_s)

    def create_partitions(self, name: str, count: int, timeout_s: float | None = None) -> None:
        """Grow the topic to `count` partitions in all (never fewer: INVALID_PARTITIONS). Keys
        map to partitions by count, so some keys' new records go to new partitions from now on."""
        request = CreatePartitionsRequest(topics=[{"name": name, "count": count}], timeout_ms=self._timeout_ms(timeout_s))
        # A retry refused because the topic has `count` partitions already is this request's
        # own first attempt, kept (a topic only grows, so nobody else shrank it back to count).
        self._controller_request(request, timeout_s, kept_earlier=lambda: self._controller_partition_count(name) == count,
                                 kept_code=ErrorCode.INVALID_PARTITIONS)
        self.cluster.topics.pop(name, None)

    def reassign_partition(self, name: str, partition: int, replicas: list, timeout_s: float | None = None) -> None:
        """Move a partition to `replicas` (the first becomes its preferred leader), as Kafka's
        alterPartitionReassignments does; returns once the controller has recorded it, while
        the move itself goes on (describe_topic shows "target_replicas" until it is done).
        A partition already moving refuses another move until that one is done."""
        spec = {"name": name, "partition": partition, "replicas": [int(b) for b in replicas]}
        self._controller_request(ReassignPartitionsRequest(topics=[spec], timeout_ms=self._timeout_ms(timeout_s)), timeout_s)
        self.cluster.topics.pop(name, None)

    def decommission_broker(self, broker_id: int, timeout_s: float | None = None) -> None:
        """Stop placing replicas on the broker and move every replica it holds to the others;
        returns once recorded. The broker is gone from describe_cluster()'s brokers once
        nothing is left on it: then it may be stopped."""
        request = DecommissionBrokerRequest(brokers=[int(broker_id)], timeout_ms=self._timeout_ms(timeout_s))
        self._controller_request(request, timeout_s)

    def reassignments(self, topics: list | None = None) -> list:
        """(topic, partition, replicas, target_replicas) of every move under way."""
        self.cluster.refresh(topics)
        response = self.cluster.request_any(MetadataRequest(topics=topics))
        return [(t["name"], p["partition"], list(p["replicas"]), list(p["target_replicas"]))
                for t in response.topics if not t["error_code"]
                for p in t["partitions"] if p["target_replicas"] is not None]

    def list_topics(self) -> list:
        self.cluster.refresh()
        return sorted(name for name in self.cluster.topics if not name.startswith("__"))

    def describe_topic(self, name: str) -> dict:
        """{"name", "configs", "partitions": [{"partition", "leader", "leader_epoch", "replicas",
        "in_sync", "log_start_offset", "high_watermark", "log_end_offset", "status"}]}.

        Each partition's leader is asked about its own partitions, so in-sync replicas, high
        watermark and log end are exact where the leader answers (other brokers only know them
        from the leader's last report). status is "ok", "under-replicated" (fewer in-sync
        replicas than replicas) or "offline" (no leader); unknown values are None."""
        self.cluster.refresh([name])
        self.cluster.topic(name)
        response = self.cluster.request_any(MetadataRequest(topics=[name]))
        [answer] = response.topics
        if answer["error_code"]:
            raise DistlogError(answer["error_code"], answer["error_message"])
        partitions = {p["partition"]: dict(p) for p in answer["partitions"]}
        addresses = {b["broker_id"]: b["address"] for b in response.brokers}
        earliest = {}
        # A leader that does not answer soon (down, paused) costs this long, not the request timeout.
        ask_s = min(2.0, self.request_timeout_s)
        for leader in {p["leader"] for p in partitions.values() if p["leader"] in addresses}:
            connection = self.cluster.request_connection(addresses[leader])
            try:
                own = connection.request(MetadataRequest(topics=[name]), ask_s)
                led = [p for p in own.topics[0]["partitions"] if p["leader"] == leader] if not own.topics[0]["error_code"] else []
                for p in led:
                    partitions[p["partition"]].update(p)
                starts = connection.request(ListOffsetsRequest([
                    {"topic": name, "partition": p["partition"], "timestamp_ms": EARLIEST_TIMESTAMP} for p in led]), ask_s)
                earliest.update({e["partition"]: e["offset"] for e in starts.partitions if not e["error_code"]})
            except DistlogError:
                continue  # keep what the first broker reported
        out = []
        for p in sorted(partitions):
            info = partitions[p]
            leader = info["leader"]
            status = ("offline" if leader is None else
                      "under-replicated" if len(info["in_sync"]) < len(info["replicas"]) else "ok")
            out.append({
                "partition": p,
                "leader": leader,
                "leader_epoch": info["leader_epoch"] if info["leader_epoch"] >= 0 else None,
                "replicas": list(info["replicas"]),
                "target_replicas": list(info["target_replicas"]) if info["target_replicas"] is not None else None,
                "in_sync": list(info["in_sync"]),
                "log_start_offset": earliest.get(p),
                "high_watermark": info["high_watermark"] if info["high_watermark"] >= 0 else None,
                "log_end_offset": info["log_end_offset"] if info["log_end_offset"] >= 0 else None,
                "status": status,
            })
        return {"name": name, "configs": dict(answer["configs"]), "partitions": out}

    # ------------------------------------------------------------------------------ offsets

    def list_offsets(self, requests: dict, missing_ok: bool = False) -> dict:
        """{(topic, partition): timestamp_ms or EARLIEST_TIMESTAMP/LATEST_TIMESTAMP} ->
        {(topic, partition): offset} (-1 when no record is at or after the timestamp).
        With missing_ok, a partition whose leader does not answer maps to None instead of raising."""
        return list_offsets(self.cluster, requests, self.request_timeout_s, missing_ok)

    def elect_preferred_leaders(self, topics: list | None = None) -> dict:
        """Hand each partition's leadership (of `topics`, None: all) back to its preferred (first)
        replica where that one is up and caught up, as Kafka's preferred leader election does;
        every broker is asked for the partitions it leads. {"moving": [(topic, partition, to)],
        "not_ready": [(topic, partition, preferred)], "unreachable": [broker id]}; leadership
        moves within a few hundred milliseconds of the call."""
        self.cluster.refresh([])
        out = {"moving": [], "not_ready": [], "unreachable": []}
        ask_s = min(2.0, self.request_timeout_s)  # a broker that is down costs this, not the request timeout
        for broker_id, address in sorted(self.cluster.brokers.items()):
            try:
                response = self.cluster.request_connection(address).request(ElectLeadersRequest(topics), ask_s)
            except DistlogError:
                out["unreachable"].append(broker_id)
                continue
            out["moving"] += [(m["topic"], m["partition"], m["to"]) for m in response.moving]
            out["not_ready"] += [(m["topic"], m["partition"], m["preferred"]) for m in response.not_ready]
        return out

    # ---------------------------------------------------------------------- consumer groups

    def list_groups(self) -> list:
        """[{"group_id", "state", "members", "coordinator"}] of every group, sorted by id. Every
        broker is asked for the groups it coordinates; one that does not answer soon is left
        out (its groups with it), and RequestTimedOutError if none answers."""
        self.cluster.refresh([])
        ask_s = min(2.0, self.request_timeout_s)  # a broker that is down costs this, not the request timeout
        groups, answered, last_error = [], 0, None
        for broker_id, address in sorted(self.cluster.brokers.items()):
            try:
                response = self.cluster.request_connection(address).request(ListGroupsRequest(), ask_s)
            except DistlogError as error:
                last_error = error
                continue
            answered += 1
            if response.error_code:
                raise GroupError(response.error_code, response.error_message)
            groups += [{"group_id": g["group_id"], "state": g["state"], "members": g["members"],
                        "coordinator": broker_id} for g in response.groups]
        if not answered and last_error is not None:
            raise last_error
        return sorted(groups, key=lambda g: g["group_id"])

    def describe_group(self, group_id: str) -> dict:
        """{"group_id", "state", "group_epoch", "assignor", "coordinator" (broker id), "members":
        [{"member_id", "client_id", "member_epoch", "subscribed_topics", "assignment":
        [TopicPartition]}]}; GROUP_ID_NOT_FOUND for a group the coordinator does not know."""
        response, endpoint = self._group_call(group_id, DescribeGroupsRequest([group_id]),
                                              lambda r: r.groups[0]["error_code"])
        [group] = response.groups
        if group["error_code"]:
            raise GroupError(group["error_code"], group["error_message"] or f"group '{group_id}' could not be described")
        members = [{**member, "subscribed_topics": list(member["subscribed_topics"]),
                    "assignment": sorted(TopicPartition(*tp) for tp in topic_partitions(member["assignment"]))}
                   for member in group["members"]]
        return {"group_id": group_id, "state": group["state"], "group_epoch": group["group_epoch"],
                "assignor": group["assignor"], "coordinator": self._broker_id(endpoint), "members": members}

    def delete_group(self, group_id: str) -> None:
        """Forget an empty group and its committed offsets; NON_EMPTY_GROUP while it has members."""
        response, _ = self._group_call(group_id, DeleteGroupsRequest([group_id]), lambda r: r.groups[0]["error_code"])
        [result] = response.groups
        if result["error_code"]:
            raise GroupError(result["error_code"], result["error_message"] or f"group '{group_id}' was not deleted")

    def group_offsets(self, group_id: str) -> dict:
        """{TopicPartition: committed offset} of every partition the group has committed."""
        response, _ = self._group_call(group_id, fetch_request(group_id, None), lambda r: r.error_code)
        if response.error_code:
            raise GroupError(response.error_code, response.error_message)
        return {TopicPartition(e["topic"], e["partition"]): e["offset"] for e in response.partitions if e["offset"] >= 0}

    def alter_group_offsets(self, group_id: str, offsets: dict) -> None:
        """Set the group's committed offsets ({(topic, partition): offset}), as a commit from
        outside the membership: the coordinator takes it only while the group has no members."""
        request = commit_request(group_id, "", LEAVE_EPOCH, offsets)
        response, _ = self._group_call(group_id, request, lambda r: r.error_code)
        error = commit_error(response, group_id)
        if error is not None:
            raise error

    def _group_call(self, group_id: str, request, error_of) -> tuple:
        return coordinator_call(self.cluster, group_id, request, error_of, Deadline(self.request_timeout_s),
                                request_timeout_s=self.request_timeout_s)

    def _broker_id(self, endpoint: str) -> int | None:
        if endpoint not in self.cluster.brokers.values():
            self.cluster.refresh([])
        return next((b for b, address in self.cluster.brokers.items() if address == endpoint), None)

    def describe_cluster(self) -> dict:
        self.cluster.refresh([])
        return {"brokers": dict(self.cluster.brokers), "controller": self.cluster.controller_id}

    # ------------------------------------------------------------------------------ helpers

    def _timeout_ms(self, timeout_s) -> int:
        return int((self.request_timeout_s if timeout_s is None else timeout_s) * 1000)

    def _controller_request(self, request, timeout_s, kept_earlier=None,
                            kept_code: ErrorCode = ErrorCode.TOPIC_ALREADY_EXISTS) -> None:
        """Send a topic change to a broker that answers (it forwards it to the controller) and
        retry, with a growing pause, while there is no controller (an election): all within the
        timeout, plus the time the controller may take to spread a change. Raise the first error.

        NOT_CONTROLLER leaves it open whether the change was kept (a controller busy applying
        a large change can look gone to the broker that forwarded it). So when a retry is
        refused as done already (`kept_code`: TOPIC_ALREADY_EXISTS for a create, UNKNOWN_TOPIC_OR_PARTITION
        for a delete), `kept_earlier()`
        decides whether that is this request's own earlier attempt, which counts as success
        (Kafka's AdminClient would report the topic as existing)."""
        timeout_s = self.request_timeout_s if timeout_s is None else timeout_s
        deadline = Deadline(timeout_s + CHANGE_SPREAD_S)
        backoff_s = CONTROLLER_RETRY_BACKOFF_MIN_S
        retried = False
        while True:
            connection = self.cluster.responsive_connection(deadline.remaining_s())
            response = connection.request(request, deadline.remaining_s())
            results = response.brokers if isinstance(request, DecommissionBrokerRequest) else response.topics
            errors = [t for t in results if t["error_code"]]
            if errors and errors[0]["error_code"] == ErrorCode.NOT_CONTROLLER and deadline.remaining_s() > backoff_s:
                time.sleep(backoff_s)  # a retry backoff: the election takes about a second
                backoff_s = min(2 * backoff_s, CONTROLLER_RETRY_BACKOFF_MAX_S)
                with contextlib.suppress(DistlogError):
                    self.cluster.refresh([], deadline.cap(self.request_timeout_s))
                retried = True
                continue
            if (errors and retried and kept_earlier is not None
                    and errors[0]["error_code"] == kept_code and kept_earlier()):
                return
            if errors:
                raise DistlogError(errors[0]["error_code"], errors[0]["error_message"])
            return
