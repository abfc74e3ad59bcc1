"""The `distlog` command line: click commands over the client library and the supervisor.

Every command finds the cluster through --bootstrap (env DISTLOG_BOOTSTRAP) or else the
cluster.json in --data-dir (env DISTLOG_DATA_DIR, default ./.distlog) that `distlog cluster up`
writes. Data goes to stdout, messages to stderr; exit codes are 0 ok, 1 failure, 2 usage,
130 after Ctrl-C.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib
import json
import os
import signal
import sys
import time
from datetime import datetime

import click
from tabulate import tabulate

from distlog import __version__
from distlog.client.bootstrap import DEFAULT_DATA_DIR, ClusterNotFoundError, brokers_in
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from distlog.supervisor import cluster_file
from distlog.chaos.cli import chaos
from distlog.supervisor.cli import cluster



class CliError(click.ClickException):
    """A failure to report on stderr with exit code 1 (usage errors stay click's, exit code 2)."""

    exit_code = 1

    def show(self, file=None):
        click.echo(f"error: {self.format_message()}", err=True)


def resolve_bootstrap(bootstrap: str | None, data_dir: str | None) -> str:
    """--bootstrap wins; otherwise the brokers listed in DATA_DIR/cluster.json."""
    if bootstrap:
        return bootstrap
    try:
        return brokers_in(data_dir or DEFAULT_DATA_DIR)
    except ClusterNotFoundError as error:
        raise CliError(f"{error}; or point at a cluster with --data-dir DIR or --bootstrap HOST:PORT") from None


def cluster_options(command):
    """--bootstrap and --data-dir on a command, resolved into a `bootstrap` argument."""

    @click.option("--bootstrap", envvar="DISTLOG_BOOTSTRAP", show_envvar=True,
                  help="broker endpoint(s), e.g. 127.0.0.1:9092 or tcp://127.0.0.1:9092")
    @click.option("--data-dir", envvar="DISTLOG_DATA_DIR", show_envvar=True, type=click.Path(file_okay=False),
                  help=f"the cluster's data dir holding cluster.json (default ./{DEFAULT_DATA_DIR})")
    @functools.wraps(command)
    def wrapper(*args, bootstrap=None, data_dir=None, **kwargs):
        try:
            return command(*args, bootstrap=resolve_bootstrap(bootstrap, data_dir), **kwargs)
        except DistlogError as error:
            raise CliError(str(error)) from None
        except ValueError as error:
            raise CliError(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distlog")
def main():
    """distlog: a Kafka-style distributed, partitioned, replicated log.

    Environment: DISTLOG_BOOTSTRAP (brokers to talk to, like --bootstrap), DISTLOG_DATA_DIR (a
    local cluster's data dir, like --data-dir), DISTLOG_LOG_LEVEL (the brokers' log level)."""


# ------------------------------------------------------------------------------------ topics


@main.group()
def topic():
    """Create, list, describe and delete topics."""


def parse_configs(ctx, param, values) -> dict:
    configs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. retention.ms=60000)")
        configs[key] = value
    return configs


@topic.command("create")
@click.argument("name")
@click.option("--partitions", "-p", type=click.IntRange(min=1), default=1, show_default=True,
              help="how many partitions: the unit of parallelism (records with one key stay in one)")
@click.option("--replication-factor", "-r", type=click.IntRange(min=1), default=1, show_default=True,
              help="copies of each partition, on as many brokers (at most the cluster's size); each "
                   "partition is a Raft group over them: 3 survives one broker down")
@click.option("--config", "-c", "configs", multiple=True, callback=parse_configs, metavar="KEY=VALUE",
              help="topic config, repeatable: segment.bytes, segment.ms, retention.ms, retention.bytes, "
                   "cleanup.policy, delete.retention.ms, max.message.bytes, flush.policy")
@cluster_options
def topic_create(name, partitions, replication_factor, configs, bootstrap):
    """Create topic NAME."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=15) as admin:
        admin.create_topic(name, partitions, replication_factor, configs)
    click.echo(f"created topic '{name}' with {partitions} partition(s), replication factor {replication_factor}", err=True)


@topic.command("list")
@click.option("--json", "as_json", is_flag=True,
              help='print JSON: [{"name", "partitions", "replication_factor"}, ...]')
@cluster_options
def topic_list(as_json, bootstrap):
    """List topics (with --json: their partition counts and replication factors too)."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=10) as admin:
        names = admin.list_topics()
        topics = [admin.cluster.topics[name] for name in names]  # what list_topics() just looked up
    if as_json:
        click.echo(json.dumps([{"name": t.name, "partitions": len(t.leaders), "replication_factor": len(t.replicas[0])
                                if t.replicas else 0} for t in topics]))
    else:
        for name in names:
            click.echo(name)


@topic.command("alter-config")
@click.argument("name")
@click.option("--set", "set_configs", multiple=True, callback=parse_configs, metavar="KEY=VALUE",
              help="give a config this value (repeatable)")
@click.option("--delete", "delete", multiple=True, metavar="KEY",
              help="return a config to the broker default (repeatable)")
@cluster_options
def topic_alter_config(name, set_configs, delete, bootstrap):
    """Change topic NAME's configs; the others stay as they are."""
    from distlog.client import Admin

    if not set_configs and not delete:
        raise click.UsageError("give at least one --set KEY=VALUE or --delete KEY")
    both = set(set_configs) & set(delete)
    if both:
        raise click.UsageError(f"{', '.join(sorted(both))}: --set and --delete of the same key")
    with Admin(bootstrap, request_timeout_s=15) as admin:
        admin.alter_topic_config(name, dict(set_configs), list(delete))
    changes = [f"{k}={v}" for k, v in sorted(set_configs.items())] + [f"{k} (default)" for k in sorted(delete)]
    click.echo(f"altered topic '{name}': {', '.join(changes)}", err=True)


@topic.command("add-partitions")
@click.argument("name")
@click.argument("count", type=click.IntRange(min=1))
@cluster_options
def topic_add_partitions(name, count, bootstrap):
    """Add COUNT partitions to topic NAME (as rpk's add-partitions; a topic never shrinks).
    Keyed records pick partitions by the count, so some keys move to new partitions."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=15) as admin:
        current = len(admin.describe_topic(name)["partitions"])
        admin.create_partitions(name, current + count)
    click.echo(f"topic '{name}' now has {current + count} partitions ({count} added)", err=True)


def parse_broker_list(ctx, param, value: str) -> list:
    try:
        brokers = [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of broker ids (e.g. 1,2,4)") from None
    if not brokers:
        raise click.BadParameter("name at least one broker id (e.g. 1,2,4)")
    return brokers


@topic.command("reassign")
@click.argument("name")
@click.option("--partition", "-p", type=click.IntRange(min=0), required=True, help="the partition to move")
@click.option("--replicas", callback=parse_broker_list, required=True,
              help="broker ids the partition is to live on, the preferred leader first (e.g. 1,2,4)")
@click.option("--wait/--no-wait", default=True, show_default=True, help="wait until the move is done")
@click.option("--timeout-s", type=click.FloatRange(min=0), default=120.0, show_default=True,
              help="with --wait: give up (exit 1) after this long; the move goes on")
@cluster_options
def topic_reassign(name, partition, replicas, wait, timeout_s, bootstrap):
    """Move a partition of topic NAME to other brokers while it keeps taking writes.

    The partition's Raft group changes one server at a time: each new replica joins as a
    learner, catches up, becomes a voter; then each old replica leaves. One move at a time per
    partition: a second one is refused until the first is done."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=15) as admin:
        before = admin.describe_topic(name)["partitions"]
        if partition >= len(before):
            raise CliError(f"topic '{name}' has partitions 0..{len(before) - 1}, not {partition}")
        admin.reassign_partition(name, partition, replicas)
        click.echo(f"moving {name}/{partition} from {_brokers(before[partition]['replicas'])} to {_brokers(replicas)}", err=True)
        if not wait:
            return
        deadline_s = time.monotonic() + timeout_s
        while (info := admin.describe_topic(name)["partitions"][partition])["target_replicas"] is not None:
            if time.monotonic() >= deadline_s:
                raise CliError(f"{name}/{partition} is still moving after {timeout_s:g} s (replicas "
                               f"{_brokers(info['replicas'])}); it goes on: watch it with `distlog topic describe {name}`")
            time.sleep(0.2)  # polling a condition: each membership change takes a few hundred ms
    click.echo(f"{name}/{partition} now lives on {_brokers(info['replicas'])} (leader {_or_dash(info['leader'])})", err=True)


def _brokers(ids) -> str:
    return ",".join(map(str, ids))


@topic.command("delete")
@click.argument("name")
@cluster_options
def topic_delete(name, bootstrap):
    """Delete topic NAME and all its data."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=15) as admin:
        admin.delete_topic(name)
    click.echo(f"deleted topic '{name}'", err=True)


@topic.command("describe")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON (a list of topics when NAME is left out)")
@cluster_options
def topic_describe(name, as_json, bootstrap):
    """Show partitions, leaders, replicas and offsets of topic NAME, or of every topic."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=10) as admin:
        names = [name] if name is not None else admin.list_topics()
        descriptions = [admin.describe_topic(n) for n in names]
    if as_json:
        click.echo(json.dumps(descriptions[0] if name is not None else descriptions))
        return
    for index, description in enumerate(descriptions):
        if index:
            click.echo()
        _print_description(description)
    if not descriptions:
        click.echo("no topics (create one with `distlog topic create NAME`)", err=True)


@topic.command("verify")
@click.argument("name")
@click.option("--partition", type=click.IntRange(min=0), help="verify only this partition")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--data-dir", envvar="DISTLOG_DATA_DIR", show_envvar=True, type=click.Path(file_okay=False),
              help=f"the cluster's data dir holding cluster.json (default ./{DEFAULT_DATA_DIR})")
