"""The sender thread's bookkeeping, driven directly with a stand-in cluster (no broker, no thread)."""

from distlog.client.accumulator import ProducerBatch, RecordAccumulator
from distlog.client.sender import PartitionCounts, Sender, SenderSettings, WakePipe
from distlog.log.batch_builder import build_batch
from tests.client.fakes import ENDPOINT, OneLeaderCluster


class DroppedConnection:
    """A connection whose broker just went away: the drop is noticed, the new link not up yet."""

    def __init__(self, socket):
        self.socket = socket
        self.link_up = True

    def watch_disconnects(self):
        return self.socket

    def disconnected(self):
        self.link_up = False
        return True


def batch(accumulator):
    produced = ProducerBatch("t", 0)
    produced.data, produced.record_count = build_batch([b"x"]), 1
    produced.size_bytes = len(produced.data)
    accumulator.append_sealed(produced)
    return produced


def test_requests_lost_with_a_connection_noticed_while_sending_are_kept_for_a_retry(tmp_path):
    accumulator = RecordAccumulator(1024, 1 << 20, 1.0, 0.0)
    wake_pipe = WakePipe()
    with open(tmp_path / "pollable", "w") as pollable:
        sender = Sender(accumulator, OneLeaderCluster(DroppedConnection(pollable.fileno())),
                        SenderSettings(-1, 10, 0.0, 30.0, 120.0, 5, 1 << 20), PartitionCounts(), wake_pipe)
        in_flight, fresh = batch(accumulator), batch(accumulator)
        sender.waiting = accumulator.drain(0.0)[1:]
        sender.in_flight[ENDPOINT] = {7: (0.0, [in_flight])}
        in_flight.attempts = 1
        sender._send(now_s=0.0)
    wake_pipe.close()
    assert sorted(id(b) for b in sender.waiting) == sorted([id(in_flight), id(fresh)]), \
        "a batch lost with the connection was dropped: its future would never resolve"
    assert not any(sender.in_flight.values())
