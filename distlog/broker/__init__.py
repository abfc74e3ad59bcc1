"""distlog.broker: the broker process — event loop, request handlers, topic registry."""