def topic_verify(name, partition, as_json, data_dir):
    """Check every replica of topic NAME on disk: each batch's CRC, the offsets continuous,
    damage not yet repaired, and the committed ranges of the replicas identical. Reads the
    brokers' files (so it needs the cluster's data dir on this host) and changes nothing.
    Exits 1 if anything is damaged or the replicas differ."""
    from distlog.log.verify import verify_topic

    data_dir = data_dir or DEFAULT_DATA_DIR
    try:
        record = cluster_file.load(data_dir)
    except cluster_file.ClusterFileError as error:
        raise CliError(f"{error} (topic verify reads the brokers' files: point --data-dir at the cluster)") from None
    reports = verify_topic({b["id"]: b["data_dir"] for b in record.get("brokers", [])}, name, partition,
                           high_watermarks=_committed_offsets(data_dir, name))
    if not reports:
        which = f"partition {partition} of '{name}'" if partition is not None else f"topic '{name}'"
        raise CliError(f"no broker in {data_dir} holds a replica of {which} (`distlog topic list` names the topics)")
    if as_json:
        click.echo(json.dumps({"topic": name, "partitions": reports, "ok": all(r["ok"] for r in reports)}))
    else:
        rows = [(r["partition"], replica["broker"], _or_dash(replica["log_start_offset"]),
                 _or_dash(replica["log_end_offset"]), _or_dash(replica["commit"]), replica["batches"],
                 "; ".join(f"at offset {p['offset']}: {p['problem']}" for p in replica["problems"]) or "ok")
                for r in reports for replica in r["replicas"]]
        click.echo(tabulate(rows, headers=["PARTITION", "REPLICA", "LOG-START-OFFSET", "LOG-END-OFFSET", "COMMIT",
                                           "BATCHES", "STATUS"]))
        for report in reports:
            for line in report["divergence"]:
                click.echo(f"partition {report['partition']}: {line}", err=True)
    bad = [r["partition"] for r in reports if not r["ok"]]
    if bad:
        click.echo(f"{len(bad)} of {len(reports)} partitions have damage or diverging replicas: "
                   f"{', '.join(map(str, bad))}", err=True)
        sys.exit(1)


