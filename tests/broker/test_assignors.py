"""The consumer group partition assignors (groups/assignors.py): every partition assigned exactly
once to a subscriber, balance, stickiness, determinism, over many seeded random groups."""

import random
import time

import pytest

from distlog.broker.groups.assignors import ASSIGNORS, DEFAULT_ASSIGNOR, assign

SEEDS = range(500)


def group(subscriptions: dict, current: dict | None = None) -> dict:
    current = current or {}
    return {m: (frozenset(ts), frozenset(current.get(m, ()))) for m, ts in subscriptions.items()}


def random_case(seed: int, same_subscriptions: bool = False):
    """A random group: some topics known (one maybe with no partitions), subscriptions naming
    unknown topics too, and current partitions that overlap between members or are no longer
    valid."""
    rng = random.Random(seed)
    partition_counts = {f"t{i}": rng.randint(0, 12) for i in range(rng.randint(1, 5))}
    topics = sorted(partition_counts) + ["gone"]
    member_ids = [f"m{i:02d}" for i in rng.sample(range(40), rng.randint(1, 9))]
    shared = rng.sample(topics, rng.randint(1, len(topics)))
    members = {}
    for member_id in member_ids:
        subscribed = shared if same_subscriptions else rng.sample(topics, rng.randint(0, len(topics)))
        candidates = [(t, p) for t in topics for p in range(14)]
        current = rng.sample(candidates, rng.randint(0, 8))
        members[member_id] = (frozenset(subscribed), frozenset(current))
    return members, partition_counts


def owner_of(assignment: dict) -> dict:
    return {tp: m for m, tps in assignment.items() for tp in tps}


def assert_valid(members: dict, partition_counts: dict, assignment: dict):
    assert set(assignment) == set(members)
    assert all(isinstance(tps, frozenset) for tps in assignment.values())
    given = [tp for tps in assignment.values() for tp in tps]
    assert len(given) == len(set(given)), "a partition was given to two members"
    wanted = {
        (t, p)
        for subscribed, _ in members.values()
        for t in subscribed
        for p in range(partition_counts.get(t, 0))
    }
    assert set(given) == wanted
    for member_id, tps in assignment.items():
        assert all(t in members[member_id][0] for t, _ in tps), f"{member_id} got an unsubscribed topic"


def assert_no_improving_move(members: dict, assignment: dict):
    """No single partition can move to another subscriber of its topic that holds two fewer."""
    counts = {m: len(tps) for m, tps in assignment.items()}
    for donor, tps in assignment.items():
        for topic in {t for t, _ in tps}:
            for receiver, (subscribed, _) in members.items():
                if topic in subscribed:
                    assert counts[donor] - counts[receiver] <= 1, (donor, receiver, topic, counts)


def reordered(members: dict) -> dict:
    return dict(reversed(list(members.items())))


def minimum_moves(kept_counts: list, partitions: int) -> int:
    """Fewest current partitions that must move to reach exact balance: the P % M members with the
    most current partitions may keep floor(P/M) + 1, the rest floor(P/M)."""
    share, extras = divmod(partitions, len(kept_counts))
    ranked = sorted(kept_counts, reverse=True)
    return sum(max(0, kept - share - (1 if rank < extras else 0)) for rank, kept in enumerate(ranked))


def test_the_default_is_uniform_and_both_are_known():
    assert DEFAULT_ASSIGNOR == "uniform"
    assert ASSIGNORS == ("uniform", "range")


def test_an_unknown_assignor_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError) as error:
        assign("roundrobin", group({"a": ["t"]}), {"t": 3})
    message = str(error.value)
    assert "'roundrobin'" in message and "uniform" in message and "range" in message


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_every_partition_goes_once_to_a_subscriber(assignor):
    for seed in SEEDS:
        members, partition_counts = random_case(seed)
        assert_valid(members, partition_counts, assign(assignor, members, partition_counts))


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_same_input_same_output_whatever_the_members_order(assignor):
    for seed in SEEDS:
        members, partition_counts = random_case(seed)
        first = assign(assignor, members, partition_counts)
        assert assign(assignor, dict(members), dict(partition_counts)) == first
        assert assign(assignor, reordered(members), reordered(partition_counts)) == first


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_an_unknown_topic_gives_nothing_and_empty_members_are_listed(assignor):
    members = group({"a": ["gone"], "b": ["gone", "t"], "c": []}, {"a": [("gone", 0)]})
    assignment = assign(assignor, members, {"t": 2})
    assert assignment == {"a": frozenset(), "b": frozenset({("t", 0), ("t", 1)}), "c": frozenset()}


def test_uniform_balances_members_with_the_same_subscriptions_to_within_one():
    for seed in SEEDS:
        members, partition_counts = random_case(seed, same_subscriptions=True)
        counts = [len(tps) for tps in assign("uniform", members, partition_counts).values()]
        assert max(counts) - min(counts) <= 1, (seed, counts)


def test_uniform_with_differing_subscriptions_leaves_no_move_that_would_balance_better():
    for seed in SEEDS:
        members, partition_counts = random_case(seed)
        assignment = assign("uniform", members, partition_counts)
        assert_no_improving_move(members, assignment)
        by_subscription = {}
        for member_id, (subscribed, _) in members.items():
            known = frozenset(t for t in subscribed if t in partition_counts)
            by_subscription.setdefault(known, []).append(len(assignment[member_id]))
        for counts in by_subscription.values():
            assert max(counts) - min(counts) <= 1, (seed, by_subscription)


def test_uniform_third_member_takes_one_from_each_of_two():
    six = [("t", p) for p in range(6)]
    members = group({"a": ["t"], "b": ["t"], "c": ["t"]}, {"a": six[:3], "b": six[3:]})
    assignment = assign("uniform", members, {"t": 6})
    assert [len(assignment[m]) for m in "abc"] == [2, 2, 2]
    assert len(assignment["a"] & set(six[:3])) == 2
    assert len(assignment["b"] & set(six[3:])) == 2


