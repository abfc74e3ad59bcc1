"""bench/compare.py's ratios: distlog's per-record send()/poll() figures over each peer's, with
send_batch() beside them, in the JSON shape the issue asks for. Pure, no processes."""

from distlog.bench.compare import ratios_to_peers, table


def system(name, produce, consume=None, **extra):
    return {"system": name, "produce_msgs_per_s": produce, "consume_msgs_per_s": consume, **extra}


def test_ratios_use_send_and_poll_and_report_send_batch_beside_them():
    systems = [system("distlog-send", 600_000, 1_200_000), system("distlog-send_batch", 1_500_000),
               system("nats-jetstream", 50_000, 40_000), system("redis-streams", 150_000, 600_000)]
    assert ratios_to_peers(systems) == {
        "nats-jetstream": {"produce": 12.0, "consume": 30.0, "produce_send_batch": 30.0},
        "redis-streams": {"produce": 4.0, "consume": 2.0, "produce_send_batch": 10.0},
    }


def test_a_peer_that_did_not_consume_has_no_consume_ratio_and_no_peers_no_ratios():
    systems = [system("distlog-send", 600_000, 1_200_000), system("nats-jetstream", 50_000, None)]
    assert ratios_to_peers(systems) == {"nats-jetstream": {"produce": 12.0, "consume": None}}
    assert ratios_to_peers(systems[:1]) == {}


def test_the_table_has_a_row_per_system_with_its_ratio():
    systems = [system("distlog-send", 600_000, 1_200_000, broker_rss_mb_peak=80.5), system("nats-jetstream", 50_000, 40_000)]
    lines = table(systems, ratios_to_peers(systems)).splitlines()
    assert lines[0].split()[0] == "system" and len(lines) == 3
    assert "600 000" in lines[1] and "80.5" in lines[1]
    assert lines[2].startswith("nats-jetstream") and lines[2].endswith("12.0x / 30.0x")
