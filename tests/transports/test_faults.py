"""FaultRules on their own: what each rule drops, healing, counters, and the JSON form."""

import json

import pytest

from distlog.transports.faults import CLIENTS, FaultRules


def test_no_rules_allow_everything():
    rules = FaultRules()
    assert rules.allows_send("broker-2") and rules.allows_recv("broker-2")
    assert not rules.active
    assert (rules.dropped_to, rules.dropped_from) == (0, 0)


def test_drop_to_is_one_way_and_counted():
    rules = FaultRules()
    rules.drop_to("broker-2")
    assert not rules.allows_send("broker-2")
    assert rules.allows_recv("broker-2")
    assert rules.allows_send("broker-3")
    assert (rules.dropped_to, rules.dropped_from) == (1, 0)


def test_drop_from_is_one_way_and_counted():
    rules = FaultRules()
    rules.drop_from("broker-2")
    assert not rules.allows_recv("broker-2")
    assert rules.allows_send("broker-2")
    assert (rules.dropped_to, rules.dropped_from) == (0, 1)


def test_heal_one_peer_leaves_the_others_cut():
    rules = FaultRules(drop_to=["broker-2", "broker-3"], drop_from=["broker-2"])
    rules.heal("broker-2")
    assert rules.allows_send("broker-2") and rules.allows_recv("broker-2")
    assert not rules.allows_send("broker-3")


def test_heal_everything():
    rules = FaultRules(drop_to=["broker-2"], drop_from=["broker-3"])
    rules.heal()
    assert not rules.active
    assert rules.allows_send("broker-2") and rules.allows_recv("broker-3")


def test_dict_form_survives_json_and_carries_counters():
    rules = FaultRules(drop_to=["broker-2"], drop_from=["broker-1", "broker-3"])
    rules.allows_send("broker-2")
    data = json.loads(json.dumps(rules.to_dict()))
    assert data == {"drop_to": ["broker-2"], "drop_from": ["broker-1", "broker-3"],
                    "dropped_to": 1, "dropped_from": 0}
    again = FaultRules.from_dict(data)
    assert again.to_dict()["drop_from"] == ["broker-1", "broker-3"]
    assert again.dropped_to == 0


def test_replace_in_place_keeps_counters_and_is_seen_by_sharers():
    shared = FaultRules(drop_to=["broker-2"])
    shared.allows_send("broker-2")
    shared.replace(FaultRules.from_dict({"drop_from": ["broker-3"]}))
    assert shared.allows_send("broker-2")
    assert not shared.allows_recv("broker-3")
    assert (shared.dropped_to, shared.dropped_from) == (1, 1)


@pytest.mark.parametrize("bad", [[], {"drop_to": "broker-2"}, {"drop_from": [3]}])
def test_bad_dict_is_a_clear_value_error(bad):
    with pytest.raises(ValueError, match="fault rules"):
        FaultRules.from_dict(bad)


def test_the_clients_rule_cuts_every_client_but_no_broker_or_probe():
    rules = FaultRules(drop_to=[CLIENTS], drop_from=[CLIENTS])
    client = "00d1b2c3e4"  # the hex name of an identity ZeroMQ made up
    assert not rules.allows_send(client) and not rules.allows_recv(client)
    assert rules.allows_send("broker-2") and rules.allows_recv("broker-2")
    assert rules.allows_send("probe-1a2b") and rules.allows_recv("probe-1a2b")
    assert (rules.dropped_to, rules.dropped_from) == (1, 1)
