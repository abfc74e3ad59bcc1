"""Consumer groups against real brokers: incremental rebalances with no partition owned twice,
a coordinator killed (SIGKILL) with the group and its offsets carrying on, and `distlog consume
--group` runs that read disjoint records whose union is everything."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer, TopicPartition
from tests.integration.replication_helpers import sigkill, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def cluster(tmp_path):
    brokers = start_brokers(3, str(tmp_path))
    try:
        yield brokers
    finally:
        stop_brokers(brokers)


def bootstrap_of(brokers) -> str:
    return ",".join(b.address for b in brokers)


def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> None:
    with Producer(bootstrap) as producer:
        for i in range(start, start + count):
            producer.send(topic, value=b"%d" % i, key=b"k%d" % i)
        producer.flush()


class OwnershipHistory:
    """Every member's assign/revoke in the order they happened; fails on a second owner."""

    def __init__(self):
        self.lock = threading.Lock()
        self.owner = {}
        self.events = []
        self.violations = []

    def callbacks(self, name):
        def on_assign(tps):
            with self.lock:
                for tp in tps:
                    if self.owner.get(tp) not in (None, name):
                        self.violations.append((tp, self.owner[tp], name))
                    self.owner[tp] = name
                self.events.append((name, "assign", sorted(tps)))

        def on_revoke(tps):
            with self.lock:
                for tp in tps:
                    if self.owner.get(tp) == name:
                        del self.owner[tp]
                self.events.append((name, "revoke", sorted(tps)))

        return on_assign, on_revoke


class Member(threading.Thread):
    """A consumer polling in its own thread until stopped; it keeps every record it read."""

    def __init__(self, bootstrap, name, history, topic, group="g", **options):
        super().__init__(daemon=True)
        self.consumer = Consumer(bootstrap, group_id=group, session_timeout_ms=6000, client_id=name, **options)
        on_assign, on_revoke = history.callbacks(name)
        self.consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        self.stopping = threading.Event()
        self.records = []
        self.owned = set()
        self.error = None

    def run(self):
        try:
            while not self.stopping.is_set():
                self.records.extend(self.consumer.poll(0.1))
                self.owned = set(self.consumer.assignment())
        except Exception as error:  # surfaced by stop()
            self.error = error
        finally:
            self.consumer.close()

    def stop(self):
        self.stopping.set()
        self.join(30)
        assert not self.is_alive() and self.error is None, self.error