def test_uniform_moves_only_what_balance_needs():
    for seed in SEEDS:
        members, partition_counts = random_case(seed, same_subscriptions=True)
        subscribed = next(iter(members.values()))[0]
        valid = {(t, p) for t in subscribed for p in range(partition_counts.get(t, 0))}
        # Current partitions that are valid and claimed by only one member, so that each one's
        # claim is unambiguous.
        claimed_by = {}
        for member_id, (_, current) in members.items():
            for tp in current & valid:
                claimed_by.setdefault(tp, []).append(member_id)
        current = {m: {tp for tp, ms in claimed_by.items() if ms == [m]} for m in members}
        members = {m: (subscribed, frozenset(current[m])) for m in members}
        assignment = assign("uniform", members, partition_counts)
        moved = sum(len(current[m] - assignment[m]) for m in members)
        assert moved == minimum_moves([len(current[m]) for m in members], len(valid)), seed


def test_uniform_a_member_joining_a_balanced_group_moves_the_minimum():
    for seed in SEEDS:
        rng = random.Random(seed)
        partition_counts = {f"t{i}": rng.randint(1, 20) for i in range(rng.randint(1, 4))}
        member_ids = [f"m{i}" for i in range(rng.randint(1, 8))]
        subscribed = list(partition_counts)
        before = assign("uniform", group(dict.fromkeys(member_ids, subscribed)), partition_counts)
        joined = group({**dict.fromkeys(member_ids, subscribed), "new": subscribed}, before)
        after = assign("uniform", joined, partition_counts)
        moved = sum(len(before[m] - after[m]) for m in member_ids)
        total = sum(partition_counts.values())
        assert moved == minimum_moves([len(before[m]) for m in member_ids] + [0], total), seed


def test_uniform_a_member_leaving_moves_only_its_partitions():
    for seed in SEEDS:
        rng = random.Random(seed)
        partition_counts = {f"t{i}": rng.randint(1, 20) for i in range(rng.randint(1, 4))}
        member_ids = [f"m{i}" for i in range(rng.randint(2, 8))]
        subscribed = list(partition_counts)
        before = assign("uniform", group(dict.fromkeys(member_ids, subscribed)), partition_counts)
        leaving = rng.choice(member_ids)
        staying = [m for m in member_ids if m != leaving]
        after = assign("uniform", group(dict.fromkeys(staying, subscribed), before), partition_counts)
        for member_id in staying:
            assert before[member_id] <= after[member_id], (seed, member_id)


def test_uniform_an_assignment_given_back_as_current_is_kept_whole():
    for seed in SEEDS:
        members, partition_counts = random_case(seed)
        first = assign("uniform", members, partition_counts)
        again = {m: (subscribed, first[m]) for m, (subscribed, _) in members.items()}
        assert assign("uniform", again, partition_counts) == first, seed


def test_uniform_with_differing_subscriptions_keeps_current_partitions_while_balanced():
    members = group(
        {"a": ["x", "y"], "b": ["y"], "c": ["x"]},
        {"a": [("x", 0), ("y", 0)], "b": [("y", 1), ("y", 2)], "c": [("x", 1), ("x", 2)]},
    )
    assignment = assign("uniform", members, {"x": 3, "y": 3})
    assert assignment == {m: current for m, (_, current) in members.items()}


def test_uniform_a_partition_claimed_twice_goes_to_one_member_the_same_way_each_time():
    members = group({"a": ["t"], "b": ["t"]}, {"a": [("t", 0)], "b": [("t", 0), ("t", 1)]})
    first = assign("uniform", members, {"t": 2})
    assert len(first["a"]) == len(first["b"]) == 1
    assert assign("uniform", reordered(members), {"t": 2}) == first


def test_uniform_drops_current_partitions_that_are_no_longer_valid():
    members = group({"a": ["t"], "b": ["t"]}, {"a": [("t", 5), ("gone", 0), ("u", 0)], "b": [("t", 0)]})
    assignment = assign("uniform", members, {"t": 2, "u": 1})
    assert assignment == {"a": frozenset({("t", 1)}), "b": frozenset({("t", 0)})}


def test_range_splits_each_topic_into_runs_with_the_extras_first():
    members = group({"c": ["x", "y"], "a": ["x", "y"], "b": ["x"]}, {"c": [("x", 0)]})
    assignment = assign("range", members, {"x": 7, "y": 3})
    assert assignment == {
        "a": frozenset({("x", 0), ("x", 1), ("x", 2), ("y", 0), ("y", 1)}),
        "b": frozenset({("x", 3), ("x", 4)}),
        "c": frozenset({("x", 5), ("x", 6), ("y", 2)}),
    }


@pytest.mark.parametrize("same_subscriptions", [True, False])
def test_uniform_assigns_a_hundred_members_a_thousand_partitions_quickly(same_subscriptions):
    rng = random.Random(7)
    partition_counts = {f"t{i}": 100 for i in range(10)}
    topics = sorted(partition_counts)
    partitions = [(t, p) for t in topics for p in range(100)]
    members = {}
    for i in range(100):
        subscribed = topics if same_subscriptions else rng.sample(topics, rng.randint(1, 10))
        members[f"m{i:03d}"] = (frozenset(subscribed), frozenset(rng.sample(partitions, 15)))
    started_s = time.perf_counter()
    assignment = assign("uniform", members, partition_counts)
    elapsed_s = time.perf_counter() - started_s
    assert_valid(members, partition_counts, assignment)
    assert elapsed_s < 1.0, f"took {elapsed_s * 1000:.0f} ms"
