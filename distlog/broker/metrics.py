"""A broker's metrics in Prometheus text format, served over HTTP on 127.0.0.1.

Names follow the Kafka and Redpanda exporters' habits (a `distlog_` prefix, `_total` counters,
`_seconds` histograms):

  distlog_requests_total{api}                     requests handled, by API
  distlog_request_latency_seconds{api}            receipt to reply, parked produces and fetches included
  distlog_produced_bytes_total{topic}             record batch bytes accepted as leader (new ones:
  distlog_produced_records_total{topic}           a retry answered from the producer table is not counted)
  distlog_fetched_bytes_total{topic}              record batch bytes sent to consumers
  distlog_partitions                              replicas hosted here
  distlog_partition_leaders                       partitions led here
  distlog_under_replicated_partitions             led here, with fewer in-sync replicas than replicas
  distlog_offline_partitions                      hosted here but failed (a disk error)
  distlog_raft_leader_elections_total             times this broker became a partition's leader
  distlog_raft_term_changes_total                 terms this broker's replicas moved to
  distlog_fsync_latency_seconds                   one group-commit fsync of one partition

Consumer-group lag joins when consumer groups exist. Every metric lives in the broker's own
registry (tests run several brokers in one process). The loop updates counters and
histograms as it works (prometheus_client's are thread-safe) and the gauges once a second;
the HTTP thread only reads them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from distlog.durable import write_file_atomically

# Where a broker writes the URL its metrics are served at (an ephemeral port: brokers of one
# host never collide); `distlog cluster status` reads it.
ENDPOINT_FILE = "metrics-endpoint"
_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_FSYNC_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


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
        self.partitions = Gauge("distlog_partitions", "Partition replicas hosted here", registry=r)
        self.leaders = Gauge("distlog_partition_leaders", "Partitions led here", registry=r)
        self.under_replicated = Gauge("distlog_under_replicated_partitions",
                                      "Partitions led here with fewer in-sync replicas than replicas", registry=r)
        self.offline = Gauge("distlog_offline_partitions", "Partitions hosted here that failed", registry=r)
        self.leader_elections = Counter("distlog_raft_leader_elections", "Times this broker became a leader",
                                        registry=r)
        self.term_changes = Counter("distlog_raft_term_changes", "Terms this broker's replicas moved to", registry=r)
        self.fsync_latency = Histogram("distlog_fsync_latency_seconds", "One partition's group-commit fsync",
                                       buckets=_FSYNC_BUCKETS_S, registry=r)
        self._server = None
        self.endpoint = None

    def serve(self, port: int, data_dir: str) -> str:
        """Serve /metrics on 127.0.0.1:port (0: any free port); record and return the URL."""
        self._server, _thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}/metrics"
        write_file_atomically(os.path.join(data_dir, ENDPOINT_FILE), self.endpoint.encode())
        return self.endpoint

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
