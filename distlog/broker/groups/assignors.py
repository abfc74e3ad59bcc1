"""Server-side partition assignors (KIP-848): who in a consumer group reads which partition.

`assign(assignor, members, partition_counts)` is a pure function. The coordinator calls it when
a group's membership or subscriptions change, and when a topic changes partition count, to
compute the group's *target* assignment. It passes each member's subscribed topics and its
current target partitions. Members then move toward the new target through heartbeats.

Two assignors, the same as Kafka's:

- **uniform** (the default; Kafka's UniformAssignor) balances the number of partitions per
  member and is sticky: each member keeps as many of its current partitions as balance allows,
  so a rebalance moves only the partitions it has to. Moving a partition means revoking it from
  one consumer and then assigning it to another, and the partition is not read in between.
  Keeping moves few is the point of this assignor.
- **range** (Kafka's RangeAssignor) gives each subscriber of a topic a contiguous run of its
  partitions. The first members by id get one extra each. It is not sticky. It is there for
  users who want co-partitioned topics read by the same member.

Only a topic's subscribers get its partitions, and every partition of a known subscribed topic
goes to exactly one of them. A topic missing from `partition_counts` (unknown or deleted)
gives nothing. A current partition that is no longer valid (its topic is unknown,
unsubscribed, or has fewer partitions now) is dropped. The output depends only on the values
passed in: members are sorted by id and sets are sorted before use. Nothing depends on dict or
set iteration order or on Python's randomized `hash()`, so every coordinator replica computes
the same target.

Uniform has two builders, as Kafka's does. When every member has the same subscription, exact
quotas are possible. The counts are floor(P/M) or one more, and the extra slots go to the
members that already hold the most, which gives the fewest moves possible. With differing
subscriptions there is no simple quota. Members keep their current partitions, the rest go one
at a time to the eligible member with the fewest, and then partitions move from fuller members
to emptier ones. This stops when no single move can bring two members closer than one
partition apart.

Pure: no sockets, no clock.
"""

from __future__ import annotations

import heapq

DEFAULT_ASSIGNOR = "uniform"
ASSIGNORS = ("uniform", "range")


def assign(assignor: str, members: dict, partition_counts: dict) -> dict:
    """The target assignment of a consumer group.

    members: {member_id: (subscribed_topics: frozenset[str], current: frozenset[(topic, partition)])}
    partition_counts: {topic: number of partitions}; topics missing from it (unknown/deleted) get nothing.
    Returns {member_id: frozenset[(topic, partition)]} for every member (empty frozenset if nothing),
    each partition of every subscribed known topic given to exactly one member subscribed to its topic.
    Deterministic: same input -> same output. Raises ValueError naming the known assignors for an
    unknown name.
    """
    if assignor not in _BUILDERS:
        raise ValueError(
            f"unknown assignor {assignor!r} (known assignors: {', '.join(ASSIGNORS)})"
        )
    subscriptions = _effective_subscriptions(members, partition_counts)
    owned = _BUILDERS[assignor](subscriptions, members, partition_counts)
    return {m: frozenset(owned.get(m, ())) for m in sorted(members)}


def _effective_subscriptions(members: dict, partition_counts: dict) -> dict:
    """member id -> sorted tuple of its subscribed topics that have partitions, in member id order.
    Members left with no such topic are left out, because no builder has anything to give them."""
    subscriptions = {}
    for member_id in sorted(members):
        topics = tuple(sorted(t for t in members[member_id][0] if partition_counts.get(t, 0) > 0))
        if topics:
            subscriptions[member_id] = topics
    return subscriptions


def _subscribers_by_topic(subscriptions: dict) -> dict:
    """topic -> its subscribers in member id order, for topics in name order."""
    by_topic = {}
    for member_id, topics in subscriptions.items():
        for topic in topics:
            by_topic.setdefault(topic, []).append(member_id)
    return {t: by_topic[t] for t in sorted(by_topic)}


# -- range ---------------------------------------------------------------------------------------


def _range(subscriptions: dict, members: dict, partition_counts: dict) -> dict:
    owned = {m: [] for m in subscriptions}
    for topic, subscribers in _subscribers_by_topic(subscriptions).items():
        share, extras = divmod(partition_counts[topic], len(subscribers))
        start = 0
        for index, member_id in enumerate(subscribers):
            end = start + share + (1 if index < extras else 0)
            owned[member_id].extend((topic, p) for p in range(start, end))
            start = end
    return owned


# -- uniform -------------------------------------------------------------------------------------


def _uniform(subscriptions: dict, members: dict, partition_counts: dict) -> dict:
    kept = _sticky_claims(subscriptions, members, partition_counts)
    if len(set(subscriptions.values())) <= 1:
        return _uniform_same_subscriptions(subscriptions, kept, partition_counts)
    return _uniform_differing_subscriptions(subscriptions, kept, partition_counts)


def _sticky_claims(subscriptions: dict, members: dict, partition_counts: dict) -> dict:
    """member id -> its still-valid current partitions, sorted. A partition claimed by several
    members stays with the first of them by id, so the claims do not overlap."""
    claimed = set()
    claims = {}
    for member_id, topics in subscriptions.items():
        subscribed = set(topics)
        valid = sorted(
            (t, p)
            for t, p in members[member_id][1]
            if t in subscribed and 0 <= p < partition_counts[t] and (t, p) not in claimed
        )
        claimed.update(valid)
        claims[member_id] = valid
    return claims


