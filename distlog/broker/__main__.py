"""`python -m distlog.broker`: run one broker process (what the supervisor spawns)."""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

from distlog.broker.logs import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LEVELS, LOG_LEVEL_ENV, BrokerLogger
from distlog.broker.server import Broker, BrokerConfig


def parse_peers(text: str) -> dict:
    """"1=tcp://127.0.0.1:9001,2=tcp://127.0.0.1:9002" -> {1: "tcp://...", 2: "tcp://..."}."""
    peers = {}
    for item in filter(None, text.split(",")):
        broker_id, sep, address = item.partition("=")
        if not sep or not broker_id.strip().isdigit() or not address:
            raise argparse.ArgumentTypeError(f"bad peer {item!r}: expected ID=ENDPOINT, e.g. 2=tcp://127.0.0.1:9002")
        peers[int(broker_id)] = address.strip()
    return peers


def parse_config(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"bad config {text!r}: expected KEY=VALUE, e.g. flush.policy=always")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distlog.broker", description="Run one distlog broker.")
    parser.add_argument("--id", type=int, required=True, help="this broker's id (a positive integer)")
    parser.add_argument("--data-dir", required=True, help="directory for this broker's partitions and metadata")
    parser.add_argument("--listen", required=True, help="endpoint to bind, e.g. tcp://127.0.0.1:9092")
    parser.add_argument("--peers", type=parse_peers, default=None,
                        help="every broker of the cluster as ID=ENDPOINT,... (default: just this one)")
    parser.add_argument("--config", type=parse_config, action="append", default=[],
                        help="default topic config KEY=VALUE for every topic (repeatable), e.g. flush.policy=never")
    parser.add_argument("--cluster-id", default="distlog")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: any free port; "
                             "the URL is written to DATA_DIR/metrics-endpoint). Default: off")
    parser.add_argument("--log-level", choices=LEVELS, default=os.environ.get(LOG_LEVEL_ENV, "info"),
                        help=f"the least severe level logged (default info, or ${LOG_LEVEL_ENV})")
    parser.add_argument("--log-file", default=None,
                        help="write the log here, rotated by size (default: stderr, not rotated)")
    parser.add_argument("--log-max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                        help=f"rotate the log file past this size (default {DEFAULT_MAX_BYTES})")
    parser.add_argument("--log-backups", type=int, default=DEFAULT_BACKUPS,
                        help=f"rotated log files kept (default {DEFAULT_BACKUPS})")
    return parser


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Make glibc keep freed heap memory for reuse instead of handing it back to the kernel.

    A broker allocates and frees a batch-sized buffer per produced batch (a received frame, the
    leader's stamped copy). By default glibc returns such memory once 2 MB of it is free at the
    top of the heap, and the next allocation takes new pages from the kernel, which zeroes them:
    on a VM whose host backs memory lazily that was 7 % of a core on the leader (perf:
    clear_page_erms). Keeping up to 64 MB free (and serving buffers up to 32 MB from the heap,
    not mmap) makes the pages go round instead; RSS stays up to 64 MB above what is in use.
    A no-op where glibc is not the C library."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 64 << 20))


def main(argv=None) -> int:
    keep_freed_memory()
    args = build_parser().parse_args(argv)
    peers = args.peers or {}
    if args.id in peers and peers[args.id] != args.listen and not args.listen.endswith(":0"):
        print(f"error: --peers says broker {args.id} is at {peers[args.id]} but --listen is {args.listen}", file=sys.stderr)
        return 2
    peers.setdefault(args.id, args.listen)
    config = BrokerConfig(args.id, args.data_dir, args.listen, peers, dict(args.config), args.cluster_id,
                          metrics_port=args.metrics_port)
    logger = BrokerLogger(args.id, level=args.log_level, path=args.log_file, max_bytes=args.log_max_bytes,
                          backups=args.log_backups)
    try:
        broker = Broker(config, logger)
    except Exception as error:  # port in use, unreadable data dir, bad config: say which and stop
        print(f"error: broker {args.id} could not start: {error}", file=sys.stderr)
        return 1
    broker.install_signal_handlers()
    broker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
