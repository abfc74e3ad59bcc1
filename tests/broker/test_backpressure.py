"""The broker's backpressure core (distlog/broker/backpressure.py), without sockets."""

from distlog.broker.backpressure import Backpressure, Limits

A, B = b"client-a", b"client-b"


class Tracker:
    """Stands in for zmq.MessageTracker: done once ZeroMQ let go of the reply."""

    def __init__(self):
        self.done = False


def test_a_connection_at_its_parked_limit_is_refused_while_others_are_admitted():
    pressure = Backpressure(Limits(parked_per_connection=2, parked_total=10))
    for cid in (1, 2):
        assert pressure.refusal(A, "FETCH") is None
        pressure.park(A, cid, "FETCH", 0.0)
    why = pressure.refusal(A, "PRODUCE", 100)
    assert why is not None and "2 requests waiting" in why and "limit 2" in why
    assert pressure.refusal(B, "FETCH") is None, "another connection pays for A's backlog"
    assert pressure.throttled == {"PRODUCE": 1}
    assert pressure.release(A, 1) == ("FETCH", 0.0)
    assert pressure.refusal(A, "PRODUCE", 100) is None, "an answer makes room again"


def test_the_broker_wide_limit_counts_every_connection():
    pressure = Backpressure(Limits(parked_per_connection=10, parked_total=3))
    for cid, peer in enumerate((A, A, B)):
        pressure.park(peer, cid, "FETCH", 0.0)
    assert "3 requests waiting" in pressure.refusal(b"client-c", "FETCH")
    pressure.release(B, 2)
    assert pressure.refusal(b"client-c", "FETCH") is None
    assert pressure.parked == 2


def test_parked_produce_bytes_are_bounded_but_one_produce_always_gets_in():
    pressure = Backpressure(Limits(parked_produce_bytes=1000))
    assert pressure.refusal(A, "PRODUCE", 5000) is None, "a batch bigger than the limit must not wait forever"
    pressure.park(A, 1, "PRODUCE", 0.0, 5000)
    assert "5000 bytes" in pressure.refusal(B, "PRODUCE", 1)
    assert pressure.refusal(B, "FETCH") is None, "fetches carry no produce bytes"
    pressure.release(A, 1)
    assert pressure.parked_produce_bytes == 0
    pressure.park(A, 2, "PRODUCE", 0.0, 600)
    assert pressure.refusal(A, "PRODUCE", 400) is None
    assert pressure.refusal(A, "PRODUCE", 401) is not None


def test_fetches_are_refused_while_a_connection_leaves_replies_unread():
    pressure = Backpressure(Limits(unsent_reply_bytes_per_connection=1000))
    first, second = Tracker(), Tracker()
    pressure.reply_queued(A, 600, first, pending=False)
    assert pressure.refusal(A, "FETCH") is None
    pressure.reply_queued(A, 600, second, pending=False)
    why = pressure.refusal(A, "FETCH")
    assert why is not None and "1200 bytes" in why
    assert pressure.refusal(A, "PRODUCE", 10) is None, "unread fetch replies do not hold back its produces"
    assert pressure.refusal(B, "FETCH") is None
    first.done = True
    assert pressure.unsent_reply_bytes(A) == 600
    assert pressure.refusal(A, "FETCH") is None


def test_sweep_forgets_connections_whose_replies_all_left():
    pressure = Backpressure()
    tracker = Tracker()
    pressure.reply_queued(A, 10, tracker, pending=False)
    pressure.sweep()
    assert pressure.unsent_reply_bytes(A) == 10
    tracker.done = True
    pressure.sweep()
    assert pressure._unsent == {} and pressure.unsent_reply_bytes(A) == 0


def test_releasing_what_was_never_parked_changes_nothing():
    pressure = Backpressure()
    pressure.park(A, 1, "PRODUCE", 1.5, 10)
    assert pressure.release(A, 99) is None
    assert pressure.release(A, 1) == ("PRODUCE", 1.5)
    assert pressure.release(A, 1) is None
    assert pressure.parked == 0 and pressure.parked_produce_bytes == 0


def test_replies_made_in_this_turn_count_before_they_reach_zeromq():
    """A burst of fetches read in one turn: each answer counts from when it is made, so the
    later ones of the burst are refused although nothing has gone to ZeroMQ yet."""
    pressure = Backpressure(Limits(unsent_reply_bytes_per_connection=1000))
    pressure.reply_pending(A, 700)
    pressure.reply_pending(A, 700)
    assert pressure.refusal(A, "FETCH") is not None
    first, second = Tracker(), Tracker()
    pressure.reply_queued(A, 700, first, pending=True)
    pressure.reply_queued(A, 700, second, pending=True)
    assert pressure.unsent_reply_bytes(A) == 1400, "moving to ZeroMQ must not count a reply twice"
    first.done = second.done = True
    assert pressure.unsent_reply_bytes(A) == 0 and pressure._unsent_bytes == {}


def test_a_dropped_reply_stops_counting_at_once():
    pressure = Backpressure()
    pressure.reply_pending(A, 500)
    pressure.reply_queued(A, 500, None, pending=True)
    pressure.reply_queued(B, 300, None, pending=False)
    assert pressure.unsent_reply_bytes(A) == 0 and pressure.unsent_reply_bytes(B) == 0
    assert pressure._unsent == {} and pressure._unsent_bytes == {}
