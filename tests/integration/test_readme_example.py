"""The README's Python example runs as written against a cluster that `distlog cluster up` started.

Nothing in it is swapped: it finds the cluster the way a reader's copy would, through the data
dir scripts/up names. The cluster gets free ports, not 9092 (which scripts/up prefers), so an
example that named a fixed address would hang here as it did for readers whose 9092 was taken."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.supervisor.helpers import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    using_it = text[text.index("## Using it"):]
    match = re.search(r"```python\n(.*?)```", using_it, re.S)
    assert match, "the README's 'Using it' section has no Python example"
    return match.group(1)


def test_the_readme_python_example_finds_the_cluster_and_reads_back_both_records(cluster_dir, tmp_path):
    up = run_cli("up", "-n", "3", "--detach", "--data-dir", cluster_dir, timeout_s=90)
    assert up.returncode == 0, up.stderr
    env = {key: value for key, value in os.environ.items() if key != "DISTLOG_BOOTSTRAP"}
    env["DISTLOG_DATA_DIR"] = str(cluster_dir)  # what scripts/up tells the reader to export
    elsewhere = tmp_path / "elsewhere"  # no ./.distlog here: only the environment leads to the cluster
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-c", readme_example()], capture_output=True, text=True, timeout=120,
                         env=env, cwd=elsewhere)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert sum(line.startswith("RecordMetadata(topic='orders'") for line in lines) == 2, run.stdout  # get() and callback
    read_back = [line for line in lines if re.match(r"\d+ \d+ ", line)]
    assert sorted(line.split(" ", 2)[2] for line in read_back) == sorted(["b'alice' b'order #1'", "None b'order #2'"]), run.stdout
