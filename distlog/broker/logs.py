"""The broker's structured log: one JSON object per line, through the standard `logging` module.

    logger = BrokerLogger(1, level="info", path="data/broker-1/broker.log", max_bytes=10 << 20, backups=5)
    logger.info("started", listen="tcp://127.0.0.1:9092")
    # {"ts": 1764640000.123, "level": "info", "broker": 1, "event": "started", "listen": "tcp://..."}

Without a path the lines go to stderr (the launcher and tests redirect it to a file). With one,
the file rotates by size as logging's RotatingFileHandler does (broker.log -> broker.log.1 ...,
`backups` kept), so a long-running broker's log no longer grows forever. The supervisor starts
the broker with its stdout and stderr on that same file, so a traceback from a crash lands
beside the last log lines; after each rotation the broker points both at the new file, or
they would keep writing into the rotated one.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys

LEVELS = ("debug", "info", "warning", "error")
# The brokers' --log-level, --log-max-bytes and --log-backups defaults: `distlog cluster up` sets
# them for the brokers it supervises, as it passes nothing else of logging on their command lines.
LOG_LEVEL_ENV = "DISTLOG_LOG_LEVEL"
LOG_MAX_BYTES_ENV = "DISTLOG_LOG_MAX_BYTES"
LOG_BACKUPS_ENV = "DISTLOG_LOG_BACKUPS"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


class JsonLineFormatter(logging.Formatter):
    """A record's event and fields as one JSON line (the fields ride in `record.fields`)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname.lower(), **record.fields}
        return json.dumps(line, default=str)


class _RotatingLogFile(logging.handlers.RotatingFileHandler):
    """Size-based rotation that also moves the process's stdout/stderr to the new file."""

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is not None:
            for fd in (1, 2):
                os.dup2(self.stream.fileno(), fd)


class BrokerLogger:
    def __init__(self, broker_id: int, stream=None, level: str = "info", path: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS):
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.broker_id = broker_id
        # One logger object per BrokerLogger (not logging's registry by name): tests run several
        # brokers in one process, each with its own stream.
        self._logger = logging.Logger(f"distlog.broker.{broker_id}", getattr(logging, level.upper()))
        if path is not None:
            handler = _RotatingLogFile(path, maxBytes=max_bytes, backupCount=backups)
        else:
            handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonLineFormatter())
        self._logger.addHandler(handler)

    def log(self, level: str, event: str, **fields) -> None:
        number = getattr(logging, level.upper())
        if self._logger.isEnabledFor(number):
            record = self._logger.makeRecord(self._logger.name, number, "", 0, "", (), None)
            record.fields = {"broker": self.broker_id, "event": event, **fields}
            self._logger.handle(record)

    def debug(self, event: str, **fields) -> None:
        self.log("debug", event, **fields)

    def info(self, event: str, **fields) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields) -> None:
        self.log("error", event, **fields)

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)