def _committed_offsets(data_dir: str, topic: str) -> dict:
    """partition -> last committed offset, as the running cluster reports it; empty if it does
    not answer (verify then compares what the brokers last recorded)."""
    from distlog.client import Admin

    try:
        with Admin(resolve_bootstrap(None, data_dir), request_timeout_s=2) as admin:
            partitions = admin.describe_topic(topic)["partitions"]
    except (DistlogError, CliError, OSError):
        click.echo("the cluster does not answer: comparing the commit indexes the brokers recorded", err=True)
        return {}
    return {p["partition"]: p["high_watermark"] - 1 for p in partitions if (p["high_watermark"] or 0) > 0}


def _print_description(description: dict) -> None:
    name = description["name"]
    partitions = description["partitions"]
    summary = [
        ("NAME", name),
        ("PARTITIONS", len(partitions)),
        ("REPLICAS", len(partitions[0]["replicas"]) if partitions else 0),
        ("CONFIGS", ", ".join(f"{k}={v}" for k, v in sorted(description["configs"].items())) or "(defaults)"),
    ]
    click.echo(tabulate(summary, tablefmt="plain"))
    click.echo()
    rows = [
        (p["partition"], _or_dash(p["leader"]), _or_dash(p["leader_epoch"]),
         _brokers(p["replicas"]) + (f" -> {_brokers(p['target_replicas'])}" if p.get("target_replicas") else ""),
         ",".join(map(str, p["in_sync"])) or "-", _or_dash(p["log_start_offset"]), _or_dash(p["high_watermark"]),
         _or_dash(p["log_end_offset"]), p["status"].upper())
        for p in partitions
    ]
    click.echo(tabulate(rows, headers=["PARTITION", "LEADER", "EPOCH", "REPLICAS", "IN-SYNC", "LOG-START-OFFSET",
                                       "HIGH-WATERMARK", "LOG-END-OFFSET", "STATUS"]))
    troubled = [p for p in partitions if p["status"] != "ok"]
    if troubled:
        click.echo(f"\n{len(troubled)} of {len(partitions)} partitions are under-replicated or offline "
                   "(a replica broker is down or behind; `distlog cluster status` shows the brokers)", err=True)


def _or_dash(value):
    return "-" if value is None else value


# ------------------------------------------------------------------------- produce / consume


# The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--key", "-k", help="the key of every record")
@click.option("--key-separator", help="split each line at the first SEP into key and value; a line without "
                                      "SEP stops the command (as Kafka's console producer does)")
@click.option("--partition", "-p", type=click.IntRange(min=0), help="send every record to this partition (kcat's and rpk's -p)")
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME=VALUE",
              callback=lambda ctx, param, value: _parse_headers(value),
              help="a header on every record (repeatable), as kcat's -H")
@click.option("--acks", type=click.Choice(["all", "1", "0"]), default="all", show_default=True,
              help="all: committed by a majority of the partition's replicas (survives any minority of "
                   "failures; idempotent, retries never duplicate). 1: on the leader's disk only (a failover "
                   "can lose it). 0: no acknowledgement at all.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="seconds to wait for the acknowledgements")
@cluster_options
def produce(topic_name, key, key_separator, partition, headers, acks, timeout, bootstrap):
    """Produce records read from stdin, one per line.

    Memory stays bounded on endless input (`tail -f log | distlog produce T`): records are
    counted as they are acknowledged, not kept. Ctrl-C sends what was read, says how many
    records were written and exits 130."""
    from distlog.client import Producer

    if key is not None and key_separator is not None:
        raise click.UsageError("give --key or --key-separator, not both")
    # buffer_memory as Kafka's console producer has it (32 MB): what endless input may hold.
    producer = Producer(bootstrap, acks=acks, linger_ms=5, max_block_ms=timeout * 1000, buffer_memory=32 * 1024 * 1024,
                        request_timeout_ms=timeout * 1000, delivery_timeout_ms=timeout * 1000)
    delivery = _DeliveryCount()
    bad_line, interrupted = None, False
    try:
        try:
            for number, line in enumerate(sys.stdin, 1):
                line = line.rstrip("\n")
                record_key = key
                if key_separator is not None:
                    record_key, sep, line = line.partition(key_separator)
                    if not sep:
                        bad_line = number
                        break
                producer.send(topic_name, line.encode(), key=record_key.encode() if record_key is not None else None,
                              partition=partition, headers=headers, callback=delivery)
                delivery.sent += 1
        except KeyboardInterrupt:
            interrupted = True
        try:
            producer.flush(timeout)
        except KeyboardInterrupt:
            interrupted = True
    finally:
        producer.close(timeout)
    failed = delivery.sent - delivery.acknowledged
    click.echo(("interrupted: " if interrupted else "")
               + f"produced {delivery.acknowledged} record(s) to '{topic_name}'" + (f", {failed} failed" if failed else ""),
               err=True)
    if bad_line is not None:
        raise CliError(f"line {bad_line} has no key separator {key_separator!r}; the lines before it were sent, "
                       "it and the rest were not (give every line a key, or leave out --key-separator)")
    if failed:
        raise CliError(f"{failed} record(s) were not acknowledged: {delivery.first_error}")
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _parse_headers(values) -> list:
    pairs = []
    for value in values:
        name, sep, data = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="'--header' / '-H'")
        pairs.append((name, data.encode()))
    return pairs


class _DeliveryCount:
    """The produce command's delivery callback: counts, so nothing per record is kept. Called on
    the producer's sender thread only; read once the producer is flushed and closed."""

    def __init__(self):
        self.sent = 0
        self.acknowledged = 0
        self.first_error = None

    def __call__(self, error, _metadata) -> None:
        if error is None:
            self.acknowledged += 1
        elif self.first_error is None:
            self.first_error = error


