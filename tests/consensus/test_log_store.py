"""MemoryStorage: lookups by record offset, tail truncation on append, retention, start-over."""

import pytest

from distlog.consensus.log_store import MemoryStorage, Span
from distlog.consensus.membership import Membership
from distlog.consensus.messages import Entry


def entries(*spans):
    return [Entry(term, base, last, f"{base}-{last}") for term, base, last in spans]


def test_new_storage_is_an_empty_log_at_offset_zero():
    storage = MemoryStorage()
    assert (storage.log_start_offset, storage.last_index, storage.start_term) == (0, -1, 0)
    assert storage.span_at(0) is None


def test_span_at_finds_the_batch_covering_any_of_its_offsets():
    storage = MemoryStorage()
    storage.append(entries((1, 0, 0), (1, 1, 4), (2, 5, 5)))
    assert [storage.span_at(o) for o in (1, 3, 4, 5)] == [Span(1, 1, 4)] * 3 + [Span(2, 5, 5)]
    assert storage.span_at(6) is None


def test_entries_from_starts_at_a_batch_boundary_and_honours_the_count():
    storage = MemoryStorage()
    storage.append(entries((1, 0, 0), (1, 1, 4), (2, 5, 5)))
    assert [e.base_offset for e in storage.entries_from(1, 5)] == [1, 5]
    assert [e.base_offset for e in storage.entries_from(0, 1)] == [0]
    assert storage.entries_from(2, 5) == [], "offset 2 is inside a batch"


def test_append_replaces_the_tail_from_the_first_base_offset():
    storage = MemoryStorage()
    storage.append(entries((1, 0, 0), (1, 1, 4), (1, 5, 5)))
    storage.append(entries((2, 1, 2)))
    assert [(e.term, e.base_offset, e.last_offset) for e in storage.entries] == [(1, 0, 0), (2, 1, 2)]


def test_append_refuses_a_gap():
    storage = MemoryStorage()
    storage.append(entries((1, 0, 0)))
    with pytest.raises(ValueError, match="gap"):
        storage.append(entries((1, 2, 2)))


def test_compact_moves_the_log_start_and_remembers_the_term_below_it():
    storage = MemoryStorage()
    storage.append(entries((1, 0, 0), (2, 1, 4), (3, 5, 5)))
    storage.compact(4)
    assert (storage.log_start_offset, storage.start_term, storage.last_index) == (5, 2, 5)
    assert storage.span_at(4) is None
    with pytest.raises(ValueError, match="last offset"):
        storage.compact(3)


def test_reset_leaves_an_empty_log_at_the_new_start():
    storage = MemoryStorage()
    storage.append(entries((1, 0, 0), (1, 1, 4)))
    storage.reset(10, 3)
    assert (storage.log_start_offset, storage.start_term, storage.last_index) == (10, 3, 9)
    storage.append(entries((3, 10, 11)))
    assert storage.last_index == 11


def test_membership_entries_follow_truncation_and_the_last_one_removed_becomes_the_base():
    first, second = Membership((1, 2, 3), (4,)), Membership((1, 2, 3, 4))
    storage = MemoryStorage()
    storage.append([Entry(1, 0, 0, "m"), Entry(1, 1, 1, first), Entry(1, 2, 3, "a"), Entry(1, 4, 4, second)])
    assert [e.data for e in storage.membership_entries()] == [first, second]
    storage.append([Entry(2, 4, 4, "b")])
    assert [e.data for e in storage.membership_entries()] == [first], "truncation removes the change"
    assert storage.base_membership is None
    storage.compact(3)
    assert storage.base_membership == first and storage.membership_entries() == []
    storage.reset(10, 2, second)
    assert storage.base_membership == second
    storage.reset(20, 3)
    assert storage.base_membership is None, "two arguments: the bootstrap membership"
