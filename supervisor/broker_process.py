"""One broker OS process: spawn it with its log file, signal it, stop it, measure it with psutil."""

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time

import psutil

# Tests and tools can run another broker program (a stand-in, a wrapper) with the same arguments.
BROKER_COMMAND_ENV = "DISTLOG_BROKER_COMMAND"

_PR_SET_PDEATHSIG = 1


def broker_command() -> list[str]:
    """The program that runs one broker; --id/--data-dir/--listen/--peers/... are appended."""
    override = os.environ.get(BROKER_COMMAND_ENV)
    return shlex.split(override) if override else [sys.executable, "-m", "distlog.broker"]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor dies, so no broker is orphaned."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: `distlog cluster up` still finds and stops orphans by their pid


class BrokerProcess:
    """A broker's process across restarts: same id, address, data dir and (appended) log file."""

    def __init__(self, broker_id: int, address: str, data_dir: str, log_file: str,
                 peers_arg: str, cluster_id: str, metrics_port: int | None = None):
        self.broker_id = broker_id
        self.address = address
        self.data_dir = data_dir
        self.log_file = log_file
        self.metrics_port = metrics_port
        # The broker rotates its own log file (and points its stdout/stderr at the new one).
        self._argv = ["--id", str(broker_id), "--data-dir", data_dir, "--listen", address,
                      "--peers", peers_arg, "--cluster-id", cluster_id, "--log-file", log_file]
        if metrics_port is not None:
            self._argv += ["--metrics-port", str(metrics_port)]
        self._peers_at = self._argv.index("--peers") + 1
        self._popen: subprocess.Popen | None = None
        self._process: psutil.Process | None = None
        self.started_monotonic_s = 0.0

    def set_peers(self, peers_arg: str) -> None:
        """The --peers of the next spawn (a broker joined or left; a running broker learns it
        from the cluster metadata)."""
        self._argv[self._peers_at] = peers_arg

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def spawn(self) -> None:
        """Start the broker; stdout and stderr append to its log file. Its own process group, so
        a Ctrl-C meant for the supervisor does not reach it: the supervisor stops it in order."""
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self._popen = subprocess.Popen(
                [*broker_command(), *self._argv], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.started_monotonic_s = time.monotonic()
        try:
            self._process = psutil.Process(self._popen.pid)
            self._process.cpu_percent(None)
        except (psutil.Error, IndexError):  # it died already; the supervisor sees the exit code
            self._process = None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended (reaped), None while it runs or before spawn."""
        return self._popen.poll() if self._popen is not None else None

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def send_signal(self, signum: int) -> bool:
        """Signal the broker if it runs; False if there was nothing to signal."""
        if not self.running():
            return False
        self._popen.send_signal(signum)
        return True

    def stop(self, timeout_s: float) -> int | None:
        """SIGTERM (and SIGCONT, in case it is paused), wait, SIGKILL after timeout_s."""
        if self.send_signal(signal.SIGTERM):
            self.send_signal(signal.SIGCONT)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int | None:
        """Wait up to timeout_s for the exit, then SIGKILL; returns the exit code."""
        if self._popen is None:
            return None
        try:
            return self._popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            return self._popen.wait()

    def stats(self) -> dict:
        """pid, psutil status, RSS, CPU % since the last call, uptime; zeros when not running."""
        if not self.running() or self._process is None:
            return {"pid": None, "process_status": None, "rss_bytes": 0, "cpu_percent": 0.0,
                    "uptime_s": 0.0}
        try:
            with self._process.oneshot():
                return {"pid": self.pid, "process_status": self._process.status(),
                        "rss_bytes": self._process.memory_info().rss,
                        "cpu_percent": self._process.cpu_percent(None),
                        "uptime_s": round(time.monotonic() - self.started_monotonic_s, 3)}
        except (psutil.Error, IndexError):  # IndexError: psutil reading a process as it exits
            return {"pid": self.pid, "process_status": "gone", "rss_bytes": 0, "cpu_percent": 0.0,
                    "uptime_s": 0.0}

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the broker's log, for error messages."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
