"""distlog: a Kafka-style distributed, partitioned, replicated log."""

__version__ = "0.1.0"
