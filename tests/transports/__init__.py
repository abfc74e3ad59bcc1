"""Tests of distlog.transports: ZeroMQ envelopes, pipelining, fault rules."""
