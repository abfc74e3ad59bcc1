"""Tests of distlog.supervisor: the cluster record, ports, backoff, the Supervisor and the CLI."""
