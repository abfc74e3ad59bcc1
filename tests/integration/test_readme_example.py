"""The README's Python example runs as written against a 3-broker cluster.

Only the bootstrap address is swapped for this test cluster's (tests use free ports; scripts/up
uses 9092-9094 when they are free, which the README's address names)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from distlog.broker.launcher import start_brokers, stop_brokers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

README = Path(__file__).resolve().parents[2] / "README.md"
README_ADDRESS = '"127.0.0.1:9092"'


def readme_example() -> str:
    text = README.read_text()
    using_it = text[text.index("## Using it"):]
    match = re.search(r"```python\n(.*?)```", using_it, re.S)
    assert match, "the README's 'Using it' section has no Python example"
    code = match.group(1)
    assert code.count(README_ADDRESS) == 1, f"the example no longer names its cluster as {README_ADDRESS}"
    return code


def test_the_readme_python_example_produces_and_reads_back_both_records(tmp_path):
    brokers = start_brokers(3, str(tmp_path))
    try:
        bootstrap = ",".join(b.address for b in brokers)
        code = readme_example().replace(README_ADDRESS, repr(bootstrap))
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    finally:
        stop_brokers(brokers)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("RecordMetadata(topic='orders'") for line in lines) == 2, run.stdout  # get() and callback
    read_back = [line for line in lines if re.match(r"\d+ \d+ ", line)]
    assert sorted(line.split(" ", 2)[2] for line in read_back) == sorted(["b'alice' b'order #1'", "None b'order #2'"]), run.stdout
