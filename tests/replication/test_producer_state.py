"""The leader's memory of idempotent producers: duplicates answered with their first offsets,
gaps refused, sequences wrapping, and the table rebuilt from the log after a restart."""

import pytest

from distlog.log.batch_builder import build_batch
from distlog.replication.producer_state import (
    MAX_PRODUCERS, SEQUENCE_MODULUS, WINDOW, DuplicateSequenceError, ProducerBatchInfo, ProducerStateTable,
    SequenceError,
)
from tests.replication.harness import MemoryCluster


def info(first, count=1, producer_id=7, epoch=0, base_offset=0):
    return ProducerBatchInfo(producer_id, epoch, first, (first + count - 1) % SEQUENCE_MODULUS,
                             base_offset, base_offset + count - 1)


def test_a_new_producer_starts_at_zero_and_then_must_continue_without_gaps():
    table = ProducerStateTable()
    assert table.check(info(0)) is None
    table.record(info(0, count=3, base_offset=100))
    assert table.check(info(3)) is None
    with pytest.raises(SequenceError, match="3 comes next"):
        table.check(info(4))


def test_an_unknown_producer_past_sequence_zero_is_refused_not_written_ahead_of_its_earlier_batches():
    """A 16-producer flood lost a producer's first batches with a leader's uncommitted tail; the
    new leader, which never had them, wrote a later batch that overtook their retries, and
    then refused the retries for good."""
    table = ProducerStateTable()
    with pytest.raises(SequenceError, match="starts at sequence 40, not 0"):
        table.check(info(40))


def test_a_batch_seen_in_the_last_window_is_a_duplicate_of_its_first_write():
    table = ProducerStateTable()
    for i in range(WINDOW + 1):
        table.record(info(i * 2, count=2, base_offset=1000 + i * 2))
    assert table.check(info(2 * WINDOW, count=2)).base_offset == 1000 + 2 * WINDOW
    assert table.check(info(2, count=2)).base_offset == 1002
    with pytest.raises(DuplicateSequenceError, match="written before"):
        table.check(info(0, count=2))  # older than the window: written, but where is forgotten
    with pytest.raises(SequenceError):
        table.check(info(2 * WINDOW + 1, count=3))  # reaches past the last written sequence


def test_a_range_before_the_first_sequence_seen_is_not_called_a_duplicate():
    table = ProducerStateTable()  # producer 7 is first seen here at sequence 100 (its state aged out)
    for first in range(100, 100 + 2 * (WINDOW + 1), 2):
        table.record(info(first, count=2))
    with pytest.raises(DuplicateSequenceError):
        table.check(info(100, count=2))  # seen, written, out of the window
    with pytest.raises(SequenceError) as raised:
        table.check(info(90, count=2))  # never seen here: written or not, nobody knows
    assert not isinstance(raised.value, DuplicateSequenceError)


def test_a_range_wholly_written_before_wraps_like_the_sequences():
    table = ProducerStateTable()
    for first in (SEQUENCE_MODULUS - 2, *range(0, 2 * WINDOW, 2)):  # WINDOW + 1 batches across the wrap
        table.record(info(first % SEQUENCE_MODULUS, count=2))
    with pytest.raises(DuplicateSequenceError):
        table.check(info(SEQUENCE_MODULUS - 2, count=2))  # before the wrap, out of the window
    with pytest.raises(SequenceError) as raised:
        table.check(info(2 * WINDOW + 2))  # a gap after the last: an earlier batch is still on its way
    assert not isinstance(raised.value, DuplicateSequenceError)


def test_sequences_wrap_to_zero():
    table = ProducerStateTable()
    table.record(info(SEQUENCE_MODULUS - 2, count=2))
    assert table.check(info(0)) is None


def test_a_newer_epoch_starts_over_and_an_older_one_is_refused():
    table = ProducerStateTable()
    table.record(info(10, epoch=1))
    assert table.check(info(0, epoch=2)) is None
    with pytest.raises(SequenceError, match="older than epoch 1"):
        table.check(info(11, epoch=0))


def test_the_least_recently_written_producer_is_forgotten_past_the_bound():
    table = ProducerStateTable()
    for producer_id in range(MAX_PRODUCERS):
        table.record(info(0, producer_id=producer_id))
    table.record(info(1, producer_id=0))  # producer 0 writes again: producer 1 is now the oldest
    table.record(info(0, producer_id=MAX_PRODUCERS))
    assert len(table) == MAX_PRODUCERS
    with pytest.raises(SequenceError, match="not known here"):  # producer 1 is unknown again
        table.check(info(5, producer_id=1))
    assert table.check(info(0, producer_id=1)) is None
    with pytest.raises(SequenceError):
        table.check(info(5, producer_id=0))


