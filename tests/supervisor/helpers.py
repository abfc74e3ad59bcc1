"""Shared test helpers: run the CLI in a subprocess, wait on conditions, find a data dir's processes."""

import os
import subprocess
import sys
import time

import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI_TIMEOUT_S = 60


def run_cli(*args, env_extra=None, timeout_s=CLI_TIMEOUT_S):
    """`distlog cluster ARGS...` in a subprocess; returns the CompletedProcess (text)."""
    env = {key: value for key, value in os.environ.items() if key != "DISTLOG_DATA_DIR"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "distlog.cli", "cluster", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout_s, env=env, cwd=REPO_ROOT)


def wait_for(predicate, timeout_s=15.0, what="condition"):
    """Poll predicate until it returns something truthy; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def processes_using(data_dir) -> list[psutil.Process]:
    """Every live process whose command line mentions data_dir (brokers, supervisors)."""
    marker = str(data_dir)
    found = []
    for pid in psutil.pids():
        try:
            process = psutil.Process(pid)
            if marker in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, IndexError):
            # IndexError: psutil 7.2 reading /proc/PID/stat of a process that is just exiting
            # (other engineers' processes come and go on this machine).
            continue
    return found


def kill_all(processes) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes, timeout=10)
