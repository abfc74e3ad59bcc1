"""distlog.transports: how frames move between clients and brokers (ZeroMQ, fault rules)."""
