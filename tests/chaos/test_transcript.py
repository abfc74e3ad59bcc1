"""The transcript renders a history as a timeline a person can read."""

from distlog.chaos.transcript import render_transcript


def test_a_kill_names_what_the_broker_led_and_the_new_leader_follows():
    history = [
        {"type": "meta", "topic": "chaos", "seed": 4, "brokers": 3, "partitions": 3, "replication_factor": 3,
         "faults": ["kill"], "t": 0.0},
        {"type": "leader", "partition": 0, "leader": 2, "epoch": 1, "t": 0.5},
        {"type": "leader", "partition": 2, "leader": 2, "epoch": 1, "t": 0.5},
        {"type": "leader", "partition": 1, "leader": 1, "epoch": 1, "t": 0.5},
        {"type": "nemesis", "phase": "start", "id": 1, "f": "kill", "target": [2], "partitions": [0, 2], "t": 12.3},
        {"type": "leader", "partition": 0, "leader": 3, "epoch": 5, "t": 12.9},
        {"type": "nemesis", "phase": "end", "id": 1, "f": "kill", "target": [2], "t": 13.6},
        {"type": "nemesis", "phase": "start", "id": 2, "f": "partition", "shape": "one-way", "cut": [1, 3],
         "target": [1, 3], "partitions": [1], "t": 15.0},
        {"type": "nemesis", "phase": "end", "id": 2, "f": "partition", "t": 17.0},
    ]
    text = render_transcript(history, {"valid": True, "acked_writes": 10, "failover_ms_p50": 600, "failover_ms_max": 700})
    assert "t=12.3s SIGKILL broker 2 (leader of chaos-0, chaos-2)" in text
    assert "t=12.9s broker 3 leads chaos-0, epoch 5" in text
    assert "t=13.6s kill #1 over (1.3 s)" in text
    assert "one-way: what broker 1 sends to broker 3 is lost" in text
    assert "Verdict: **PASS**" in text
