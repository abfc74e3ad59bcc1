"""distlog.consensus: Raft as a pure state machine, and its deterministic simulator."""
