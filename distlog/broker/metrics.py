"""A broker's metrics in Prometheus text format, served over HTTP on 127.0.0.1.

Names follow the Kafka and Redpanda exporters' habits (a `distlog_` prefix, `_total` counters,
`_seconds` histograms):

  distlog_requests_total{api}                     requests handled, by API
  distlog_request_latency_seconds{api}            receipt to reply, parked produces and fetches included
  distlog_produced_bytes_total{topic}             record batch bytes accepted as leader (new ones:
  distlog_produced_records_total{topic}           a retry answered from the producer table is not counted)
  distlog_fetched_bytes_total{topic}              record batch bytes sent to consumers
  distlog_fetched_records_total{topic}            records in them
  distlog_fsync_latency_seconds                   one group-commit fsync of one partition
  distlog_requests_throttled_total{api}           produces and fetches refused with THROTTLING
  distlog_parked_requests                         produces and fetches waiting for a later answer
  distlog_parked_produce_bytes                    record bytes of produces waiting for their acks
  distlog_partitions                              replicas hosted here
  distlog_partition_leaders                       partitions led here
  distlog_under_replicated_partitions             led here, with fewer in-sync replicas than replicas
  distlog_offline_partitions                      hosted here but failed (a disk error)
  distlog_partition_high_watermark{topic,partition}   of each partition led here
  distlog_raft_leader_elections_total             times this broker became a partition's leader
  distlog_raft_term_changes_total                 terms this broker's replicas moved to
  distlog_consumer_group_committed_offset{group,topic,partition}   groups coordinated here
  distlog_consumer_group_lag{group,topic,partition}   high watermark - committed offset

Counters and histograms are updated by the loop as it works, once per request or batch, never
per record (prometheus_client's are thread-safe). The rest is a BrokerState the loop takes once
a second (take_state) and the HTTP thread renders at scrape time: the loop's structures are
never read from another thread, and labelled series (a group deleted, a partition moved away)
vanish with the state that had them instead of lingering as a stale Gauge child would.

Lag is reported by the group's coordinator for partitions it hosts a replica of (leader or
follower: a follower's high watermark trails the leader's by a heartbeat at most); for the
others, join distlog_consumer_group_committed_offset with distlog_partition_high_watermark.

Every metric lives in the broker's own registry (tests run several brokers in one process).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from distlog.durable import write_file_atomically
from distlog.log.batch import count_records

# Where a broker writes the URL its metrics are served at, for --metrics-port 0 (any free port:
# the launcher and tests); the supervisor picks the port itself and records it in cluster.json.
ENDPOINT_FILE = "metrics-endpoint"
_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class BrokerState:
    """What the gauges show, as the loop saw it at one moment."""

    partitions: int = 0
    leaders: int = 0
    under_replicated: int = 0
    offline: int = 0
    leader_elections: int = 0
    term_changes: int = 0
    led_high_watermarks: dict = field(default_factory=dict)  # (topic, partition) -> hw, led here
    hosted_high_watermarks: dict = field(default_factory=dict)  # (topic, partition) -> hw, every replica here
    committed_offsets: dict = field(default_factory=dict)  # (group, topic, partition) -> offset, coordinated here


def take_state(replicas: dict, in_sync_replicas, offline: dict, raft_stats: dict, group_offsets) -> BrokerState:
    """A BrokerState of replicas {(topic, partition): replica}, in_sync_replicas(key) -> [ids],
    the failed partitions, the replication manager's counters, and group_offsets: iterable of
    {group: {(topic, partition): committed}} (each with an .offset), one per coordinated partition."""
    led = {key: replica.high_watermark for key, replica in replicas.items() if replica.is_leader}
    committed = {(group, topic, partition): entry.offset
                 for offsets in group_offsets for group, by_partition in offsets.items()
                 for (topic, partition), entry in by_partition.items()}
    return BrokerState(
        partitions=len(replicas), leaders=len(led),
        under_replicated=sum(len(in_sync_replicas(key)) < len(replicas[key].voters) for key in led),
        offline=len(offline), leader_elections=raft_stats["leader_elections"], term_changes=raft_stats["term_changes"],
        led_high_watermarks=led,
        hosted_high_watermarks={key: replica.high_watermark for key, replica in replicas.items()},
        committed_offsets=committed)


class _StateCollector:
    """Renders the latest BrokerState at scrape time (called on the HTTP server's thread)."""

    def __init__(self):
        self.state = BrokerState()  # replaced whole by the loop: a reference swap, no lock needed

    def collect(self):
        state = self.state
        for name, text, value in (
                ("distlog_partitions", "Partition replicas hosted here", state.partitions),
                ("distlog_partition_leaders", "Partitions led here", state.leaders),
                ("distlog_under_replicated_partitions",
                 "Partitions led here with fewer in-sync replicas than replicas", state.under_replicated),
                ("distlog_offline_partitions", "Partitions hosted here that failed", state.offline)):
            yield GaugeMetricFamily(name, text, value=value)
        yield CounterMetricFamily("distlog_raft_leader_elections", "Times this broker became a partition's leader",
                                  value=state.leader_elections)
        yield CounterMetricFamily("distlog_raft_term_changes", "Terms this broker's replicas moved to",
                                  value=state.term_changes)
        high_watermarks = GaugeMetricFamily("distlog_partition_high_watermark",
                                            "High watermark of each partition led here", labels=["topic", "partition"])
        for (topic, partition), hw in sorted(state.led_high_watermarks.items()):
            high_watermarks.add_metric([topic, str(partition)], hw)
        yield high_watermarks
        yield from self._groups(state)

    @staticmethod
    def _groups(state: BrokerState):
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily("distlog_consumer_group_committed_offset",
                                      "Committed offset of each group coordinated here", labels=labels)
        lag = GaugeMetricFamily("distlog_consumer_group_lag",
                                "High watermark minus committed offset (partitions hosted here)", labels=labels)
        for (group, topic, partition), offset in sorted(state.committed_offsets.items()):
            committed.add_metric([group, topic, str(partition)], offset)
            hw = state.hosted_high_watermarks.get((topic, partition))
            if hw is not None:
                lag.add_metric([group, topic, str(partition)], max(0, hw - offset))
        yield committed
        yield lag


class BrokerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("distlog_requests", "Requests handled", ["api"], registry=r)
        self.request_latency = Histogram("distlog_request_latency_seconds", "Request receipt to reply", ["api"],
                                         buckets=_LATENCY_BUCKETS_S, registry=r)
        self.produced_bytes = Counter("distlog_produced_bytes", "Record batch bytes accepted as leader", ["topic"],
                                      registry=r)
        self.produced_records = Counter("distlog_produced_records", "Records accepted as leader", ["topic"], registry=r)
        self.fetched_bytes = Counter("distlog_fetched_bytes", "Record batch bytes sent to consumers", ["topic"],
                                     registry=r)
        self.fetched_records = Counter("distlog_fetched_records", "Records sent to consumers", ["topic"], registry=r)
        self.throttled = Counter("distlog_requests_throttled", "Produces and fetches refused with THROTTLING "
                                 "(backpressure.py)", ["api"], registry=r)
        self.parked_requests = Gauge("distlog_parked_requests", "Produces and fetches waiting for a later answer",
                                     registry=r)
        self.parked_produce_bytes = Gauge("distlog_parked_produce_bytes", "Record bytes of produces waiting for "
                                          "their acknowledgement", registry=r)
        self.fsync_latency = Histogram("distlog_fsync_latency_seconds", "One partition's group-commit fsync",
                                       buckets=_FSYNC_BUCKETS_S, registry=r)
        self._state = _StateCollector()
        r.register(self._state)
        self._server = None
        self.endpoint = None

    def set_state(self, state: BrokerState) -> None:
        """What the next scrapes show of the gauges (the loop calls this once a second)."""
        self._state.state = state

    def fetched(self, topic: str, records: bytes) -> None:
        """One partition's share of a fetch response: its bytes, and its records from the batch headers."""
        self.fetched_bytes.labels(topic).inc(len(records))
        self.fetched_records.labels(topic).inc(count_records(records))

    def serve(self, port: int, data_dir: str) -> str:
        """Serve /metrics on 127.0.0.1:port (0: any free port); record and return the URL."""
        try:
            self._server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        except OSError as error:
            raise OSError(error.errno, f"cannot serve metrics on 127.0.0.1:{port}: {error.strerror} "
                                       f"(choose another --metrics-port)") from error
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}/metrics"
        write_file_atomically(os.path.join(data_dir, ENDPOINT_FILE), self.endpoint.encode())
        return self.endpoint

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
