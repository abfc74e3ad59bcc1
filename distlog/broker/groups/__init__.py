"""Consumer groups: the coordinator's pure state machine, its records, its assignors, and the broker glue."""
