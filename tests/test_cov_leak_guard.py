"""The leak guard of tests/conftest.py, run on small test files in a pytest subprocess of their own."""

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree

import psutil
import pytest

from tests.supervisor.helpers import REPO_ROOT, wait_for

pytestmark = pytest.mark.integration

LEAKY_TESTS = '''
import subprocess, sys

def test_leaks_a_sleep():
    subprocess.Popen(["sleep", "300"])

def test_leaks_a_detached_process(tmp_path):
    # The shell exits at once, so the sleeper is no descendant of pytest: only its command line,
    # which names this test's tmp_path, gives it away (as --data-dir does for a detached supervisor).
    subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(300)' {tmp_path} &"], check=True)

def test_a_process_told_to_stop_gets_time_to_exit():
    slow = subprocess.Popen([sys.executable, "-c", """
import signal, sys, time
def stop(*_):
    time.sleep(1)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(300)
"""], stdout=subprocess.PIPE, text=True)
    assert slow.stdout.readline() == "ready\\n"
    slow.terminate()

def test_runs_after_the_leaks():
    pass
'''

MODULE_FIXTURE_TESTS = '''
import subprocess
import pytest

@pytest.fixture(scope="module")
def server():
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()

def test_first_user(server):
    assert server.poll() is None

def test_second_user(server):
    assert server.poll() is None
'''

FORGOTTEN_MODULE_FIXTURE_TESTS = '''
import subprocess
import pytest

@pytest.fixture(scope="module")
def server():
    return subprocess.Popen(["sleep", "301"])

def test_uses_it(server):
    assert server.poll() is None
'''


def run_inner_pytest(tmp_path, source):
    """Run one test file under the guard; returns (CompletedProcess, {test name: outcome})."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "PYTHONPATH": REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q",
         f"--junitxml={junit}", f"--basetemp={tmp_path / 'basetemp'}", "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        problems = [child.tag for child in case if child.tag in ("failure", "error")]
        outcomes[case.get("name")] = problems[0] if problems else "passed"
    return result, outcomes


def leaked_pids(output: str) -> list[int]:
    """Each pid the guard named, once: with CI set, pytest prints the short test summary
    untruncated, so every message (and its pid lines) appears twice."""
    pids = [int(line.split()[1].rstrip(":")) for line in output.splitlines() if line.strip().startswith("pid ")]
    return list(dict.fromkeys(pids))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_leaked_child_or_detached_process_fails_its_test_and_is_killed(tmp_path):
    result, outcomes = run_inner_pytest(tmp_path, LEAKY_TESTS)

    assert result.returncode == 1, result.stdout + result.stderr
    assert outcomes == {"test_leaks_a_sleep": "error", "test_leaks_a_detached_process": "error",
                        "test_a_process_told_to_stop_gets_time_to_exit": "passed",
                        "test_runs_after_the_leaks": "passed"}, result.stdout
    assert "test left 1 process(es) running; SIGKILLed them" in result.stdout
    assert ": sleep 300" in result.stdout
    assert "time.sleep(300)" in result.stdout
    pids = leaked_pids(result.stdout)
    assert len(pids) == 2, result.stdout
    wait_for(lambda: all(gone(pid) for pid in pids), timeout_s=10, what="the leaked processes to be gone")


def test_processes_of_a_module_fixture_count_once_the_fixture_is_torn_down(tmp_path):
    result, outcomes = run_inner_pytest(tmp_path, MODULE_FIXTURE_TESTS)

    assert result.returncode == 0, result.stdout + result.stderr
    assert outcomes == {"test_first_user": "passed", "test_second_user": "passed"}


def test_a_module_fixture_that_never_stops_its_process_fails_the_session(tmp_path):
    result, outcomes = run_inner_pytest(tmp_path, FORGOTTEN_MODULE_FIXTURE_TESTS)

    assert outcomes == {"test_uses_it": "passed"}
    assert result.returncode == 1, result.stdout + result.stderr
    assert "processes left running at the end of the session; SIGKILLed them" in result.stdout
    assert ": sleep 301" in result.stdout
    pids = leaked_pids(result.stdout)
    assert len(pids) == 1
    wait_for(lambda: gone(pids[0]), timeout_s=10, what="the leaked sleep to be gone")
