"""The live workload of a chaos run: producers that record what they sent and what came of it,
consumers that record what they read, and the final read that says what the log really holds.

Each value is unique, so the checker can follow every record from send() to the log. A send is
recorded as invoked before send() is called; its outcome comes from the delivery callback:
`ok` with the partition and offset, or `info` for any error there, because a batch that failed
on its last attempt may have been written by an earlier one whose acknowledgement was lost.
Only an exception from send() itself is a definite `fail`: the record was never queued.
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


class ProducerWorkload(threading.Thread):
    """Sends unique values at about rate_per_s (acks=all, idempotent unless told not to) until stopped."""

    def __init__(self, bootstrap: str, topic: str, history, rate_per_s: float, index: int = 0,
                 idempotent: bool = True):
        super().__init__(name=f"chaos-producer-{index}", daemon=True)
        self.bootstrap, self.topic, self.history = bootstrap, topic, history
        self.rate_per_s = rate_per_s
        self.process = f"producer-{index}"
        self.index = index
        self.idempotent = idempotent
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # recorded for the runner: a workload bug must not pass silently
            self.error = error

    def _run(self) -> None:
        producer = Producer(self.bootstrap, acks="all", linger_ms=5, request_timeout_ms=REQUEST_TIMEOUT_MS,
                            delivery_timeout_ms=DELIVERY_TIMEOUT_MS, max_block_ms=MAX_BLOCK_MS,
                            enable_idempotence=self.idempotent)
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


class ConsumerWorkload(threading.Thread):
    """Reads every partition from offset 0 for the whole run, logging each non-empty poll."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, history, index: int = 0):
        super().__init__(name=f"chaos-consumer-{index}", daemon=True)
        self.bootstrap, self.topic, self.partitions, self.history = bootstrap, topic, partitions, history
        self.process = f"consumer-{index}"
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:
            self.error = error

    def _run(self) -> None:
        consumer = Consumer(self.bootstrap, fetch_max_wait_ms=100, request_timeout_ms=REQUEST_TIMEOUT_MS,
                            auto_offset_reset="earliest")
        try:
            consumer.assign([TopicPartition(self.topic, p) for p in range(self.partitions)])
            for p in range(self.partitions):
                consumer.seek(TopicPartition(self.topic, p), 0)
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
        finally:
            consumer.close()


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
