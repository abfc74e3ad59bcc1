"""`distlog cluster rebalance-leaders`: leadership goes back to the preferred replicas at once
(the brokers' own restoration is held off here by a long delay, so only the command can move it)."""

import json
import time
import uuid

import pytest
from click.testing import CliRunner

from distlog.cli import main
from distlog.client import Admin
from distlog.replication import manager as manager_module
from tests.broker.helpers import running_brokers

pytestmark = pytest.mark.integration

HANG_GUARD_S = 30.0


def wait_for(condition, what):
    deadline = time.monotonic() + HANG_GUARD_S
    while not (value := condition()):
        assert time.monotonic() < deadline, f"no {what} within {HANG_GUARD_S} s (a hang guard)"
        time.sleep(0.02)  # polling a condition
    return value


def test_rebalance_leaders_hands_leadership_back_to_the_preferred_replicas(tmp_path, monkeypatch):
    monkeypatch.setattr(manager_module, "PREFERRED_LEADER_DELAY_S", 3600.0)
    topic = f"bal-{uuid.uuid4().hex[:8]}"
    with running_brokers(str(tmp_path), 3, run={2, 3}) as (brokers, threads):
        address = brokers[1].config.listen
        with Admin(address) as admin:
            admin.create_topic(topic, partitions=3, replication_factor=3)
            preferred = {p: replicas[0] for p, replicas in enumerate(brokers[1].metadata.topics[topic].replicas)}
            assert sorted(preferred.values()) == [1, 2, 3], "placement spreads the preferred leaders"
            mine = next(p for p, b in preferred.items() if b == 1)

            def leaders():
                admin.cluster.refresh([topic])
                return admin.cluster.topics[topic].leaders

            wait_for(lambda: None not in leaders(), "every partition led (broker 1's by broker 2 or 3)")
            threads[0].start()  # broker 1 comes late: its partition stays led elsewhere
            wait_for(lambda: (topic, mine) in brokers[0].replicas, "broker 1 opening its replica")
            assert leaders()[mine] != 1
            runner = CliRunner()
            result = wait_for(lambda: (r := runner.invoke(main, ["cluster", "rebalance-leaders", "--bootstrap", address,
                                                                 "--topic", topic, "--json"])).exit_code == 0 and r,
                              "a rebalance that moves everything (broker 1 in sync first)")
            report = json.loads(result.output)
            assert [m[:2] for m in report["moved"]] == [[topic, mine]] and report["moved"][0][2] == 1
            assert leaders() == [preferred[p] for p in range(3)]
            assert report["leaders_per_broker"] == {"1": 1, "2": 1, "3": 1}
