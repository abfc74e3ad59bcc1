"""The chaos report: report.md says the verdict, counts, faults and anomalies; timeline.png is a real PNG."""

import os

from distlog.chaos.checker import check
from distlog.chaos.report import write_report

from tests.chaos.test_checker import clean_history, final_read

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
META = {"command": "distlog chaos --kill-random 10s --seed 7", "seed": 7, "duration_s": 10,
        "brokers": 3, "topic": "chaos", "partitions": 2}


def history_with_faults(lost=False):
    history, log = clean_history()
    history[1:1] = [
        {"type": "nemesis", "phase": "start", "id": 1, "f": "kill", "target": [2], "t": 0.2},
        {"type": "nemesis", "phase": "end", "id": 1, "f": "kill", "target": [2], "t": 0.9},
        {"type": "nemesis", "phase": "start", "id": 2, "f": "pause", "target": [1], "partitions": [1], "t": 1.0},
        # It ends at 1.8, before v4 (partition 0) and v5 (partition 1) are acknowledged at 2.1 and 2.6.
        {"type": "nemesis", "phase": "end", "id": 2, "f": "pause", "target": [1], "t": 1.8},
    ]
    if lost:
        history[-1] = final_read([r for r in log if r[2] != "v5"], t=5.0)
    return history


def write(tmp_path, history):
    result = check(history)
    history_file = str(tmp_path / "history.jsonl")
    report_path = write_report(result, str(tmp_path / "report"), META, history_file)
    with open(report_path, encoding="utf-8") as report:
        text = report.read()
    with open(tmp_path / "report" / "timeline.png", "rb") as png:
        image = png.read()
    return result, report_path, text, image


def test_report_of_a_valid_run(tmp_path):
    result, report_path, text, image = write(tmp_path, history_with_faults())
    assert result["valid"]
    assert report_path == str(tmp_path / "report" / "report.md")
    assert text.startswith("# distlog chaos run: PASS")
    assert "FAIL" not in text
    assert META["command"] in text and "| seed " in text
    assert "| sends ok (acknowledged)" in text and "| 6 " in text
    # The fault table: each fault ended and was followed by progress. The kill touched both
    # partitions (no "partitions" in its start record): the first sends invoked after it started
    # are v1 (partition 1, ok at 0.6) and v2 (partition 0, ok at 1.1), so its failover max is 900 ms.
    kill_row = next(line for line in text.splitlines() if line.startswith("| 1 "))
    assert "kill" in kill_row and "[2]" in kill_row and "0.70" in kill_row and "yes" in kill_row
    assert "| 900 " in kill_row
    pause_row = next(line for line in text.splitlines() if line.startswith("| 2 "))
    assert "pause" in pause_row and "0.80" in pause_row and "| 600 " in pause_row  # v3 at 1.6
    assert "failover ms p50 / max" in text and "| 600 / 900 |" in text
    assert "(timeline.png)" in text and "(../history.jsonl)" in text
    assert "How to read this" in text
    assert image.startswith(PNG_SIGNATURE) and len(image) > 1000


def test_report_of_an_invalid_run_lists_the_anomalies(tmp_path):
    result, _, text, image = write(tmp_path, history_with_faults(lost=True))
    assert not result["valid"]
    assert text.startswith("# distlog chaos run: FAIL")
    lost_row = next(line for line in text.splitlines() if line.startswith("| lost "))
    assert "| 1 " in lost_row
    assert "### lost: 1" in text and '`"v5"`' in text
    assert image.startswith(PNG_SIGNATURE)


def test_report_caps_examples_at_ten(tmp_path):
    history = history_with_faults()
    history.insert(-1, {"type": "ok", "process": "consumer-0", "f": "poll",
                        "records": [[0, 10 + i, f"ghost-{i}"] for i in range(25)], "t": 4.0})
    _, _, text, _ = write(tmp_path, history)
    assert "### unexpected_polls: 25 (first 10 of 25)" in text
    assert "ghost-9" in text and "ghost-10" not in text


def test_report_says_why_a_run_without_anomalies_failed(tmp_path):
    history = [{"type": "meta", "t": 0.0, "partitions": 2},
               {"type": "nemesis", "phase": "start", "id": 1, "f": "kill", "target": [2], "t": 0.2},
               final_read([], t=5.0)]   # nothing acknowledged, and the kill never ended
    _, _, text, _ = write(tmp_path, history)
    assert text.startswith("# distlog chaos run: FAIL")
    assert "only 0 acknowledged writes (at least 1 needed" in text
    assert "partitions [0, 1] took no write after the last fault ended at 5.00 s" in text


def test_report_of_a_missing_final_read(tmp_path):
    history = history_with_faults()
    history.pop()
    _, _, text, _ = write(tmp_path, history)
    assert text.startswith("# distlog chaos run: FAIL")
    assert "final read is missing" in text
    assert os.path.getsize(tmp_path / "report" / "timeline.png") > 0
