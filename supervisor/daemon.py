"""The detached supervisor process behind `distlog cluster up --detach`.

The CLI starts `python -m distlog.supervisor.daemon ...` in a new session with its stdio going to
DATA/supervisor.log and passes the write end of a pipe as --ready-fd. This process writes JSON
lines there — {"say": message} for the user while starting, then {"ok": true} once every broker
answers, or {"ok": false, "error": ...} — and closes it, so the CLI returns exactly when the
cluster is ready or has failed.
"""

import argparse
import json
import os
import sys

from distlog.supervisor.backoff import RestartPolicy
from distlog.supervisor.service import run_cluster
from distlog.supervisor.supervisor import ClusterError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distlog.supervisor.daemon")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--brokers", type=int, default=None)
    parser.add_argument("--port-base", type=int, default=None)
    parser.add_argument("--no-restart", action="store_true")
    parser.add_argument("--restart-backoff-s", type=float, default=RestartPolicy.initial_s)
    parser.add_argument("--restart-backoff-max-s", type=float, default=RestartPolicy.max_s)
    parser.add_argument("--ready-timeout-s", type=float, default=30.0)
    parser.add_argument("--ready-fd", type=int, required=True)
    return parser


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
    args = build_parser().parse_args(argv)
    ready = _ReadyPipe(args.ready_fd)
    policy = RestartPolicy(enabled=not args.no_restart, initial_s=args.restart_backoff_s,
                           max_s=args.restart_backoff_max_s)
    try:
        run_cluster(args.data_dir, brokers=args.brokers, port_base=args.port_base, policy=policy,
                    ready_timeout_s=args.ready_timeout_s,
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