@main.command()
@click.argument("topic_name", metavar="TOPIC")
@click.option("--from-beginning", is_flag=True, help="start at the earliest offset (the same as -o start)")
@click.option("--partition", "-p", type=click.IntRange(min=0), help="read only this partition")
@click.option("--offset", "-o", "offset", callback=lambda ctx, param, value: _parse_offset_spec(value), metavar="SPEC",
              help="where to start, as in kcat: start, end (the default: only new records), N (an offset; "
                   "needs --partition), -N (N records before the end of each partition), @TIMESTAMP_MS, "
                   "or @-DURATION (e.g. @-10m: records from the last ten minutes; s, m, h, d)")
@click.option("--max-records", type=click.IntRange(min=1), help="exit after this many records")
@click.option("--timeout", type=click.FloatRange(min=0), help="exit after this many seconds without a record")
@click.option("--format", "output_format", default="plain", show_default=True,
              callback=lambda ctx, param, value: _check_format(ctx, param, value),
              help="plain: the value alone; json: one object per record with topic, partition, offset, key, "
                   "value, headers, timestamp; or a format string as in kcat/rpk: %k key, %v value, %p partition, "
                   "%o offset, %t timestamp (ms), %h headers (name=value,...), %T topic, %% a percent sign, "
                   "\\n and \\t (a newline is added unless the string has one)")
@click.option("--print-keys", is_flag=True, help="plain format: print KEY<TAB>VALUE (Kafka's print.key)")
@click.option("--encoding", type=click.Choice(["utf8", "base64", "hex"]), default="utf8", show_default=True,
              help="how keys and values are printed: utf8 text, or base64/hex to see binary data byte for byte")
@click.option("--group", "-g", "group_id", metavar="GROUP",
              help="read as a member of consumer group GROUP: share TOPIC's partitions with its other members, "
                   "start where the group got to (--from-beginning: where it has no committed offset) and "
                   "commit what was printed on exit")
@cluster_options
def consume(topic_name, from_beginning, partition, offset, max_records, timeout, output_format, print_keys, encoding,
            group_id, bootstrap):
    """Print records of TOPIC, one per line.

    With --group, the group's committed offsets move past exactly the records printed: on
    --max-records, --timeout, Ctrl-C, and when the group hands a partition to another member.
    Ctrl-C says how many records were read and exits 130; a closed pipe (`| head -1`) ends
    the command quietly."""
    from distlog.client import Consumer

    if group_id is not None and (partition is not None or offset is not None):
        raise click.UsageError("--group reads the partitions the group assigns, from its committed offsets: "
                               "leave out --partition and --offset (--from-beginning applies where the group "
                               "has committed nothing)")
    if isinstance(offset, int) and offset >= 0 and partition is None:
        raise click.UsageError("an offset N needs --partition (partitions number their records apart); "
                               "-o start, end, -N or @TIME apply to every partition")
    if offset is not None and from_beginning:
        raise click.UsageError("give --offset or --from-beginning, not both")
    if print_keys and output_format != "plain":
        raise click.UsageError("--print-keys is for the plain format (json has the key; a format string has %k)")
    if from_beginning:
        offset = "start"
    # An offset N outside the partition is an error to report, not a cue to jump elsewhere.
    reset = "none" if isinstance(offset, int) and offset >= 0 else "earliest" if offset == "start" else "latest"
    # Auto-commit would commit what poll() returned; the command commits what it printed.
    consumer = Consumer(bootstrap, group_id, auto_offset_reset=reset, fetch_max_wait_ms=200,
                        enable_auto_commit=False, client_id="distlog-cli")
    progress = _PrintedProgress(consumer) if group_id is not None else None
    printed, interrupted = 0, False
    ctrl_c_deferred = _CtrlCDeferred()
    warned = []

    def warn_once(record):
        if not warned:
            warned.append(True)
            click.echo(f"warning: {record.topic}-{record.partition} offset {record.offset} is not UTF-8 text and "
                       "prints with replacement characters; --encoding base64 or hex shows its bytes", err=True)

    ctrl_c_deferred.install()
    try:
        # Within --timeout too (a second at least, so --timeout 0 still finds the topic).
        numbers = consumer.partitions_for_topic(topic_name, None if timeout is None else max(timeout, 1.0))
        partitions = [(topic_name, partition)] if partition is not None else [(topic_name, p) for p in numbers]
        if progress is not None:
            consumer.subscribe([topic_name], on_revoke=progress.commit, on_lost=progress.forget)
        else:
            consumer.assign(partitions)
            _seek(consumer, partitions, offset)
        last_record_s = time.monotonic()
        while max_records is None or printed < max_records:
            # poll() keeps its timeout whatever a broker does, so --timeout holds to within a poll
            wait_s = 0.2 if timeout is None else max(0.0, min(0.2, last_record_s + timeout - time.monotonic()))
            try:
                records = consumer.poll(timeout=wait_s, max_records=None if max_records is None else max_records - printed)
            except DistlogError as error:
                if reset == "none" and error.code == ErrorCode.OFFSET_OUT_OF_RANGE:
                    raise CliError(_outside_message(consumer, (topic_name, partition), offset)) from None
                raise
            if not records:
                if timeout is not None and time.monotonic() - last_record_s >= timeout:
                    break
                continue
            last_record_s = time.monotonic()
            with ctrl_c_deferred:  # a Ctrl-C between a line's write and its count would miscount
                for record in records[: None if max_records is None else max_records - printed]:
                    click.echo(_format_record(record, "keyed" if print_keys else output_format, encoding, warn_once),
                               nl=False)
                    printed += 1
                    if progress is not None:
                        progress.printed(record)
            if progress is not None:
                progress.commit_every(GROUP_COMMIT_INTERVAL_S)
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be printed, and Python's own flush
        # of stdout at exit must not fail loudly either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        ctrl_c_deferred.uninstall()
        try:
            if progress is not None:
                progress.commit()
        finally:
            consumer.close()
    click.echo(("interrupted: " if interrupted else "") + f"consumed {printed} record(s) from '{topic_name}'", err=True)
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)


