"""Fixtures that start real broker processes and always stop them."""

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from tests.supervisor.conftest import cluster_dir as supervised_cluster_dir

# A data dir for a cluster under the supervisor, brought down and checked for leftovers after.
cluster_dir = supervised_cluster_dir


@pytest.fixture(scope="module")
def one_broker(tmp_path_factory):
    brokers = start_brokers(1, str(tmp_path_factory.mktemp("one-broker")))
    try:
        yield brokers[0]
    finally:
        stop_brokers(brokers)


@pytest.fixture(scope="module")
def three_brokers(tmp_path_factory):
    brokers = start_brokers(3, str(tmp_path_factory.mktemp("three-brokers")))
    try:
        yield brokers
    finally:
        stop_brokers(brokers)


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker of this test's own (for restarts and fault injection)."""
    brokers = start_brokers(1, str(tmp_path))
    try:
        yield brokers[0]
    finally:
        stop_brokers(brokers)
