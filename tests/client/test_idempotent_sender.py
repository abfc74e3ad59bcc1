"""The idempotent producer's ordering rules, driven through the sender with a stand-in broker:
sequences in order, retries in order, a batch waiting to be retried holds back the rest, and a
partition whose batch failed for good is renumbered under a fresh producer id."""

import dataclasses
import os
import time

import pytest

from distlog.client.accumulator import ProducerBatch, RecordAccumulator
from distlog.client.errors import RequestTimedOutError
from distlog.client.sender import PartitionCounts, Sender, SenderSettings, WakePipe
from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch
from distlog.log.records import batch_records
from distlog.protocol.errors import ErrorCode
from distlog.protocol.messages import ProduceResponse
from distlog.replication.producer_state import WINDOW
from tests.client.fakes import ENDPOINT, OneLeaderCluster


def later():
    """A sender clock reading past any retry backoff set so far (backoffs use the real clock)."""
    return time.monotonic() + 1000


class RecordingConnection:
    """Takes requests and hands out cids; the test answers them by hand."""

    def __init__(self, fd):
        self.socket = fd
        self.link_up = True
        self.sent = []  # (cid, request)

    def watch_disconnects(self):
        return self.socket

    def disconnected(self):
        return False

    def send(self, request):
        cid = len(self.sent) + 1
        self.sent.append((cid, request))
        return cid


@pytest.fixture
def rig():
    read_fd, write_fd = os.pipe()
    accumulator = RecordAccumulator(1024, 1 << 20, 1.0, 0.0)
    connection = RecordingConnection(read_fd)
    wake_pipe = WakePipe()
    settings = SenderSettings(-1, 100, 0.0, 30.0, 120.0, 5, 1 << 20, idempotent=True)
    sender = Sender(accumulator, OneLeaderCluster(connection), settings, PartitionCounts(), wake_pipe)
    yield sender, accumulator, connection
    wake_pipe.close()
    os.close(read_fd)
    os.close(write_fd)


def queue_batches(sender, accumulator, count, records_each=2):
    batches = []
    for i in range(count):
        batch = ProducerBatch("t", 0)
        batch.data = build_batch([b"%d-%d" % (i, j) for j in range(records_each)])
        batch.record_count, batch.size_bytes = records_each, len(batch.data)
        accumulator.append_sealed(batch)
        batches.append(batch)
    for batch in accumulator.drain(0.0):  # what the sender loop does with what it drains
        sender.sequencer.number(batch)
        sender.waiting.append(batch)
    return batches


def stamps(request):
    """(producer id, base sequence, first value) of each batch in a produce request."""
    out = []
    for entry in request.partitions:
        batch = RecordBatch(entry["records"])
        batch.verify()  # the restamped crc must hold
        out.append((batch.producer_id, batch.base_sequence, batch_records(batch)[0].value))
    return out


def answer(sender, cid, code=0, base_offset=0):
    _, batches = sender.in_flight[ENDPOINT].pop(cid)
    result = {"topic": "t", "partition": 0, "error_code": int(code), "error_message": "test",
              "base_offset": base_offset if code == 0 else -1, "log_start_offset": 0}
    sender._on_response(batches, ProduceResponse([result]))


def sent_stamps(connection, since=0):
    return [stamp for _, request in connection.sent[since:] for stamp in stamps(request)]


def test_batches_go_out_numbered_in_order_one_per_request(rig):
    sender, accumulator, connection = rig
    queue_batches(sender, accumulator, 3)
    sender._send(now_s=0.0)
    pid = sent_stamps(connection)[0][0]
    assert pid > 0
    assert sent_stamps(connection) == [(pid, 0, b"0-0"), (pid, 2, b"1-0"), (pid, 4, b"2-0")]
    assert all(len(request.partitions) == 1 for _, request in connection.sent)