def _outside_message(consumer, tp, offset: int) -> str:
    """The one thing to say about an -o N the partition does not hold: the range it does hold."""
    start, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
    holds = f"holds offsets {start}..{end - 1}" if end > start else f"holds no records (the next one is offset {end})"
    return (f"offset {offset} is outside {tp[0]}-{tp[1]}, which {holds}; "
            f"give an offset in {start}..{end}, -o start or -o end")


# How often `consume --group` commits what it printed while it runs (Kafka's auto-commit interval).
GROUP_COMMIT_INTERVAL_S = 5.0


class _PrintedProgress:
    """What `consume --group` printed: the position after the last printed record of each
    partition it reads, committed as asked (on_revoke, periodically, on exit)."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.positions = {}  # (topic, partition) -> the offset after the last record printed
        self.committed = {}
        self.last_commit_s = time.monotonic()

    def printed(self, record) -> None:
        self.positions[(record.topic, record.partition)] = record.offset + 1

    def commit(self, partitions=None) -> None:
        """Commit the printed positions of `partitions` (default all); revoked ones are then forgotten."""
        chosen = self.positions if partitions is None else {tp: self.positions[tp] for tp in partitions
                                                            if tp in self.positions}
        due = {tp: offset for tp, offset in chosen.items() if self.committed.get(tp) != offset}
        self.last_commit_s = time.monotonic()
        if due:
            self.consumer.commit(due, timeout=5.0)
            self.committed.update(due)
        if partitions is not None:
            self.forget(partitions)

    def forget(self, partitions) -> None:
        """The partitions are another member's now (revoked, or lost): commit nothing more of them."""
        for tp in partitions:
            self.positions.pop(tp, None)
            self.committed.pop(tp, None)

    def commit_every(self, interval_s: float) -> None:
        if time.monotonic() - self.last_commit_s >= interval_s:
            self.commit()


_DURATION_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _parse_offset_spec(value):
    """-o SPEC -> "start" | "end" | N (>= 0) | -N (< 0: before the end) | ("time", ms) | None."""
    if value is None:
        return None
    text = value.strip()
    if text in ("start", "beginning", "earliest"):
        return "start"
    if text in ("end", "latest"):
        return "end"
    if text.startswith("@-"):
        amount, unit = text[2:-1], text[-1:]
        if amount.isdigit() and unit in _DURATION_UNITS_MS:
            return ("time", int(time.time() * 1000) - int(amount) * _DURATION_UNITS_MS[unit])
    elif text.startswith("@"):
        if text[1:].isdigit():
            return ("time", int(text[1:]))
    else:
        try:
            return int(text)
        except ValueError:
            pass
    raise click.BadParameter(f"{value!r} is not start, end, N, -N, @TIMESTAMP_MS or @-DURATION (like @-10m)",
                             param_hint="'--offset' / '-o'")


def _seek(consumer, partitions, offset) -> None:
    """Put every assigned partition where -o says (default: the end, only new records)."""
    if offset is None or offset == "end":
        consumer.seek_to_end()
    elif offset == "start":
        consumer.seek_to_beginning()
    elif isinstance(offset, int) and offset >= 0:
        consumer.seek(partitions[0], offset)
    elif isinstance(offset, int):  # -N: the last N records of each partition (or all it has)
        starts, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        for tp in partitions:  # (a TopicPartition key equals its plain tuple)
            consumer.seek(tp, max(starts[tp], ends[tp] + offset))
    else:  # ("time", ms): the first record at or after it, or only new records where none is
        found = consumer.offsets_for_times({tp: offset[1] for tp in partitions})
        for tp in partitions:
            position = found[tp]
            if position is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, position)


def _check_format(ctx, param, value: str) -> str:
    if value in ("plain", "json") or "%" in value:
        return value
    raise click.BadParameter(f"{value!r} is neither plain, json nor a format string with % directives "
                             "(like '%k %v')")


def _text(data, encoding: str, on_mangled):
    """Key or value as printed: None stays None (null in JSON)."""
    if data is None:
        return None
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    if encoding == "hex":
        return data.hex()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        on_mangled()
        return data.decode("utf-8", errors="replace")


class _CtrlCDeferred:
    """Ctrl-C raises KeyboardInterrupt as usual, except inside `with deferred:`, where it waits
    for the block's end.

    Python raises KeyboardInterrupt between any two bytecodes, so "print a line, count it" can
    be cut in between: the line is out and not counted. Masking SIGINT in the main thread is not
    enough: another thread (numpy's OpenBLAS workers block no signal) may take the signal, and
    Python then raises it in the main thread anyway. A handler of our own decides instead."""

    def __init__(self):
        self.inside = False
        self.pending = False
        self._previous = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame):
        if self.inside:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self):
        self.inside = True
        return self

    def __exit__(self, *exc_info):
        self.inside = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _format_record(record, output_format: str, encoding: str = "utf8", warn=lambda record: None) -> str:
    """One record as the consume command prints it, its newline included."""
    def text(data):
        return _text(data, encoding, lambda: warn(record))

    if output_format == "json":
        return json.dumps({"topic": record.topic, "partition": record.partition, "offset": record.offset,
                           "key": text(record.key), "value": text(record.value),
                           "headers": [{"key": name, "value": text(value)} for name, value in record.headers],
                           "timestamp": record.timestamp_ms}) + "\n"
    if output_format == "plain":
        return (text(record.value) or "") + "\n"
    if output_format == "keyed":
        return f"{text(record.key) or ''}\t{text(record.value) or ''}\n"
    fields = {"k": lambda: text(record.key) or "", "v": lambda: text(record.value) or "",
              "p": lambda: str(record.partition), "o": lambda: str(record.offset),
              "t": lambda: str(record.timestamp_ms), "T": lambda: record.topic, "%": lambda: "%",
              "h": lambda: ",".join(f"{name}={text(value) or ''}" for name, value in record.headers)}
    out, i = [], 0
    spec = output_format.replace("\\n", "\n").replace("\\t", "\t")
    while i < len(spec):
        char = spec[i]
        if char == "%" and i + 1 < len(spec) and spec[i + 1] in fields:
            out.append(fields[spec[i + 1]]())
            i += 2
        else:
            out.append(char)
            i += 1
    line = "".join(out)
    return line if "\n" in spec else line + "\n"


