"""distlog.replication: a partition replica — one Raft group driving one partition log."""
