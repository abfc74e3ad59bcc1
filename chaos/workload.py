"""The live workload of a chaos run: producers that record what they sent and what came of it,
a consumer group whose members record what they read and what they committed, and the final
read that says what the log really holds.

Each value is unique, so the checker can follow every record from send() to the log. A send is
recorded as invoked before send() is called; its outcome comes from the delivery callback:
`ok` with the partition and offset, or `info` for any error there, because a batch that failed
on its last attempt may have been written by an earlier one whose acknowledgement was lost.
Only an exception from send() itself is a definite `fail`: the record was never queued.

A group member's reads of one partition are in order only while it holds the partition: given
it again later, it starts over at the group's committed offset. So every assignment is
recorded, and the checker starts a new lane of that member's reads there, checked against the
group's commits.
"""

from __future__ import annotations

import threading
import time

from distlog.client import Consumer, Producer, TopicPartition
from distlog.protocol.errors import DistlogError

# Client timeouts short enough that faults surface within a run, long enough to ride out a
# broker restart (the supervisor restarts a killed broker within about a second).
REQUEST_TIMEOUT_MS = 2_000
DELIVERY_TIMEOUT_MS = 30_000
MAX_BLOCK_MS = 2_000
SEND_TICK_S = 0.01  # the producer sends its quota in bursts this far apart
POLL_TIMEOUT_S = 0.2
SESSION_TIMEOUT_MS = 6_000  # a killed member's partitions move on within a fault's length


class ProducerWorkload(threading.Thread):
    """Sends unique values at about rate_per_s (acks=all, idempotent unless told not to) until stopped."""

    def __init__(self, bootstrap: str, topic: str, history, rate_per_s: float, index: int = 0,
                 idempotent: bool = True, acks: str = "all"):
        super().__init__(name=f"chaos-producer-{index}", daemon=True)
        self.bootstrap, self.topic, self.history = bootstrap, topic, history
        self.rate_per_s = rate_per_s
        self.process = f"producer-{index}"
        self.index = index
        self.idempotent = idempotent
        self.acks = acks
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # recorded for the runner: a workload bug must not pass silently
            self.error = error

    def _run(self) -> None:
        producer = Producer(self.bootstrap, acks=self.acks, linger_ms=5, request_timeout_ms=REQUEST_TIMEOUT_MS,
                            delivery_timeout_ms=DELIVERY_TIMEOUT_MS, max_block_ms=MAX_BLOCK_MS,
                            enable_idempotence=self.idempotent and self.acks == "all")
        sent = 0
        started_s = time.monotonic()
        try:
            while not self.stopping.is_set():
                due = int((time.monotonic() - started_s) * self.rate_per_s)
                while sent < due and not self.stopping.is_set():
                    self._send_one(producer, sent)
                    sent += 1
                self.stopping.wait(SEND_TICK_S)
            producer.flush(DELIVERY_TIMEOUT_MS / 1000)
        except DistlogError:
            pass  # what is still unacknowledged fails through the callbacks at close
        finally:
            producer.close(timeout=5)

    def _send_one(self, producer: Producer, n: int) -> None:
        value = f"p{self.index}-{n:09d}"
        key = f"k{n % 64}"
        self.history.add("invoke", process=self.process, f="send", value=value, key=key)

        def delivered(error, metadata, value=value):
            if error is None:
                self.history.add("ok", process=self.process, f="send", value=value,
                                 partition=metadata.partition, offset=metadata.offset)
            else:
                self.history.add("info", process=self.process, f="send", value=value, error=str(error))

        try:
            producer.send(self.topic, value.encode(), key=key.encode(), callback=delivered)
        except Exception as error:  # never queued: certainly not written
            self.history.add("fail", process=self.process, f="send", value=value, error=f"{type(error).__name__}: {error}")


class GroupMemberWorkload(threading.Thread):
    """One member of the workload's consumer group: polls, then commits what it read (synchronously,
    so the history knows which commits the group took), until stopped."""

    def __init__(self, bootstrap: str, topic: str, history, index: int = 0, group: str = "chaos-group"):
        super().__init__(name=f"chaos-consumer-{index}", daemon=True)
        self.bootstrap, self.topic, self.history, self.group = bootstrap, topic, history, group
        self.index = index
        self.process = f"consumer-{index}"
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:
            self.error = error

    def _assigned(self, partitions) -> None:
        self.history.add("assign", process=self.process, group=self.group, partitions=sorted(tp.partition for tp in partitions))

    def _revoked(self, partitions) -> None:
        self.history.add("revoke", process=self.process, group=self.group, partitions=sorted(tp.partition for tp in partitions))

    def _run(self) -> None:
        consumer = Consumer(self.bootstrap, group_id=self.group, client_id=f"chaos-{self.index}", fetch_max_wait_ms=100,
                            request_timeout_ms=REQUEST_TIMEOUT_MS, auto_offset_reset="earliest",
                            enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS)
        try:
            consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked)
            while not self.stopping.is_set():
                try:
                    records = consumer.poll(timeout=POLL_TIMEOUT_S)
                except DistlogError as error:
                    self.history.add("fail", process=self.process, f="poll", error=str(error))
                    self.stopping.wait(POLL_TIMEOUT_S)  # the broker is down: do not spin on it
                    continue
                if records:
                    self.history.add("ok", process=self.process, f="poll",
                                     records=[[r.partition, r.offset, r.value.decode()] for r in records])
                    self._commit(consumer, records)
        finally:
            consumer.close()

    def _commit(self, consumer, records) -> None:
        """Commit the position after the last record read of each partition read."""
        offsets = {}
        for record in records:
            offsets[TopicPartition(self.topic, record.partition)] = record.offset + 1
        try:
            consumer.commit(offsets)
        except DistlogError as error:
            # Not necessarily refused: a coordinator that timed out or lost its leadership may
            # still have the commit applied, so the offsets go in the record too.
            self.history.add("fail", process=self.process, f="commit", group=self.group, error=str(error),
                             offsets=sorted([tp.partition, offset] for tp, offset in offsets.items()))
            return
        self.history.add("ok", process=self.process, f="commit", group=self.group,
                         offsets=sorted([tp.partition, offset] for tp, offset in offsets.items()))


def final_read(bootstrap: str, topic: str, partitions: int, history, timeout_s: float) -> bool:
    """Read every partition from its log start to its end as of now; record it. True if complete."""
    deadline_s = time.monotonic() + timeout_s
    records = []
    try:
        with Consumer(bootstrap, fetch_max_wait_ms=100, request_timeout_ms=REQUEST_TIMEOUT_MS) as consumer:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            consumer.seek_to_end()
            ends = {tp: consumer.position(tp) for tp in tps}
            consumer.seek_to_beginning()
            while any(consumer.position(tp) < ends[tp] for tp in tps):
                if time.monotonic() >= deadline_s:
                    raise TimeoutError(f"the final read did not reach the end offsets {ends} within {timeout_s:g} s")
                records.extend([r.partition, r.offset, r.value.decode()]
                               for r in consumer.poll(timeout=POLL_TIMEOUT_S) if r.offset < ends[TopicPartition(topic, r.partition)])
    except (DistlogError, TimeoutError) as error:
        history.add("fail", process="final-reader", f="final-read", error=str(error))
        return False
    history.add("ok", process="final-reader", f="final-read", records=records)
    return True