# ---------------------------------------------------------------------------- consumer groups


@main.group()
def group():
    """List, describe, reset the offsets of, and delete consumer groups."""


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help='print JSON: [{"group_id", "state", "members", "coordinator"}]')
@cluster_options
def group_list(as_json, bootstrap):
    """List consumer groups, with their state, member count and coordinator broker."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=10) as admin:
        groups = admin.list_groups()
    if as_json:
        click.echo(json.dumps(groups))
    elif groups:
        click.echo(tabulate([(g["group_id"], g["state"], g["members"], g["coordinator"]) for g in groups],
                            headers=["GROUP", "STATE", "MEMBERS", "COORDINATOR"]))
    else:
        click.echo("no consumer groups (a consumer makes one: `distlog consume TOPIC --group NAME`)", err=True)


@group.command("describe")
@click.argument("group_id", metavar="GROUP")
@click.option("--json", "as_json", is_flag=True,
              help='print JSON: {"group", "state", "coordinator", "members", "partitions": [{"topic", "partition", '
                   '"committed_offset", "log_end_offset", "lag", "member_id"}], "total_lag"}')
@cluster_options
def group_describe(group_id, as_json, bootstrap):
    """Show GROUP's state, members, and per partition its committed offset, log end and lag."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=10) as admin:
        description = admin.describe_group(group_id)
        partitions = _group_partitions(admin, description, admin.group_offsets(group_id))
    total_lag = sum(p["lag"] for p in partitions if p["lag"] is not None)
    if as_json:
        click.echo(json.dumps({"group": group_id, "state": description["state"],
                               "coordinator": description["coordinator"],
                               "members": [{**m, "assignment": [list(tp) for tp in m["assignment"]]}
                                           for m in description["members"]],
                               "partitions": [{k: v for k, v in p.items() if k != "client_id"} for p in partitions],
                               "total_lag": total_lag}))
        return
    summary = [("GROUP", group_id), ("COORDINATOR", _or_dash(description["coordinator"])),
               ("STATE", description["state"]), ("MEMBERS", len(description["members"])), ("TOTAL-LAG", total_lag)]
    click.echo(tabulate(summary, tablefmt="plain"))
    click.echo()
    rows = [(p["topic"], p["partition"], _or_dash(p["committed_offset"]), _or_dash(p["log_end_offset"]),
             _or_dash(p["lag"]), _or_dash(p["member_id"]), _or_dash(p["client_id"])) for p in partitions]
    click.echo(tabulate(rows, headers=["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER-ID",
                                       "CLIENT-ID"]))


def _group_partitions(admin, description: dict, committed: dict) -> list:
    """A row per partition of every topic the group committed offsets for or its members
    subscribe to: committed offset, log end (high watermark), lag and owner, None where unknown."""
    owners = {tp: member for member in description["members"] for tp in member["assignment"]}
    topics = {tp[0] for tp in committed} | {t for m in description["members"] for t in m["subscribed_topics"]}
    partitions = set(committed)
    for topic_name in topics:
        try:
            partitions |= {(topic_name, p) for p in range(admin.cluster.topic(topic_name).partition_count)}
        except DistlogError:
            pass  # deleted, or not created yet: its committed partitions alone
    ends = admin.list_offsets({tp: LATEST_TIMESTAMP for tp in partitions if tp[0] in admin.cluster.topics},
                              missing_ok=True)
    rows = []
    for tp in sorted(partitions):
        offset, end, owner = committed.get(tp), ends.get(tp), owners.get(tp)
        rows.append({"topic": tp[0], "partition": tp[1], "committed_offset": offset, "log_end_offset": end,
                     "lag": max(0, end - offset) if offset is not None and end is not None else None,
                     "member_id": owner["member_id"] if owner else None,
                     "client_id": owner["client_id"] if owner else None})
    return rows


@group.command("reset-offsets")
@click.argument("group_id", metavar="GROUP")
@click.option("--topic", "topic_name", required=True, help="the topic whose partitions' offsets to reset")
@click.option("--to-earliest", is_flag=True, help="to each partition's log start")
@click.option("--to-latest", is_flag=True, help="to each partition's log end (skip everything there is now)")
@click.option("--to-offset", type=click.IntRange(min=0), help="to this offset (kept within each partition's range)")
@click.option("--to-datetime", metavar="ISO8601",
              help="to the first record at or after this time, e.g. 2024-05-01T12:00:00Z (no zone: local time); "
                   "the log end where no record is that new")
