"""One-line structured logs to stderr: one JSON object per line, greppable and machine-readable."""

from __future__ import annotations

import json
import sys
import time


class BrokerLogger:
    def __init__(self, broker_id: int, stream=None):
        self.broker_id = broker_id
        self.stream = stream or sys.stderr

    def log(self, level: str, event: str, **fields) -> None:
        record = {"ts": round(time.time(), 3), "level": level, "broker": self.broker_id, "event": event, **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def info(self, event: str, **fields) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self.log("error", event, **fields)