def test_an_out_of_order_reply_behind_a_retried_batch_is_retried_after_it_with_its_numbers(rig):
    sender, accumulator, connection = rig
    queue_batches(sender, accumulator, 3)
    sender._send(now_s=0.0)
    first = sent_stamps(connection)
    answer(sender, 1, ErrorCode.NOT_LEADER)  # batch 0 did not land; 1 and 2 arrive after a gap
    answer(sender, 2, ErrorCode.OUT_OF_ORDER_SEQUENCE)
    answer(sender, 3, ErrorCode.OUT_OF_ORDER_SEQUENCE)
    assert not sender.sequencer.needs_renumbering, "batch 0 is coming again: no renumbering"
    sender._send(now_s=later())
    assert sent_stamps(connection, since=3) == first, "retries must keep their numbers and their order"


def test_a_batch_waiting_out_its_backoff_holds_back_the_later_batches_of_its_partition(rig):
    sender, accumulator, connection = rig
    queue_batches(sender, accumulator, 1)
    sender._send(now_s=0.0)
    answer(sender, 1, ErrorCode.NOT_LEADER)
    (retrying,) = sender.waiting
    retrying.retry_at_s = later()
    queue_batches(sender, accumulator, 2)
    sender._send(now_s=retrying.retry_at_s - 1)
    assert len(connection.sent) == 1, "a later batch overtook the one being retried"
    sender._send(now_s=retrying.retry_at_s)
    assert [s[1] for s in sent_stamps(connection, since=1)] == [0, 2, 4]


def test_a_batch_that_failed_for_good_gets_its_partition_renumbered_under_a_new_producer_id(rig):
    sender, accumulator, connection = rig
    batches = queue_batches(sender, accumulator, 3)
    sender._send(now_s=0.0)
    (old_pid, _, _) = sent_stamps(connection)[0]
    answer(sender, 1, ErrorCode.MESSAGE_TOO_LARGE)  # never retried: sequence 0 stays a hole
    answer(sender, 2, ErrorCode.OUT_OF_ORDER_SEQUENCE)
    answer(sender, 3, ErrorCode.OUT_OF_ORDER_SEQUENCE)
    assert batches[0].done.is_set() and batches[0].error.code == ErrorCode.MESSAGE_TOO_LARGE
    sender._send(now_s=later())
    resent = sent_stamps(connection, since=3)
    assert [(s[1], s[2]) for s in resent] == [(0, b"1-0"), (2, b"2-0")]
    assert len({s[0] for s in resent}) == 1 and resent[0][0] != old_pid


def test_a_batch_that_may_have_been_written_fails_rather_than_go_again_under_a_new_producer_id(rig):
    """Renumbered, a batch whose earlier attempt timed out (and may be in the log) would be new to
    the leader and written twice: it fails, outcome unknown; the never-sent batch after it goes."""
    sender, accumulator, connection = rig
    batches = queue_batches(sender, accumulator, 2)
    sender._send(now_s=0.0)
    (old_pid, _, _) = sent_stamps(connection)[0]
    answer(sender, 2, ErrorCode.REQUEST_TIMED_OUT)  # batch 1: proposed, maybe committed, no answer
    answer(sender, 1, ErrorCode.MESSAGE_TOO_LARGE)  # batch 0 fails for good: the partition is renumbered
    queue_batches(sender, accumulator, 1)
    sender._send(now_s=later())
    sender._send(now_s=later())
    assert batches[1].done.is_set() and batches[1].error.code == ErrorCode.REQUEST_TIMED_OUT
    assert "may or may not be in the log" in batches[1].error.message
    resent = sent_stamps(connection, since=2)
    assert [(s[1], s[2]) for s in resent] == [(0, b"0-0")]  # only the batch never sent before
    assert resent[0][0] != old_pid


