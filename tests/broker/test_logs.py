"""The broker's structured log: JSON lines, levels, and size-based rotation that also moves
the process's stdout/stderr (where a crash's traceback goes) onto the new file."""

import json
import subprocess
import sys

import pytest

from distlog.broker.logs import BrokerLogger


class Lines:
    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_lines_are_json_with_the_event_and_fields_and_levels_filter():
    stream = Lines()
    logger = BrokerLogger(3, stream, level="warning")
    logger.info("noise", n=1)
    logger.warning("disk_slow", fsync_ms=812.5, path="/d")
    logger.error("partition_failed", partition="t-0")
    records = [json.loads(line) for line in stream.text.splitlines()]
    assert [(r["level"], r["event"]) for r in records] == [("warning", "disk_slow"), ("error", "partition_failed")]
    assert records[0]["broker"] == 3 and records[0]["fsync_ms"] == 812.5 and records[0]["ts"] > 1.6e9
    with pytest.raises(ValueError, match="log level must be one of"):
        BrokerLogger(1, stream, level="chatty")


CHILD = r"""
import os, sys
from distlog.broker.logs import BrokerLogger
path = sys.argv[1]
log = open(path, "ab")  # as the supervisor starts a broker: stdout and stderr on the log file
os.dup2(log.fileno(), 1); os.dup2(log.fileno(), 2)
logger = BrokerLogger(1, level="info", path=path, max_bytes=2000, backups=2)
for i in range(200):
    logger.info("tick", i=i, pad="x" * 40)
os.write(2, b"RAW-STDERR-AFTER-ROTATION\n")
"""


def test_the_log_file_rotates_by_size_keeps_n_backups_and_stderr_follows_the_new_file(tmp_path):
    path = tmp_path / "broker.log"
    run = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["broker.log", "broker.log.1", "broker.log.2"], files
    assert all(p.stat().st_size <= 2100 for p in tmp_path.iterdir())
    current = path.read_text().splitlines()
    assert current[-1] == "RAW-STDERR-AFTER-ROTATION", "stderr kept writing into a rotated file"
    assert json.loads(current[-2])["i"] == 199