def test_members_split_then_rebalance_incrementally_without_a_partition_owned_twice(cluster):
    bootstrap = bootstrap_of(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("orders", partitions=6, replication_factor=3)
    history = OwnershipHistory()
    members = []
    try:
        members.append(Member(bootstrap, "a", history, "orders"))
        members.append(Member(bootstrap, "b", history, "orders"))
        for member in members:
            member.start()
        wait_for(lambda: sorted(len(m.owned) for m in members) == [3, 3], 30, "a 3/3 split")
        produce(bootstrap, "orders", 300)
        members.append(Member(bootstrap, "c", history, "orders"))
        members[-1].start()
        wait_for(lambda: sorted(len(m.owned) for m in members) == [2, 2, 2], 30, "a 2/2/2 split")
        produce(bootstrap, "orders", 300, start=300)
        wait_for(lambda: sum(len(m.records) for m in members) >= 600, 30, "every record read")
    finally:
        for member in members:
            member.stop()
    assert history.violations == [], history.events
    # The two first members kept two of their three partitions each (sticky, incremental).
    assert len([e for e in history.events if e[1] == "revoke" and len(e[2]) == 1]) >= 2, history.events
    values = sorted(int(r.value) for m in members for r in m.records)
    assert set(values) == set(range(600))


def test_the_group_survives_its_coordinator_being_killed_with_its_offsets(cluster):
    bootstrap = bootstrap_of(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("events", partitions=3, replication_factor=3)
        produce(bootstrap, "events", 150)
        history = OwnershipHistory()
        member = Member(bootstrap, "a", history, "events", enable_auto_commit=False)
        member.start()
        try:
            wait_for(lambda: len(member.records) >= 150, 30, "the first records read")
            member.stop()  # commits nothing itself (auto-commit off); commit from outside instead
            positions = admin.group_offsets("g")
            assert positions == {}
            admin.alter_group_offsets("g", {TopicPartition("events", p): 20 + 10 * p for p in range(3)})
            before = admin.group_offsets("g")
            coordinator = admin.describe_group("g")["coordinator"]
            victim = next(b for b in cluster if b.broker_id == coordinator)
            sigkill(victim)
            killed_s = time.monotonic()
            survivors = bootstrap_of([b for b in cluster if b is not victim])
            with Admin(survivors) as others:  # the default request timeout (30 s)
                after = wait_for(lambda: _offsets_or_none(others, "g"), 45, "a new coordinator")
                # The first answers may still name the dead coordinator: Admin asks again who
                # coordinates rather than waiting a whole request timeout on a refused connection.
                answered_s = time.monotonic() - killed_s
                assert answered_s < 10, f"the new coordinator answered {answered_s:.1f} s after the kill"
                assert after == before
                # The group carries on: a new member starts from the committed offsets.
                rejoined = Member(survivors, "b", OwnershipHistory(), "events")
                rejoined.start()
                try:
                    wait_for(lambda: len(rejoined.records) >= 150 - sum(before.values()), 30, "the rest read")
                finally:
                    rejoined.stop()
                firsts = {}
                for record in rejoined.records:
                    firsts.setdefault(record.partition, record.offset)
                assert firsts == {tp.partition: offset for tp, offset in before.items()}
        finally:
            if member.is_alive():
                member.stop()


def test_live_members_carry_on_through_their_coordinator_being_killed(cluster):
    """Two members auto-committing every 200 ms; the coordinator's broker is SIGKILLed under
    them. They find the new coordinator on their own, keep their partitions (no second owner at
    any time), read what is produced after the kill, and commit it there."""
    bootstrap = bootstrap_of(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("clicks", partitions=6, replication_factor=3)
    history = OwnershipHistory()
    members = [Member(bootstrap, name, history, "clicks", auto_commit_interval_ms=200) for name in "ab"]
    for member in members:
        member.start()
    try:
        wait_for(lambda: sorted(len(m.owned) for m in members) == [3, 3], 30, "a 3/3 split")
        produce(bootstrap, "clicks", 200)
        wait_for(lambda: sum(len(m.records) for m in members) >= 200, 30, "the first records read")
        with Admin(bootstrap, request_timeout_s=3) as admin:
            wait_for(lambda: sum((_offsets_or_none(admin, "g") or {}).values()) >= 200, 30, "the first commits")
            victim = next(b for b in cluster if b.broker_id == admin.describe_group("g")["coordinator"])
        events_before_kill = len(history.events)
        sigkill(victim)
        killed_s = time.monotonic()
        survivors = [b for b in cluster if b is not victim]
        with Admin(bootstrap_of(survivors)) as others:
            wait_for(lambda: _leaders_among(others, "clicks", survivors), 30, "new leaders for every partition")
            produce(bootstrap_of(survivors), "clicks", 200, start=200)
            wait_for(lambda: sum(len(m.records) for m in members) >= 400, 30, "the records produced after the kill")
            with Consumer(bootstrap_of(survivors)) as probe:  # log ends count the new leaders' control records too
                ends = probe.end_offsets([TopicPartition("clicks", p) for p in range(6)])
            wait_for(lambda: _offsets_or_none(others, "g") == ends, 45,
                     "the members' auto-commits reaching the new coordinator")
            # A commit sent to the dead coordinator must not hold back the ones after it for a
            # whole request timeout (30 s): the members move on within a third of their session.
            recovered_s = time.monotonic() - killed_s
            assert recovered_s < 15, f"the commits reached the new coordinator {recovered_s:.1f} s after the kill"
            assert others.describe_group("g")["coordinator"] != victim.broker_id
        # Kept through the failover: a member reaching the new coordinator within its session
        # keeps its partitions (the group was rebuilt from the records, epochs and all).
        assert history.events[events_before_kill:] == [] and sorted(len(m.owned) for m in members) == [3, 3]
    finally:
        for member in members:
            member.stop()
    assert history.violations == [], history.events
    values = [int(r.value) for m in members for r in m.records]
    assert set(values) == set(range(400))


def _leaders_among(admin, topic, brokers) -> bool:
    alive = {b.broker_id for b in brokers}
    try:
        return all(p["leader"] in alive for p in admin.describe_topic(topic)["partitions"])
    except Exception as error:  # a broker not answering yet: the condition is looked at again
        print("not yet:", error)
        return False


def _offsets_or_none(admin, group):
    try:
        return admin.group_offsets(group) or None
    except Exception as error:  # no coordinator yet (retriable): the condition is looked at again
        print("not yet:", error)
        return None


def cli(bootstrap, *args):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args, "--bootstrap", bootstrap],
                          capture_output=True, text=True, timeout=60)


def test_two_consume_group_runs_read_disjoint_records_whose_union_is_everything(cluster):
    bootstrap = bootstrap_of(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("lines", partitions=4, replication_factor=3)
    produce(bootstrap, "lines", 100)
    # --from-beginning applies only where the group has committed nothing (as Kafka's console
    # consumer): the second run starts where the first one's commits say.
    first = cli(bootstrap, "consume", "lines", "--group", "readers", "--from-beginning", "--max-records", "60", "--timeout", "20")
    assert first.returncode == 0, first.stderr
    second = cli(bootstrap, "consume", "lines", "--group", "readers", "--from-beginning", "--max-records", "40", "--timeout", "20")
    assert second.returncode == 0, second.stderr
    one, two = first.stdout.split(), second.stdout.split()
    assert len(one) == 60 and len(two) == 40
    assert not set(one) & set(two)
    assert sorted(map(int, one + two)) == list(range(100))
    described = cli(bootstrap, "group", "describe", "readers", "--json")
    assert described.returncode == 0, described.stderr
    report = json.loads(described.stdout)
    assert report["total_lag"] == 0 and report["group"] == "readers"
    assert sum(p["committed_offset"] for p in report["partitions"]) == 100


MEMBER_SCRIPT = """
import sys
from distlog.client import Consumer
consumer = Consumer(sys.argv[1], group_id="g", session_timeout_ms=int(sys.argv[3]), client_id="doomed",
                    enable_auto_commit=False)
consumer.subscribe([sys.argv[2]])
while True:
    records = consumer.poll(0.1, max_records=7)
    for record in records:
        print("read", record.partition, record.offset, flush=True)
    if records:
        consumer.commit()  # synchronous: once it returns, the positions are committed
        for tp in consumer.assignment():
            print("committed", tp.partition, consumer.position(tp), flush=True)
"""


def test_a_sigkilled_members_partitions_move_within_its_session_timeout(cluster):
    bootstrap = bootstrap_of(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("jobs", partitions=6, replication_factor=3)
    session_ms = 4000
    survivor = Member(bootstrap, "a", OwnershipHistory(), "jobs")
    survivor.start()
    doomed = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, bootstrap, "jobs", str(session_ms)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(survivor.owned) == 3, 30, "a 3/3 split with the member process")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        killed_s = time.monotonic()
        wait_for(lambda: len(survivor.owned) == 6, 30, "the killed member's partitions moving")
        moved_s = time.monotonic() - killed_s
        # Detection is the session timeout itself; the survivor hears at its next heartbeat (1 s).
        assert moved_s <= session_ms / 1000 + 2.0, f"took {moved_s:.2f} s"
        print(f"partitions moved {moved_s:.2f} s after SIGKILL (session timeout {session_ms / 1000:.0f} s)")
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        survivor.stop()


def test_a_consumer_restarted_after_sigkill_resumes_right_after_its_commit(cluster, tmp_path):
    bootstrap = bootstrap_of(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("tasks", partitions=2, replication_factor=3)
    produce(bootstrap, "tasks", 400)
    out_path = tmp_path / "member.out"
    with open(out_path, "w") as out:
        doomed = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, bootstrap, "tasks", "4000"],
                                  stdout=out, stderr=subprocess.DEVNULL)
    try:
        def lines():
            return [line.split() for line in out_path.read_text().splitlines() if line.endswith(tuple("0123456789"))]

        wait_for(lambda: sum(1 for kind, *_ in lines() if kind == "committed") >= 6, 30, "some commits")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
    read, committed = {}, {}
    for kind, partition, offset in lines():
        target = read if kind == "read" else committed
        target[int(partition)] = max(target.get(int(partition), -1), int(offset))
    restarted = Member(bootstrap, "b", OwnershipHistory(), "tasks")
    restarted.start()
    try:
        with Consumer(bootstrap) as probe:
            ends = {tp.partition: end for tp, end in probe.end_offsets([TopicPartition("tasks", p) for p in range(2)]).items()}

        def caught_up():
            last = {}
            for record in list(restarted.records):
                last[record.partition] = record.offset
            return all(last.get(p) == ends[p] - 1 for p in range(2))

        wait_for(caught_up, 40, "the restarted consumer reading to the end")
    finally:
        restarted.stop()
    firsts = {}
    for record in restarted.records:
        firsts.setdefault(record.partition, record.offset)
    for partition in range(2):
        start = committed.get(partition, 0)
        # A commit may have landed after its line was printed: resume at the last commit known,
        # or later, never past what the killed one had read (nothing skipped).
        assert start <= firsts[partition] <= read.get(partition, -1) + 1, (partition, firsts, committed, read)
    seen = {(r.partition, r.offset) for r in restarted.records}
    assert len(seen) == len(restarted.records)  # no duplicates within the restarted consumer
    assert seen == {(p, o) for p in range(2) for o in range(firsts[p], ends[p])}  # and every one from there on