def test_a_fresh_batch_is_stamped_in_place_but_a_renumbered_one_gets_a_copy(rig):
    """A timed-out request may still sit in a ZeroMQ queue holding the batch's buffer (frames
    go zero-copy): renumbering must not change bytes that may yet leave."""
    sender, accumulator, connection = rig
    batch = ProducerBatch("t", 0)
    batch.data = build_batch([b"v0", b"v1"], writable=True)
    batch.record_count, batch.size_bytes = 2, len(batch.data)
    fresh_buffer = batch.data
    accumulator.append_sealed(batch)
    for drained in accumulator.drain(0.0):
        sender.sequencer.number(drained)
        sender.waiting.append(drained)
    assert batch.data is fresh_buffer and RecordBatch(batch.data).producer_id > 0
    sent_bytes = bytes(fresh_buffer)
    sender._send(now_s=0.0)
    sender.sequencer.failed_for_good(batch)  # as if an earlier batch failed: the partition is renumbered
    sender.in_flight[ENDPOINT].clear()  # its request timed out, but ZeroMQ may still hold the buffer
    sender.sequencer.renumber([batch], set())
    assert bytes(fresh_buffer) == sent_bytes and batch.data is not fresh_buffer
    RecordBatch(batch.data).verify()
    assert RecordBatch(batch.data).producer_id != RecordBatch(fresh_buffer).producer_id


def test_renumbering_waits_until_nothing_of_the_partition_is_in_flight(rig):
    sender, accumulator, connection = rig
    queue_batches(sender, accumulator, 2)
    sender._send(now_s=0.0)
    answer(sender, 1, ErrorCode.MESSAGE_TOO_LARGE)
    queue_batches(sender, accumulator, 1)
    sender._send(now_s=1.0)
    assert len(connection.sent) == 2, "sent while batch 1 was still in flight under the old numbering"
    answer(sender, 2, ErrorCode.OUT_OF_ORDER_SEQUENCE)
    sender._send(now_s=later())
    assert [(s[1], s[2]) for s in sent_stamps(connection, since=2)] == [(0, b"1-0"), (2, b"0-0")]


def test_no_batch_past_the_window_goes_out_while_an_earlier_one_is_unsettled_even_if_later_ones_were_acked(rig):
    """The lost-acknowledgement case a chaos run caught: batch 0's request times out (it may have
    been written), batches 1..WINDOW-1 are acknowledged. Had new batches gone out before batch 0
    was settled, its retry would fall outside the broker's window and be written again."""
    sender, accumulator, connection = rig
    sender.settings = dataclasses.replace(sender.settings, max_in_flight=WINDOW)
    queue_batches(sender, accumulator, WINDOW)
    sender._send(now_s=0.0)
    assert len(connection.sent) == WINDOW
    _, timed_out = sender.in_flight[ENDPOINT].pop(1)
    sender._failed(timed_out[0], RequestTimedOutError("no produce reply within 30 s"))
    for cid in range(2, WINDOW + 1):
        answer(sender, cid, base_offset=cid)
    queue_batches(sender, accumulator, 3)
    sender._send(now_s=later())
    assert [s[1] for s in sent_stamps(connection, since=WINDOW)] == [0], "only batch 0's retry may go out"
    assert len(connection.sent) == WINDOW + 1, "no request may go out empty"
    answer(sender, WINDOW + 1, base_offset=1)  # the retry: recognised as a duplicate, acknowledged
    sender._send(now_s=later())
    assert [s[1] for s in sent_stamps(connection, since=WINDOW + 1)] == [2 * WINDOW, 2 * WINDOW + 2, 2 * WINDOW + 4]


def test_a_duplicate_sequence_answer_counts_as_delivered_with_its_offset_unknown(rig):
    sender, accumulator, connection = rig
    (batch,) = queue_batches(sender, accumulator, 1)
    sender._send(now_s=0.0)
    answer(sender, 1, ErrorCode.DUPLICATE_SEQUENCE)
    assert batch.done.is_set() and batch.error is None
    assert batch.base_offset == -1  # the metadata then reports offset -1
    assert not sender.sequencer.needs_renumbering and not sender.waiting

