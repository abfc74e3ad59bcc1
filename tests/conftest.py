"""Suite-wide test rules: no test may leave a process running; slow tests' processes skip coverage.

Leak guard: a test that leaves a process running fails, and the process is SIGKILLed.

Before each test (after the module- and session-scoped fixtures it uses are set up) the guard
notes which processes exist; after the test and its function-scoped fixtures are torn down, any
process that is new and still alive has leaked. "Ours" means a descendant of this pytest process,
or any process whose command line names this session's temporary directory: a detached supervisor
(`distlog cluster up --detach`) runs in its own session and is reparented away from us, but it and
its brokers still carry `--data-dir <tmp_path>/...`. A process already told to stop gets
LEAK_GRACE_S to go. The same check runs once at the end of the session for processes started by
module- and session-scoped fixtures, which the per-test check exempts while they are in use.
"""

import os
import signal
import time

import psutil
import pytest

LEAK_GRACE_S = 3.0
KILL_WAIT_S = 10.0
POLL_S = 0.05

# Helpers the interpreter starts on first use and keeps for the rest of the session.
SHARED_MACHINERY = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")

# What makes a Python subprocess measure itself under `scripts/test` (coverage's patch = subprocess).
COVERAGE_ENV = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, IndexError):  # IndexError: psutil 7.2 reading a process that is exiting
        return False


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.Error, IndexError):
        return "?"


def _is_shared_machinery(process: psutil.Process) -> bool:
    cmdline = _cmdline(process)
    return any(name in cmdline for name in SHARED_MACHINERY)


def _descendants() -> list:
    for _attempt in range(3):
        try:
            return psutil.Process().children(recursive=True)
        except (psutil.Error, IndexError):  # a process exited while psutil walked /proc
            continue
    return []


def _naming(marker: str) -> list:
    """Live processes (not this one) whose command line contains marker."""
    found = []
    for process in psutil.process_iter():
        if process.pid != os.getpid() and marker in _cmdline(process):
            found.append(process)
    return found


def our_processes(basetemp) -> set:
    """Every live process this session is answerable for, except the interpreter's helpers."""
    candidates = set(_descendants())
    if basetemp is not None:
        candidates |= set(_naming(str(basetemp) + os.sep))
    return {p for p in candidates if _alive(p) and not _is_shared_machinery(p)}


def wait_gone(processes, timeout_s: float) -> list:
    """Wait until each process has exited (or is a zombie); returns those still alive.

    Polls instead of psutil.wait_procs, which would reap our own children with waitpid and so
    take their exit status away from the subprocess.Popen objects that still own them.
    """
    deadline = time.monotonic() + timeout_s
    alive = [p for p in processes if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_S)
        alive = [p for p in alive if _alive(p)]
    return alive


def kill(processes) -> list:
    """SIGKILL each process; returns those that still have not gone after KILL_WAIT_S."""
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except (psutil.Error, IndexError):
            pass
    return wait_gone(processes, KILL_WAIT_S)


def reap_leaks(before: set, basetemp, grace_s: float = LEAK_GRACE_S) -> list:
    """Processes new since `before` that outlive grace_s, described as "pid N: cmdline" lines.
    They are SIGKILLed before this returns, so a leak cannot disturb the tests after it."""
    leaked = sorted(wait_gone(our_processes(basetemp) - before, grace_s), key=lambda p: p.pid)
    descriptions = [f"pid {p.pid}: {_cmdline(p)}" for p in leaked]
    kill(leaked)
    return descriptions


@pytest.fixture(autouse=True)
def no_leaked_processes(request, tmp_path_factory):
    """Fail the test if it leaves a process running (and SIGKILL that process)."""
    basetemp = tmp_path_factory.getbasetemp()
    request.config.stash[_BASETEMP] = basetemp
    before = our_processes(basetemp)
    yield
    leaked = reap_leaks(before, basetemp)
    if leaked:
        pytest.fail(f"test left {len(leaked)} process(es) running; SIGKILLed them:\n  " + "\n  ".join(leaked),
                    pytrace=False)


@pytest.fixture(autouse=True)
def slow_tests_start_unmeasured_processes(request, monkeypatch):
    """A `slow` test repeats at length what faster tests already measure (the 2000-seed Raft
    simulation), and coverage's line tracing makes such tight pure-Python loops 3-5x slower; the
    processes it starts therefore run without coverage. Its own process is still measured."""
    if request.node.get_closest_marker("slow") is not None:
        for name in COVERAGE_ENV:
            monkeypatch.delenv(name, raising=False)


def pytest_sessionstart(session):
    session.config.stash[_SESSION_START] = set(_descendants())


def pytest_sessionfinish(session):
    """After every fixture is torn down: processes of module/session fixtures nobody stopped."""
    before = session.config.stash.get(_SESSION_START, set())
    leaked = reap_leaks(before, session.config.stash.get(_BASETEMP, None))
    if not leaked:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("processes left running at the end of the session; SIGKILLed them:\n  "
                            + "\n  ".join(leaked), red=True)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_SESSION_START = pytest.StashKey[set]()
_BASETEMP = pytest.StashKey[object]()
