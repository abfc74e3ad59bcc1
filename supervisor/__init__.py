"""distlog.supervisor: spawns, watches, restarts brokers and injects faults."""
