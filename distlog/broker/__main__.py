"""`python -m distlog.broker`: run one broker process (what the supervisor spawns)."""

from __future__ import annotations

import argparse
import sys

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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    peers = args.peers or {}
    if args.id in peers and peers[args.id] != args.listen and not args.listen.endswith(":0"):
        print(f"error: --peers says broker {args.id} is at {peers[args.id]} but --listen is {args.listen}", file=sys.stderr)
        return 2
    peers.setdefault(args.id, args.listen)
    config = BrokerConfig(args.id, args.data_dir, args.listen, peers, dict(args.config), args.cluster_id)
    try:
        broker = Broker(config)
    except Exception as error:  # port in use, unreadable data dir, bad config: say which and stop
        print(f"error: broker {args.id} could not start: {error}", file=sys.stderr)
        return 1
    broker.install_signal_handlers()
    broker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
