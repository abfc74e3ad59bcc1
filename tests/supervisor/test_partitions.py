"""Partitions as fault rules: groups become cuts, cuts become each broker's drop lists."""

import pytest

from distlog.supervisor.partitions import cuts_between, rules_for_cuts


def test_two_halves_cut_both_ways():
    assert cuts_between([[1], [2, 3]]) == {(1, 2), (2, 1), (1, 3), (3, 1)}


def test_a_broker_in_no_group_is_a_bridge():
    cuts = cuts_between([[1, 2], [4, 5]])
    assert not any(3 in cut for cut in cuts)
    assert (1, 4) in cuts and (5, 2) in cuts and (1, 2) not in cuts


def test_each_end_enforces_a_one_way_cut():
    rules = rules_for_cuts([1, 2, 3], {(1, 2)})
    assert rules == {1: {"drop_to": ["broker-2"], "drop_from": []},
                     2: {"drop_to": [], "drop_from": ["broker-1"]},
                     3: {"drop_to": [], "drop_from": []}}


def test_no_cuts_heal_everyone():
    assert all(r == {"drop_to": [], "drop_from": []} for r in rules_for_cuts([1, 2, 3], set()).values())


@pytest.mark.parametrize("cuts, message", [({(1, 7)}, "not in the cluster"), ({(2, 2)}, "itself")])
def test_bad_cuts_are_refused(cuts, message):
    with pytest.raises(ValueError, match=message):
        rules_for_cuts([1, 2, 3], cuts)
