"""The detached supervisor process behind `distlog cluster up --detach`.

The CLI starts `python -m distlog.supervisor.daemon ...` in a new session with its stdio going to
DATA/supervisor.log and passes the write end of a pipe as --ready-fd. This process writes JSON
lines there — {"say": message} for the user while starting, then {"ok": true} once every broker
answers and the cluster is healthy, or {"ok": false, "error": ...} — and closes it, so the CLI
returns exactly when the cluster is ready or has failed.
"""

import json
import os
import sys

import click

from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.service import run_cluster
from distlog.supervisor.supervisor import ClusterError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", required=True, help="the cluster's data dir")
@click.option("--brokers", type=click.IntRange(1, 99), default=None, help="brokers of a new cluster")
@click.option("--port-base", type=click.IntRange(1, 65535), default=None, help="broker N listens on PORT_BASE+N-1")
@click.option("--no-restart", is_flag=True, help="leave crashed brokers down")
@click.option("--restart-backoff-s", type=click.FloatRange(0), default=RestartPolicy.initial_s, show_default=True,
              help="first restart delay")
@click.option("--restart-backoff-max-s", type=click.FloatRange(0), default=RestartPolicy.max_s, show_default=True,
              help="longest restart delay")
@click.option("--ready-timeout-s", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="how long the cluster gets to answer and be healthy")
@click.option("--ready-fd", type=int, required=True, help="the pipe to report readiness on (JSON lines)")
def daemon(data_dir, brokers, port_base, no_restart, restart_backoff_s, restart_backoff_max_s, ready_timeout_s,
           ready_fd):
    """The detached supervisor behind `distlog cluster up --detach` (not for typing by hand)."""
    sys.exit(_run(data_dir, brokers, port_base, no_restart, restart_backoff_s, restart_backoff_max_s,
                  ready_timeout_s, ready_fd))


class _ReadyPipe:
    """The readiness report to the CLI that started us: messages, then one final line."""

    def __init__(self, fd: int):
        self._fd = fd

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        self._write({"say": message})

    def report(self, final: dict) -> None:
        self._write(final)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, message: dict) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, (json.dumps(message) + "\n").encode())
        except OSError:
            pass  # the CLI gave up waiting; the supervisor log still has the story


def main(argv=None) -> int:
    try:
        daemon.main(args=argv, prog_name="python -m distlog.supervisor.daemon", standalone_mode=False)
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as exiting:
        return exiting.code if isinstance(exiting.code, int) else 1
    return 0


def _run(data_dir, brokers, port_base, no_restart, restart_backoff_s, restart_backoff_max_s, ready_timeout_s,
         ready_fd) -> int:
    ready = _ReadyPipe(ready_fd)
    policy = RestartPolicy(enabled=not no_restart, initial_s=restart_backoff_s, max_s=restart_backoff_max_s)
    try:
        run_cluster(data_dir, brokers=brokers, port_base=port_base, policy=policy,
                    ready_timeout_s=ready_timeout_s,
                    on_ready=lambda status: ready.report({"ok": True}),
                    say=ready.say)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        ready.report({"ok": False, "error": str(error)})
        return 1
    except BaseException as error:
        ready.report({"ok": False, "error": f"supervisor failed: {error!r}"})
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
