"""distlog.client: the ZeroMQ client library — Producer, Consumer, Admin."""
