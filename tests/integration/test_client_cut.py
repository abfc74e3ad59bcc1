"""The `clients` fault rule on a real broker: every client is cut off, while the supervisor's
probes (named "probe-...") still get through, so the cut can be healed and the broker is not
taken for dead."""

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin
from distlog.client.probe import ping, set_fault_rules
from distlog.protocol.errors import DistlogError
from distlog.transports.faults import CLIENTS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_a_client_cut_stops_clients_but_not_the_probes_that_heal_it(tmp_path):
    [broker] = start_brokers(1, str(tmp_path))
    try:
        with Admin(broker.address, request_timeout_s=1) as admin:
            admin.create_topic("t")
            set_fault_rules(broker.address, {"drop_to": [CLIENTS], "drop_from": [CLIENTS]}, 5)
            assert ping(broker.address, 2) is not None  # the probe gets through
            with pytest.raises(DistlogError):
                admin.list_topics()  # a client does not
            set_fault_rules(broker.address, {}, 5)
            assert "t" in admin.list_topics()
    finally:
        stop_brokers([broker])
