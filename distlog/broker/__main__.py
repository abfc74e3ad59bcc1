"""`python -m distlog.broker`: run one broker process (what the supervisor spawns)."""

from __future__ import annotations

import ctypes
import sys

import click

from distlog.broker.logs import (DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, LEVELS, LOG_BACKUPS_ENV, LOG_LEVEL_ENV,
                                 LOG_MAX_BYTES_ENV, BrokerLogger)
from distlog.broker.backpressure import Limits
from distlog.broker.server import Broker, BrokerConfig


def parse_peers(text: str) -> dict:
    """"1=tcp://127.0.0.1:9001,2=tcp://127.0.0.1:9002" -> {1: "tcp://...", 2: "tcp://..."}."""
    peers = {}
    for item in filter(None, text.split(",")):
        broker_id, sep, address = item.partition("=")
        if not sep or not broker_id.strip().isdigit() or not address:
            raise click.BadParameter(f"bad peer {item!r}: expected ID=ENDPOINT, e.g. 2=tcp://127.0.0.1:9002")
        peers[int(broker_id)] = address.strip()
    return peers


def parse_config(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"bad config {text!r}: expected KEY=VALUE, e.g. flush.policy=always")
    return key, value


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--id", "broker_id", type=click.IntRange(min=1), required=True, help="this broker's id (a positive integer)")
@click.option("--data-dir", required=True, help="directory for this broker's partitions and metadata")
@click.option("--listen", required=True, help="endpoint to bind, e.g. tcp://127.0.0.1:9092")
@click.option("--peers", callback=lambda ctx, param, value: parse_peers(value) if value else None,
              help="every broker of the cluster as ID=ENDPOINT,... (default: just this one)")
@click.option("--config", "configs", multiple=True, callback=lambda ctx, param, values: [parse_config(v) for v in values],
              metavar="KEY=VALUE", help="default topic config for every topic (repeatable), e.g. flush.policy=never")
@click.option("--cluster-id", default="distlog", show_default=True)
@click.option("--log-level", type=click.Choice(LEVELS), default="info", show_default=True, envvar=LOG_LEVEL_ENV,
              show_envvar=True, help="the least severe level logged")
@click.option("--log-file", default=None, help="write the log here, rotated by size (default: stderr, not rotated)")
@click.option("--log-max-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True,
              envvar=LOG_MAX_BYTES_ENV, show_envvar=True, help="rotate the log file past this size")
@click.option("--log-backups", type=click.IntRange(min=0), default=DEFAULT_BACKUPS, show_default=True,
              envvar=LOG_BACKUPS_ENV, show_envvar=True, help="rotated log files kept (broker.log.1 is the newest)")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: any free port; the URL is "
                   "written to DATA_DIR/metrics-endpoint)  [default: off]")
@click.option("--max-parked-per-connection", type=click.IntRange(min=1), default=Limits.parked_per_connection,
              show_default=True, help="produces (acks 1/all) and fetches one connection may have waiting for an "
                                      "answer; more are refused with THROTTLING (retriable)")
@click.option("--max-parked", type=click.IntRange(min=1), default=Limits.parked_total, show_default=True,
              help="produces and fetches waiting for an answer, all connections together")
@click.option("--max-parked-produce-bytes", type=click.IntRange(min=1), default=Limits.parked_produce_bytes,
              show_default=True, help="record bytes of produces waiting for their acknowledgement")
@click.option("--max-unsent-reply-bytes", type=click.IntRange(min=1), default=Limits.unsent_reply_bytes_per_connection,
              show_default=True, help="fetched bytes a client may leave unread before its fetches are refused")
def broker(broker_id, data_dir, listen, peers, configs, cluster_id, log_level, log_file, log_max_bytes, log_backups,
           metrics_port, max_parked_per_connection, max_parked, max_parked_produce_bytes, max_unsent_reply_bytes):
    """Run one distlog broker (what `distlog cluster up` spawns for each broker)."""
    keep_freed_memory()
    peers = peers or {}
    if broker_id in peers and peers[broker_id] != listen and not listen.endswith(":0"):
        click.echo(f"error: --peers says broker {broker_id} is at {peers[broker_id]} but --listen is {listen}", err=True)
        sys.exit(2)
    peers.setdefault(broker_id, listen)
    limits = Limits(max_parked_per_connection, max_parked, max_parked_produce_bytes, max_unsent_reply_bytes)
    config = BrokerConfig(broker_id, data_dir, listen, peers, dict(configs), cluster_id, metrics_port=metrics_port,
                          limits=limits)
    logger = BrokerLogger(broker_id, level=log_level, path=log_file, max_bytes=log_max_bytes, backups=log_backups)
    try:
        server = Broker(config, logger)
    except Exception as error:  # port in use, unreadable data dir, bad config: say which and stop
        click.echo(f"error: broker {broker_id} could not start: {error}", err=True)
        sys.exit(1)
    server.install_signal_handlers()
    server.run()


def main(argv=None, prog_name: str = "python -m distlog.broker") -> int:
    """Run the broker command on argv (default sys.argv[1:]); its exit code (usage errors: 2)."""
    try:
        broker.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as exiting:
        return exiting.code if isinstance(exiting.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