def test_truncating_forgets_the_batches_from_an_offset_on_and_what_comes_next_follows_the_rest():
    table = ProducerStateTable()
    for i in range(4):  # producer 7: sequences 0..7 at offsets 0..7, two per batch
        table.record(info(2 * i, count=2, base_offset=2 * i))
    table.record(info(0, count=1, producer_id=8, base_offset=8))  # producer 8 only past the cut
    assert table.end_offset == 9
    table.truncate(4)  # the log lost offsets 4..8
    assert table.end_offset == 4
    assert table.check(info(4, count=2, base_offset=4)) is None, "the lost batch is new again"
    assert table.check(info(2, count=2)).base_offset == 2, "the kept batch is still a duplicate"
    with pytest.raises(SequenceError, match="4 comes next"):
        table.check(info(6, count=2))
    # Producer 8 has nothing in the log now, and its lost batch comes next: not a later one.
    assert table.check(info(0, producer_id=8)) is None
    with pytest.raises(SequenceError, match="0 comes next"):
        table.check(info(1, producer_id=8))
    table.record(info(0, producer_id=8, base_offset=4))
    assert table.check(info(1, producer_id=8)) is None
    table.truncate(9)  # past the end: nothing to forget
    assert table.end_offset == 5


def test_a_producer_whose_remembered_batches_are_all_cut_goes_on_from_the_first_one_lost():
    """Its older batches (out of the window) are committed: a retry of one is a duplicate, and
    the first lost batch, not a later one that overtook it, comes next."""
    table = ProducerStateTable()
    for i in range(WINDOW + 2):  # the first two fall out of the window
        table.record(info(i, base_offset=i))
    table.truncate(2)
    assert table.check(info(2, base_offset=2)) is None
    with pytest.raises(DuplicateSequenceError):
        table.check(info(1))
    with pytest.raises(SequenceError, match="2 comes next"):
        table.check(info(5))


def test_a_reopened_replica_records_from_its_first_write_and_reads_the_tail_below_only_when_a_produce_needs_it(
        tmp_path):
    from distlog.consensus.messages import Entry
    from distlog.consensus.partition_storage import stamp_record_batch

    cluster = MemoryCluster(str(tmp_path), broker_ids=(1,))
    replica = single_replica(cluster)
    for sequence in (0, 1):
        cluster.managers[1].propose(replica, idempotent_batch([b"%d" % sequence], sequence=sequence))
    cluster.turn()
    cluster.close()
    reopened = MemoryCluster(str(tmp_path), broker_ids=(1,))
    replica = reopened.open_partition(1, "t", 0, (1,))  # not leading: it writes what it is sent
    end = replica.log_end_offset
    term = replica.node.term

    def entry(offset, batch):
        return Entry(term, offset, offset, stamp_record_batch(bytearray(batch), offset, term))

    replica.write_entries([entry(end, idempotent_batch([b"2"], sequence=2))])
    replica.write_entries([entry(end + 1, idempotent_batch([b"3"], sequence=3))])
    # The uncommitted end+1 is replaced by another producer's batch before any produce asked.
    replica.write_entries([entry(end + 1, idempotent_batch([b"q"], producer_id=5, sequence=0))])
    table = replica.producers  # the tail below the cut read now, what was written since on top
    assert table.check(info(0, producer_id=99)).base_offset == 0
    assert table.check(info(2, producer_id=99)).base_offset == end, "the batch written after opening"
    assert table.check(info(3, producer_id=99)) is None, "the replaced batch is new again"
    assert table.check(info(0, producer_id=5)).base_offset == end + 1
    reopened.close()


def idempotent_batch(values, producer_id=99, sequence=0):
    return build_batch(values, producer_id=producer_id, producer_epoch=0, base_sequence=sequence)


def offsets(results):
    """(first base offset, last offset) of what PartitionReplica.propose returned."""
    return results[0].base_offset, results[-1].last_offset


def single_replica(cluster, directory="t"):
    replica = cluster.open_partition(1, directory, 0, (1,), campaign=True)
    cluster.turn()
    assert replica.is_leader
    return replica


def test_the_replica_answers_a_retried_batch_with_its_first_offsets_and_writes_nothing(tmp_path):
    cluster = MemoryCluster(str(tmp_path), broker_ids=(1,))
    replica = single_replica(cluster)
    first = idempotent_batch([b"a", b"b"], sequence=0)
    assert offsets(cluster.managers[1].propose(replica, first)) == (0, 1)
    assert offsets(cluster.managers[1].propose(replica, build_batch([b"other"]))) == (2, 2)
    assert offsets(cluster.managers[1].propose(replica, first)) == (0, 1)
    cluster.turn()
    assert replica.log_end_offset == 3 and replica.high_watermark == 3
    with pytest.raises(SequenceError):
        cluster.managers[1].propose(replica, idempotent_batch([b"c"], sequence=5))
    assert offsets(cluster.managers[1].propose(replica, idempotent_batch([b"c"], sequence=2))) == (3, 3)
    cluster.close()


def test_a_reopened_replica_still_knows_the_batches_at_the_tail_of_its_log(tmp_path):
    cluster = MemoryCluster(str(tmp_path), broker_ids=(1,))
    replica = single_replica(cluster)
    batches = [idempotent_batch([b"%d" % i], sequence=i) for i in range(3)]
    for batch in batches:
        cluster.managers[1].propose(replica, batch)
    cluster.turn()
    cluster.close()
    reopened = MemoryCluster(str(tmp_path), broker_ids=(1,))
    replica = single_replica(reopened)
    end = replica.log_end_offset
    assert end == 3 and replica.high_watermark == 3, "a lone voter's log is committed as it stands, with no marker"
    assert offsets(reopened.managers[1].propose(replica, batches[2])) == (2, 2)
    reopened.turn()
    assert replica.log_end_offset == end, "the retry was written again"
    reopened.close()
