"""The broker process from outside: its command line, a start that fails, and a SIGKILL mid-life."""

import time
import uuid

import pytest

from distlog.broker.__main__ import main as broker_main
from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.client import Admin, Consumer, Producer


@pytest.mark.parametrize("args, message", [
    (["--peers", "1=tcp://127.0.0.1:9001,two"], "bad peer 'two': expected ID=ENDPOINT"),
    (["--config", "nonsense"], "bad config 'nonsense': expected KEY=VALUE"),
])
def test_malformed_arguments_are_usage_errors(tmp_path, capsys, args, message):
    code = broker_main(["--id", "1", "--data-dir", str(tmp_path), "--listen", "tcp://127.0.0.1:9001", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_peers_that_place_this_broker_elsewhere_are_refused(tmp_path, capsys):
    code = broker_main(["--id", "1", "--data-dir", str(tmp_path), "--listen", "tcp://127.0.0.1:9001",
                        "--peers", "1=tcp://127.0.0.1:9002"])
    assert code == 2
    assert "--peers says broker 1 is at tcp://127.0.0.1:9002 but --listen is tcp://127.0.0.1:9001" in capsys.readouterr().err


@pytest.mark.integration
def test_a_broker_that_exits_while_starting_is_reported_with_its_log(tmp_path):
    with pytest.raises(RuntimeError) as error:
        start_brokers(1, str(tmp_path), extra_args=["--config", "nonsense"])
    assert "broker 1 exited with code 2" in str(error.value)
    assert "bad config 'nonsense'" in str(error.value)


def read_back(address, topic, expected, timeout_s=20.0):
    consumer = Consumer(address, fetch_max_wait_ms=100)
    try:
        consumer.assign([(topic, 0)])
        consumer.seek_to_beginning()
        values = []
        deadline = time.monotonic() + timeout_s
        while len(values) < expected and time.monotonic() < deadline:
            values.extend(record.value for record in consumer.poll(timeout=0.5))
        return values
    finally:
        consumer.close()


@pytest.mark.integration
def test_acknowledged_records_survive_a_sigkill(tmp_path):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    brokers = start_brokers(1, str(tmp_path))
    try:
        with Admin(brokers[0].address) as admin:
            admin.create_topic(topic, partitions=1)
        producer = Producer(brokers[0].address, acks="all")
        try:
            futures = [producer.send(topic, b"%d" % i) for i in range(500)]
            offsets = [future.get(timeout=20).offset for future in futures]
        finally:
            producer.close()
        assert offsets == list(range(500))
        brokers[0].kill()
        assert brokers[0].process.returncode == -9
    finally:
        stop_brokers(brokers)

    brokers = start_brokers(1, str(tmp_path))
    try:
        assert read_back(brokers[0].address, topic, 500) == [b"%d" % i for i in range(500)]
        assert brokers[0].stop() == 0
    finally:
        stop_brokers(brokers)
