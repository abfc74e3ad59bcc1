"""The long-poll purgatory: parked fetches are found by partition and by deadline, and forgotten once answered."""

from distlog.broker.delayed import FetchPurgatory, ParkedFetch

A, B = ("t", 0), ("t", 1)


def parked(deadline_s, *partitions):
    return ParkedFetch(b"peer", 1, None, deadline_s, frozenset(partitions))


def listed(purgatory):
    return sum(len(fetches) for fetches in purgatory._by_partition.values())


def test_long_polls_on_an_idle_partition_do_not_pile_up():
    purgatory = FetchPurgatory()
    for i in range(1000):  # a consumer long-polling a topic nobody writes to
        purgatory.park(parked(i, A))
        assert len(purgatory.expired(i)) == 1
    assert listed(purgatory) == 0
    assert purgatory.next_deadline_s() is None


def test_a_fetch_woken_again_and_again_by_one_partition_stays_listed_once_per_partition():
    purgatory = FetchPurgatory()
    fetch = parked(10.0, A, B)
    purgatory.park(fetch)
    for _ in range(100):  # appends to A that never bring enough bytes
        assert purgatory.waiting_on({A}) == [fetch]
        purgatory.repark(fetch, {A})
    assert listed(purgatory) == 2
    assert purgatory.waiting_on({B}) == [fetch]
    assert purgatory.expired(10.0) == [fetch]
    assert listed(purgatory) == 0


def test_an_answered_fetch_is_neither_woken_nor_expired():
    purgatory = FetchPurgatory()
    fetch = parked(1.0, A)
    purgatory.park(fetch)
    fetch.done = True
    assert purgatory.waiting_on({A}) == []
    assert purgatory.expired(2.0) == []


def test_a_fetch_answered_through_one_partition_is_forgotten_by_the_other_at_its_deadline():
    purgatory = FetchPurgatory()
    fetch = parked(1.0, A, B)
    purgatory.park(fetch)
    assert purgatory.waiting_on({A}) == [fetch]
    fetch.done = True  # enough bytes arrived on A; B is never written again
    assert purgatory.expired(1.0) == []
    assert listed(purgatory) == 0
