"""distlog.protocol: request/response types, the frame codec, error codes, versions."""