@click.option("--execute", is_flag=True, help="apply the plan (without it, only print it)")
@cluster_options
def group_reset_offsets(group_id, topic_name, to_earliest, to_latest, to_offset, to_datetime, execute, bootstrap):
    """Print, and with --execute apply, new committed offsets of GROUP for TOPIC's partitions.
    The group must have no members (stop its consumers first), as in Kafka."""
    from distlog.client import Admin

    chosen = [name for name, value in (("--to-earliest", to_earliest), ("--to-latest", to_latest),
                                       ("--to-offset", to_offset is not None), ("--to-datetime", to_datetime)) if value]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-earliest, --to-latest, --to-offset N, --to-datetime ISO8601"
                               + (f" (got {', '.join(chosen)})" if chosen else ""))
    timestamp_ms = _parse_datetime_ms(to_datetime) if to_datetime else None
    with Admin(bootstrap, request_timeout_s=10) as admin:
        members = _group_members(admin, group_id)
        if members:
            raise CliError(f"group '{group_id}' has {members} member(s); offsets can only be reset while it has none "
                           f"(stop its consumers first; `distlog group describe {group_id}` lists them)")
        tps = [(topic_name, p) for p in range(admin.cluster.topic(topic_name).partition_count)]
        current = admin.group_offsets(group_id)
        starts = admin.list_offsets({tp: EARLIEST_TIMESTAMP for tp in tps})
        ends = admin.list_offsets({tp: LATEST_TIMESTAMP for tp in tps})
        if to_earliest:
            plan = starts
        elif to_latest:
            plan = ends
        elif to_offset is not None:
            plan = {tp: min(max(to_offset, starts[tp]), ends[tp]) for tp in tps}
        else:
            found = admin.list_offsets({tp: timestamp_ms for tp in tps})
            plan = {tp: ends[tp] if found[tp] < 0 else found[tp] for tp in tps}
        click.echo(tabulate([(t, p, _or_dash(current.get((t, p))), plan[(t, p)]) for t, p in tps],
                            headers=["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]))
        if not execute:
            click.echo("dry run: nothing changed (add --execute to apply)", err=True)
            return
        admin.alter_group_offsets(group_id, {tp: plan[tp] for tp in tps})
    click.echo(f"reset the offsets of group '{group_id}' for {len(tps)} partition(s) of '{topic_name}'", err=True)


def _group_members(admin, group_id: str) -> int:
    """How many members the group has; 0 for a group not known yet (resetting creates it)."""
    try:
        return len(admin.describe_group(group_id)["members"])
    except DistlogError as error:
        if error.code == ErrorCode.GROUP_ID_NOT_FOUND:
            return 0
        raise


def _parse_datetime_ms(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time such as 2024-05-01T12:00:00Z",
                                 param_hint="'--to-datetime'") from None
    return int(moment.timestamp() * 1000)  # a time without a zone is local, as Kafka's tool takes it


@group.command("delete")
@click.argument("group_id", metavar="GROUP")
@cluster_options
def group_delete(group_id, bootstrap):
    """Delete GROUP and its committed offsets (it must have no members)."""
    from distlog.client import Admin

    with Admin(bootstrap, request_timeout_s=10) as admin:
        admin.delete_group(group_id)
    click.echo(f"deleted group '{group_id}'", err=True)


# `distlog broker` and `distlog sim` hand their arguments to the real commands, imported only
# when run (the broker pulls in the whole server, which every other command can do without).
_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@main.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def broker(args):
    """Run one broker process (what `cluster up` spawns); `distlog broker --help` lists its options."""
    from distlog.broker.__main__ import main as broker_main

    sys.exit(broker_main(list(args), prog_name="distlog broker"))


@main.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sim(args):
    """Run the seeded Raft simulator; `distlog sim --help` lists its options."""
    from distlog.consensus.sim import main as sim_main

    sys.exit(sim_main(list(args), prog_name="distlog sim"))


class _BenchmarkGroup(click.Group):
    """The benchmark commands, imported only when one is named (each pulls in numpy and the broker)."""

    BENCHMARKS = ("storage", "produce", "failover", "idle", "compare")

    def list_commands(self, ctx):
        return list(self.BENCHMARKS)

    def get_command(self, ctx, name):
        if name not in self.BENCHMARKS:
            return None
        return importlib.import_module(f"distlog.bench.{name}").main


@main.group(cls=_BenchmarkGroup)
def bench():
    """Benchmarks that start what they need, check what they read back and print JSON
    (the same as `python bench/NAME.py`; the README's numbers come from them)."""


# -------------------------------------------------------------------------------------- perf


# The client library's defaults, so a perf run measures what an application gets.
PERF_LINGER_MS = 5.0
PERF_FETCH_MAX_WAIT_MS = 500


@main.group()
def perf():
    """Load a running cluster and measure it, as Kafka's producer/consumer perf tools do.

    A progress line goes to stderr every --reporting-interval seconds; the summary goes to
    stdout (one JSON object with --json)."""


def _perf_common(command):
    command = click.option("--topic", "topic_name", required=True, help="the topic to use (it must exist)")(command)
    command = click.option("--num-records", type=click.IntRange(min=1), required=True,
                           help="how many records")(command)
    command = click.option("--reporting-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                           help="seconds between progress lines")(command)
    command = click.option("--json", "as_json", is_flag=True,
                           help="print the summary as one JSON object: records, elapsed_s, records_per_s, "
                                "mb_per_s, latency_ms {avg,p50,p95,p99,p99_9,max}, failures")(command)
    return command


def _perf_errors(topic_name: str):
    """Turns a missing topic or an unreachable cluster into a message that says what to do."""
    from distlog.client.errors import RequestTimedOutError

    @contextlib.contextmanager
    def translated():
        try:
            yield
        except RequestTimedOutError as error:
            raise CliError(f"{error}; no cluster answered (start one with `distlog cluster up`, or point "
                           "--bootstrap / --data-dir at one)") from None
        except DistlogError as error:
            if error.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise CliError(f"topic '{topic_name}' does not exist (create it with "
                               f"`distlog topic create {topic_name}`)") from None
            raise
    return translated()


def _perf_producer(bootstrap, acks, linger_ms, batch_size, max_in_flight, timeout):
    from distlog.client import Producer

    return Producer(bootstrap, acks=acks, linger_ms=linger_ms, batch_size=batch_size, max_in_flight=max_in_flight,
                    max_block_ms=timeout * 1000, request_timeout_ms=timeout * 1000,
                    delivery_timeout_ms=timeout * 1000)


def _perf_consumer(bootstrap, fetch_max_wait_ms, timeout):
    from distlog.client import Consumer

    return Consumer(bootstrap, enable_auto_commit=False, client_id="distlog-perf",
                    fetch_max_wait_ms=fetch_max_wait_ms, request_timeout_ms=int(timeout * 1000))


_PRODUCER_OPTIONS = [
    click.option("--acks", type=click.Choice(["all", "1", "0"]), default="all", show_default=True,
                 help="acknowledgements per batch, as `distlog produce --acks`"),
    click.option("--linger-ms", type=click.FloatRange(min=0), default=PERF_LINGER_MS, show_default=True,
                 help="how long the producer holds a batch open for more records"),
    click.option("--batch-size", type=click.IntRange(min=1024), default=1_000_000, show_default=True,
                 help="the producer's batch size in bytes"),
    click.option("--max-in-flight", type=click.IntRange(1, 10), default=10, show_default=True,
                 help="produce requests the producer keeps unanswered per broker (Kafka's "
                      "max.in.flight.requests.per.connection)"),
    click.option("--throughput", type=float, default=-1, show_default=True,
                 help="records/s to offer at most; -1 for as fast as possible"),
    click.option("--record-size", type=click.IntRange(min=1), default=100, show_default=True,
                 help="bytes of (random) value per record"),
]


def _with(options):
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


def _check_throughput(throughput: float) -> None:
    if throughput != -1 and throughput <= 0:
        raise click.BadParameter(f"{throughput:g} is neither positive nor -1 (unlimited)", param_hint="'--throughput'")


@perf.command("produce")
@_perf_common
@_with(_PRODUCER_OPTIONS)
@click.option("--key-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="bytes of random key per record (0: no key, records stick to one partition at a time)")
@click.option("--send-batch", is_flag=True, help="Producer.send_batch with numpy arrays (the fastest path) "
                                                 "instead of one send() per record")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="seconds to wait for metadata and acknowledgements")
@cluster_options
def perf_produce(topic_name, num_records, reporting_interval, as_json, acks, linger_ms, batch_size, max_in_flight,
                 throughput, record_size, key_size, send_batch, timeout, bootstrap):
    """Send records as fast as allowed and report acknowledgement latency (kafka-producer-perf-test).

    Each record carries its create time as its timestamp, so a `distlog perf consume` running
    at the same time on this host measures end-to-end latency."""
    from distlog import perf as perf_lib

    _check_throughput(throughput)
    settings = perf_lib.ProduceSettings(topic_name, num_records, record_size, throughput, key_size, send_batch,
                                        reporting_interval, timeout)
    with _perf_errors(topic_name):
        producer = _perf_producer(bootstrap, acks, linger_ms, batch_size, max_in_flight, timeout)
        try:
            producer.partitions_for(topic_name)
            result = perf_lib.run_produce(producer, settings)
        finally:
            producer.close(timeout)
    perf_lib.report(result, as_json, "sent")
    if result["failures"]:
        raise CliError(f"{result['failures']} record(s) were not acknowledged")


@perf.command("consume")
@_perf_common
@click.option("--from", "start", type=click.Choice(["earliest", "latest"]), default="earliest", show_default=True,
              help="where to start in every partition (latest: only records produced after the start)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="seconds without a record after which to give up")
@click.option("--fetch-max-wait-ms", type=click.IntRange(min=0), default=PERF_FETCH_MAX_WAIT_MS, show_default=True,
              help="how long a broker may hold a fetch waiting for records")
@cluster_options
def perf_consume(topic_name, num_records, reporting_interval, as_json, start, timeout, fetch_max_wait_ms, bootstrap):
    """Read records from every partition and report end-to-end latency (kafka-consumer-perf-test).

    Latency is the time a record is read minus its timestamp, on this host's clock."""
    from distlog import perf as perf_lib

    settings = perf_lib.ConsumeSettings(topic_name, num_records, timeout, reporting_interval)
    with _perf_errors(topic_name):
        consumer = _perf_consumer(bootstrap, fetch_max_wait_ms, timeout)
        try:
            perf_lib.start_consumer(consumer, topic_name, from_latest=start == "latest")
            result = perf_lib.run_consume(consumer, settings, from_latest=start == "latest")
        except perf_lib.ConsumeTimedOut as timed_out:
            perf_lib.report(timed_out.result, as_json, "consumed")
            raise CliError(f"{timed_out} of the {num_records} asked for") from None
        finally:
            consumer.close()
    perf_lib.report(result, as_json, "consumed")


@perf.command("end-to-end")
@_perf_common
@_with(_PRODUCER_OPTIONS)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="seconds without a record after which to give up")
@click.option("--fetch-max-wait-ms", type=click.IntRange(min=0), default=PERF_FETCH_MAX_WAIT_MS, show_default=True,
              help="how long a broker may hold a fetch waiting for records")
@cluster_options
def perf_end_to_end(topic_name, num_records, reporting_interval, as_json, acks, linger_ms, batch_size, max_in_flight,
                    throughput, record_size, timeout, fetch_max_wait_ms, bootstrap):
    """Produce at --throughput and consume in one process; report produce-to-consume latency
    (Kafka's EndToEndLatency), measured from each send() to the record's poll()."""
    from distlog import perf as perf_lib

    _check_throughput(throughput)
    if record_size < perf_lib.SEQUENCE_BYTES:
        raise click.BadParameter(f"must be at least {perf_lib.SEQUENCE_BYTES} (each value starts with its "
                                 "sequence number)", param_hint="'--record-size'")
    with _perf_errors(topic_name):
        producer = _perf_producer(bootstrap, acks, linger_ms, batch_size, max_in_flight, max(timeout, 30.0))
        consumer = _perf_consumer(bootstrap, fetch_max_wait_ms, timeout)
        try:
            producer.partitions_for(topic_name)
            result = perf_lib.run_end_to_end(producer, consumer, topic_name, num_records, throughput, record_size,
                                             reporting_interval, timeout)
        except perf_lib.ConsumeTimedOut as timed_out:
            perf_lib.report(timed_out.result, as_json, "consumed")
            raise CliError(f"{timed_out} of the {num_records} sent") from None
        finally:
            consumer.close()
            producer.close(timeout)
    perf_lib.report(result, as_json, "consumed")
    if result["failures"]:
        raise CliError(f"{result['failures']} record(s) were not acknowledged")


main.add_command(cluster)
main.add_command(chaos)

if __name__ == "__main__":
    main()
