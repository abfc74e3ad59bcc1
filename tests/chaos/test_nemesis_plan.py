"""The nemesis schedule on its own: a seed replays it exactly, and a run of as many faults as
there are kinds draws every kind (so "every fault kind" in a run is a fact, not luck)."""

import random

import pytest

from distlog.chaos.nemesis import FAULT_KINDS, PARTITION_SHAPES, plan_faults


def plans(seed, count, kinds=FAULT_KINDS):
    return list(plan_faults(random.Random(seed), kinds, count))


@pytest.mark.parametrize("seed", range(200))
def test_the_first_round_of_faults_draws_every_fault_kind(seed):
    assert sorted(p["kind"] for p in plans(seed, len(FAULT_KINDS))) == sorted(FAULT_KINDS)


def test_a_seed_replays_its_schedule_exactly_and_another_seed_does_not():
    assert plans(7, 50) == plans(7, 50)
    assert plans(7, 50) != plans(8, 50)


def test_a_long_schedule_draws_every_partition_shape_and_both_power_cuts():
    schedule = plans(3, 200)
    assert {p["shape"] for p in schedule} == set(PARTITION_SHAPES)
    assert {p["whole_cluster"] for p in schedule} == {True, False}


def test_chosen_kinds_only():
    assert {p["kind"] for p in plans(1, 30, ("pause", "kill"))} == {"pause", "kill"}


def test_waits_and_durations_stay_in_their_ranges():
    for plan in plan_faults(random.Random(5), FAULT_KINDS, 100, interval_s=(0.5, 1.0), duration_s=(2.0, 3.0)):
        assert 0.5 <= plan["wait_s"] <= 1.0 and 2.0 <= plan["duration_s"] <= 3.0
        assert 0 <= plan["pick"] < 1 and 0 <= plan["split"] < 1