def _all_partitions(topics, partition_counts: dict) -> list:
    return [(t, p) for t in sorted(topics) for p in range(partition_counts[t])]


def _uniform_same_subscriptions(subscriptions: dict, claims: dict, partition_counts: dict) -> dict:
    """Exact quotas: floor(P/M) each, plus one for the P % M members that claim the most. Giving
    the extra slots to the biggest claimants keeps the most claims, so this moves the fewest
    partitions possible."""
    if not subscriptions:
        return {}
    partitions = _all_partitions(next(iter(subscriptions.values())), partition_counts)
    share, extras = divmod(len(partitions), len(subscriptions))
    by_claims = sorted(subscriptions, key=lambda m: (-len(claims[m]), m))
    quota = {m: share + (1 if rank < extras else 0) for rank, m in enumerate(by_claims)}
    owned = {m: claims[m][: quota[m]] for m in subscriptions}
    taken = {tp for tps in owned.values() for tp in tps}
    free = iter(tp for tp in partitions if tp not in taken)
    for member_id in subscriptions:
        owned[member_id].extend(next(free) for _ in range(quota[member_id] - len(owned[member_id])))
    return owned


def _uniform_differing_subscriptions(subscriptions: dict, claims: dict, partition_counts: dict) -> dict:
    subscribers = _subscribers_by_topic(subscriptions)
    # holdings[member][topic]: that member's partitions of that topic, oldest first. A member
    # that has to give one up gives its newest, so a partition kept from `current` moves last.
    holdings = {m: {t: [] for t in topics} for m, topics in subscriptions.items()}
    for member_id, tps in claims.items():
        for topic, partition in tps:
            holdings[member_id][topic].append(partition)
    counts = {m: len(tps) for m, tps in claims.items()}
    _fill_unclaimed(subscribers, holdings, counts, partition_counts)
    _balance(subscriptions, subscribers, holdings, counts)
    return {
        m: [(t, p) for t, partitions in holdings[m].items() for p in partitions]
        for m in subscriptions
    }


def _fill_unclaimed(subscribers: dict, holdings: dict, counts: dict, partition_counts: dict) -> None:
    """Give each unclaimed partition to the subscriber of its topic that has the fewest. Topics
    with fewer subscribers go first, while those few still have room."""
    held = {t: set() for t in subscribers}
    for topics in holdings.values():
        for topic, partitions in topics.items():
            held[topic].update(partitions)
    for topic in sorted(subscribers, key=lambda t: (len(subscribers[t]), t)):
        # Only this topic's subscribers gain partitions in this loop, so the heap stays current.
        fewest_first = [(counts[m], m) for m in subscribers[topic]]
        heapq.heapify(fewest_first)
        for partition in range(partition_counts[topic]):
            if partition in held[topic]:
                continue
            count, member_id = heapq.heappop(fewest_first)
            holdings[member_id][topic].append(partition)
            counts[member_id] = count + 1
            heapq.heappush(fewest_first, (count + 1, member_id))


def _balance(subscriptions: dict, subscribers: dict, holdings: dict, counts: dict) -> None:
    """Move partitions from the fullest members to the emptiest ones that can take them, until no
    move can bring two members closer than one partition apart.

    The heaps are lazy: when a member's count changes, a new entry is pushed, and an entry whose
    count no longer matches is skipped when it reaches the top. A round tries every member as a
    donor, fullest first. A member that cannot give may be able to give once a receiver of its
    topics has given something away itself, so rounds repeat until one moves nothing. Every move
    lowers the sum of squared counts, so the rounds end.
    """
    fewest = {t: [(counts[m], m) for m in ms] for t, ms in subscribers.items()}
    for heap in fewest.values():
        heapq.heapify(heap)
    moved = True
    while moved:
        moved = False
        fullest = [(-counts[m], m) for m in subscriptions]
        heapq.heapify(fullest)
        while fullest:
            negative_count, donor = heapq.heappop(fullest)
            if -negative_count != counts[donor]:
                continue
            move = _best_move(donor, holdings, counts, fewest)
            if move is None:
                continue
            receiver, topic = move
            holdings[receiver][topic].append(holdings[donor][topic].pop())
            counts[donor] -= 1
            counts[receiver] += 1
            for member_id in (donor, receiver):
                heapq.heappush(fullest, (-counts[member_id], member_id))
                for t in subscriptions[member_id]:
                    heapq.heappush(fewest[t], (counts[member_id], member_id))
            moved = True


def _best_move(donor, holdings: dict, counts: dict, fewest: dict):
    """(receiver, topic) for the emptiest member that could take one of the donor's partitions,
    if it holds at least two fewer than the donor; else None."""
    best = None
    for topic, partitions in holdings[donor].items():
        if not partitions:
            continue
        heap = fewest[topic]
        while heap[0][0] != counts[heap[0][1]]:
            heapq.heappop(heap)
        count, member_id = heap[0]
        if best is None or (count, member_id) < best[0]:
            best = ((count, member_id), topic)
    if best is None or counts[donor] - best[0][0] < 2:
        return None
    return best[0][1], best[1]


_BUILDERS = {"uniform": _uniform, "range": _range}
