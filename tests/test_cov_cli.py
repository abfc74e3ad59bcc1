"""The topic / produce / consume commands where the happy path ends: keys, partitions, new records only."""

import json
import subprocess
import sys

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers
from distlog.supervisor import cluster_file

pytestmark = pytest.mark.integration


def distlog(*args, input_text=None):
    return subprocess.run([sys.executable, "-m", "distlog.cli", *args], input=input_text,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    brokers = start_brokers(1, str(tmp_path_factory.mktemp("cli-broker")))
    try:
        yield brokers[0].address
    finally:
        stop_brokers(brokers)


def test_topic_list_as_json_names_every_topic(bootstrap):
    for name in ("alpha", "beta"):
        assert distlog("topic", "create", name, "--bootstrap", bootstrap).returncode == 0
    listed = distlog("topic", "list", "--json", "--bootstrap", bootstrap)
    assert listed.returncode == 0, listed.stderr
    assert {"alpha", "beta"} <= {topic["name"] for topic in json.loads(listed.stdout)}


def test_a_line_without_the_key_separator_stops_produce_after_sending_the_lines_before_it(bootstrap):
    """Kafka's console producer fails such a line; it used to become a record with a null key."""
    assert distlog("topic", "create", "keyed", "--bootstrap", bootstrap).returncode == 0
    produced = distlog("produce", "keyed", "--key-separator", ":", "--bootstrap", bootstrap,
                       input_text="alice:hi\nno separator here\nbob:never sent\n")
    assert produced.returncode == 1
    assert "produced 1 record(s)" in produced.stderr
    assert "line 2 has no key separator ':'" in produced.stderr
    consumed = distlog("consume", "keyed", "--from-beginning", "--timeout", "2", "--format", "json",
                       "--bootstrap", bootstrap)
    records = [json.loads(line) for line in consumed.stdout.splitlines()]
    assert [(r["key"], r["value"]) for r in records] == [("alice", "hi")]


def test_an_offset_past_the_end_is_an_error_and_offset_with_from_beginning_a_usage_error(bootstrap):
    assert distlog("topic", "create", "short", "--bootstrap", bootstrap).returncode == 0
    assert distlog("produce", "short", "--bootstrap", bootstrap, input_text="a\nb\nc\n").returncode == 0
    past = distlog("consume", "short", "--partition", "0", "--offset", "999", "--timeout", "5", "--bootstrap", bootstrap)
    assert past.returncode == 1, past.stderr
    assert "offset 999 is outside short-0, which holds offsets 0..2; give an offset in 0..3" in past.stderr
    assert past.stdout == "" and past.stderr.count("(") == 0, "the range once, not the broker's wording nested in it"
    at_end = distlog("consume", "short", "--partition", "0", "--offset", "3", "--timeout", "1", "--bootstrap", bootstrap)
    assert at_end.returncode == 0 and "consumed 0 record(s)" in at_end.stderr  # the end itself: wait for new ones
    from_two = distlog("consume", "short", "--partition", "0", "--offset", "2", "--timeout", "1", "--bootstrap", bootstrap)
    assert from_two.stdout.splitlines() == ["c"]
    both = distlog("consume", "short", "--partition", "0", "--offset", "2", "--from-beginning", "--bootstrap", bootstrap)
    assert both.returncode == 2 and "give --offset or --from-beginning, not both" in both.stderr


def test_produce_on_endless_input_keeps_bounded_memory_and_ctrl_c_says_what_was_written(bootstrap):
    """`tail -f | distlog produce` kept a future per line (1M lines: 187 MB) and Ctrl-C printed
    only 'Aborted!' with exit 1."""
    import signal
    import time

    assert distlog("topic", "create", "endless", "--bootstrap", bootstrap).returncode == 0
    producer = subprocess.Popen([sys.executable, "-m", "distlog.cli", "produce", "endless", "--acks", "1",
                                 "--bootstrap", bootstrap], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        line = "x" * 100 + "\n"
        rss_kib = []
        for round_number in range(12):  # 1.2 M lines of 101 bytes (121 MB), RSS read between rounds
            producer.stdin.write(line * 100_000)
            producer.stdin.flush()
            with open(f"/proc/{producer.pid}/status") as status:
                rss_kib.append(next(int(l.split()[1]) for l in status if l.startswith("VmRSS:")))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # let the last lines be read before the interrupt
            consumed = distlog("topic", "describe", "endless", "--json", "--bootstrap", bootstrap)
            if json.loads(consumed.stdout)["partitions"][0]["high_watermark"] >= 1_190_000:
                break
        producer.send_signal(signal.SIGINT)
        _, stderr = producer.communicate(timeout=60)
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    assert producer.returncode == 130, stderr
    written = int(stderr.split("interrupted: produced ")[1].split(" ")[0])
    assert 1_190_000 <= written <= 1_200_000, stderr
    # Bounded by the 32 MB buffer (records held as Python objects take up to about twice that);
    # a future kept per line held every line's batch too: ~180 bytes a line, over 200 MB here.
    growth_mib = (max(rss_kib) - rss_kib[0]) / 1024
    assert growth_mib < 100, f"RSS grew {growth_mib:.0f} MiB over 1.1 M lines: {rss_kib}"


def test_consume_into_a_closed_pipe_ends_quietly(bootstrap):
    assert distlog("topic", "create", "piped", "--bootstrap", bootstrap).returncode == 0
    assert distlog("produce", "piped", "--bootstrap", bootstrap, input_text="".join(f"r{i}\n" for i in range(5000))).returncode == 0
    pipeline = subprocess.run(f"{sys.executable} -m distlog.cli consume piped --from-beginning --timeout 5 "
                              f"--bootstrap {bootstrap} | head -1; echo \"consume exited ${{PIPESTATUS[0]}}\" >&2", shell=True, capture_output=True, text=True,
                              timeout=60, executable="/bin/bash")
    assert pipeline.stdout == "r0\n"
    assert "Traceback" not in pipeline.stderr and "BrokenPipe" not in pipeline.stderr, pipeline.stderr
    assert "consumed" in pipeline.stderr
    assert "consume exited 0" in pipeline.stderr, "it exited 1 on the broken pipe"


def test_one_key_for_every_record_and_key_with_separator_is_a_usage_error(bootstrap):
    assert distlog("topic", "create", "one-key", "--bootstrap", bootstrap).returncode == 0
    produced = distlog("produce", "one-key", "--key", "k", "--bootstrap", bootstrap, input_text="a\nb\n")
    assert produced.returncode == 0, produced.stderr
    consumed = distlog("consume", "one-key", "--from-beginning", "--max-records", "2", "--format", "json",
                       "--bootstrap", bootstrap)
    assert [json.loads(line)["key"] for line in consumed.stdout.splitlines()] == ["k", "k"]

    both = distlog("produce", "one-key", "--key", "k", "--key-separator", ":", "--bootstrap", bootstrap,
                   input_text="a\n")
    assert both.returncode == 2
    assert "give --key or --key-separator, not both" in both.stderr


def test_records_sent_to_a_partition_the_topic_lacks_fail_with_exit_1(bootstrap):
    assert distlog("topic", "create", "narrow", "--partitions", "2", "--bootstrap", bootstrap).returncode == 0
    produced = distlog("produce", "narrow", "--partition", "5", "--timeout", "5", "--bootstrap", bootstrap,
                       input_text="x\ny\n")
    assert produced.returncode == 1
    assert "error: UNKNOWN_TOPIC_OR_PARTITION: topic 'narrow' has partitions 0..1, not 5" in produced.stderr
    assert "check the name" not in produced.stderr and produced.stderr.count("(") == 1, "one hint, about the partition"
    consumed = distlog("consume", "narrow", "--partition", "5", "--timeout", "1", "--bootstrap", bootstrap)
    assert consumed.returncode == 1 and "has partitions 0..1, not 5" in consumed.stderr
    assert "check the name" not in consumed.stderr and consumed.stderr.count("(") == 1
    described = distlog("topic", "describe", "narrow", "--json", "--bootstrap", bootstrap)
    assert sum(p["high_watermark"] for p in json.loads(described.stdout)["partitions"]) == 0


def test_consume_without_from_beginning_prints_only_new_records(bootstrap):
    assert distlog("topic", "create", "latest", "--bootstrap", bootstrap).returncode == 0
    assert distlog("produce", "latest", "--bootstrap", bootstrap, input_text="old\n").returncode == 0
    consumer = subprocess.Popen([sys.executable, "-m", "distlog.cli", "consume", "latest", "--max-records", "1",
                                 "--timeout", "30", "--bootstrap", bootstrap],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The consumer starts at the end whenever it gets there; keep producing until it sees one.
        produced = 0
        while consumer.poll() is None and produced < 100:
            assert distlog("produce", "latest", "--bootstrap", bootstrap, input_text="new\n").returncode == 0
            produced += 1
        out, err = consumer.communicate(timeout=30)
    finally:
        consumer.kill()
        consumer.wait()
    assert consumer.returncode == 0, err
    assert out.splitlines() == ["new"]
    assert "consumed 1 record(s) from 'latest'" in err


def test_a_cluster_file_listing_no_brokers_says_to_bring_the_cluster_up(tmp_path):
    cluster_file.save(tmp_path, {"cluster_id": "empty", "brokers": [], "supervisor": {}})
    result = distlog("topic", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "lists no brokers" in result.stderr and "distlog cluster up" in result.stderr


def test_binary_keys_and_values_print_byte_for_byte_in_base64_or_hex_and_utf8_warns(bootstrap):
    """0xff used to print as a replacement character in JSON with no way to see the bytes."""
    import base64

    from distlog.client import Producer

    assert distlog("topic", "create", "binary", "--bootstrap", bootstrap).returncode == 0
    with_bytes = Producer(bootstrap, acks="all")
    try:
        with_bytes.send("binary", b"\xff\x00bin", key=b"\xfe").get(timeout=10)
    finally:
        with_bytes.close()
    out = {}
    for encoding in ("base64", "hex", "utf8"):
        consumed = distlog("consume", "binary", "--from-beginning", "--max-records", "1", "--format", "json",
                           "--encoding", encoding, "--timeout", "10", "--bootstrap", bootstrap)
        assert consumed.returncode == 0, consumed.stderr
        out[encoding] = (json.loads(consumed.stdout), consumed.stderr)
    assert base64.b64decode(out["base64"][0]["value"]) == b"\xff\x00bin"
    assert base64.b64decode(out["base64"][0]["key"]) == b"\xfe"
    assert out["hex"][0]["value"] == "ff0062696e" and out["hex"][0]["key"] == "fe"
    assert "is not UTF-8 text" in out["utf8"][1] and "--encoding base64 or hex" in out["utf8"][1]
    assert "warning" not in out["base64"][1]


def test_headers_format_strings_print_keys_and_offset_specs_as_kcat_and_rpk_users_type_them(bootstrap):
    import time

    assert distlog("topic", "create", "spec", "--bootstrap", bootstrap).returncode == 0
    before_ms = int(time.time() * 1000)
    lines = "".join(f"k{i}:v{i}\n" for i in range(6))
    produced = distlog("produce", "spec", "--key-separator", ":", "-H", "trace=abc", "-H", "who=me",
                       "--bootstrap", bootstrap, input_text=lines)
    assert produced.returncode == 0, produced.stderr

    def consume(*args):
        result = distlog("consume", "spec", *args, "--timeout", "1", "--bootstrap", bootstrap)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    assert consume("-o", "start", "--format", "%k=%v p%p o%o [%h] %T 100%%")[0] == "k0=v0 p0 o0 [trace=abc,who=me] spec 100%"
    assert consume("-o", "start", "--format", r"%v\t%o\n")[:2] == ["v0\t0", "v1\t1"]
    assert consume("-o", "start", "--print-keys")[:2] == ["k0\tv0", "k1\tv1"]
    first = json.loads(consume("-o", "start", "--format", "json")[0])
    assert consume("-o", "start", "--format", "%t")[0] == str(first["timestamp"])
    assert first["headers"] == [{"key": "trace", "value": "abc"}, {"key": "who", "value": "me"}]
    assert consume("-o", "-2") == ["v4", "v5"]  # the last two records of each partition
    assert consume("-o", "-100") == [f"v{i}" for i in range(6)]  # no more than the partition holds
    assert consume("-o", f"@{before_ms}")[:1] == ["v0"]  # from a time
    assert consume("-o", "@-1h") == [f"v{i}" for i in range(6)]  # the last hour
    assert consume("-o", f"@{before_ms + 3_600_000}") == []  # nothing that new: only new records
    assert consume("--partition", "0", "-o", "3") == ["v3", "v4", "v5"]
    assert consume("-p", "0", "-o", "5") == ["v5"]  # -p as kcat and rpk spell it
    bad = distlog("consume", "spec", "-o", "yesterday", "--bootstrap", bootstrap)
    assert bad.returncode == 2 and "is not start, end, N, -N" in bad.stderr
    bad_format = distlog("consume", "spec", "--format", "xml", "--bootstrap", bootstrap)
    assert bad_format.returncode == 2 and "format string" in bad_format.stderr
    bad_header = distlog("produce", "spec", "-H", "novalue", "--bootstrap", bootstrap, input_text="x\n")
    assert bad_header.returncode == 2 and "is not NAME=VALUE" in bad_header.stderr


def test_ctrl_c_in_consume_says_how_many_records_were_read_and_exits_130(bootstrap):
    """It printed only 'Aborted!' with exit 1."""
    import signal

    assert distlog("topic", "create", "interrupted", "--bootstrap", bootstrap).returncode == 0
    assert distlog("produce", "interrupted", "--bootstrap", bootstrap, input_text="a\nb\nc\n").returncode == 0
    consumer = subprocess.Popen([sys.executable, "-m", "distlog.cli", "consume", "interrupted", "-o", "start",
                                 "--bootstrap", bootstrap], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = [consumer.stdout.readline() for _ in range(3)]  # all there is: it now waits for more
        consumer.send_signal(signal.SIGINT)
        rest, stderr = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert printed == ["a\n", "b\n", "c\n"] and rest == ""
    assert consumer.returncode == 130, stderr
    assert "interrupted: consumed 3 record(s) from 'interrupted'" in stderr and "Traceback" not in stderr
