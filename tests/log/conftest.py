"""Fixtures for storage tests: a fake clock and a log opener that closes what it opened."""

import pytest

from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from tests.log.helpers import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def open_log(tmp_path, clock):
    """open_log(directory=None, **LogConfig fields) -> PartitionLog (default dir tmp_path/'p0')."""
    opened = []

    def opener(directory=None, **settings):
        log = PartitionLog.open(str(directory or tmp_path / "p0"), LogConfig(**settings), clock_ms=clock)
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close()
