"""`distlog chaos`: run a chaos test against a fresh local cluster and write its report.

    distlog chaos --kill-random 60s              # kill, pause and partition random brokers for a minute
    distlog chaos --kill-random 20s --faults kill --seed 7 --report-dir /tmp/chaos

Exit status: 0 when the history shows no anomaly, 1 when it does (or the run failed), 2 for
bad arguments.
"""

from __future__ import annotations

import random
import re
import sys
import time

import click

from distlog.chaos.nemesis import FAULT_KINDS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration_s(text: str) -> float:
    """'60s', '2m', '1.5h', '500ms' or a bare number of seconds -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: use e.g. 60s, 2m or 90")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _duration(_ctx, _param, value):
    try:
        return parse_duration_s(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _faults(_ctx, _param, value):
    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise click.BadParameter(f"choose from {', '.join(FAULT_KINDS)} (comma-separated), not {value!r}")
    return kinds


@click.command()
@click.option("--kill-random", "duration_s", metavar="DURATION", required=True, callback=_duration,
              help="How long to run the workload while killing, pausing, partitioning random brokers and "
                   "tearing their segment tails (e.g. 60s, 2m).")
@click.option("--brokers", type=click.IntRange(1, 9), default=3, show_default=True,
              help="Brokers of the cluster the run starts for itself.")
@click.option("--partitions", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Partitions of the workload's topic.")
@click.option("--faults", default=",".join(FAULT_KINDS), show_default=True, callback=_faults,
              help="Which faults the nemesis may inject.")
@click.option("--rate", "rate_per_s", type=click.FloatRange(1, 100_000), default=1000.0, show_default=True,
              help="Records per second the producer sends.")
@click.option("--replication-factor", "-r", type=click.IntRange(1, 9), default=None,
              help="Copies of each partition of the workload's topic [default: 3, or --brokers if fewer].")
@click.option("--seed", type=int, default=None, help="Seed of the fault schedule (default: random, printed).")
@click.option("--acks", type=click.Choice(["all", "1"]), default="all", show_default=True,
              help="The producers' acks. 1 is a control run: unsafe on purpose, so the checker can be "
                   "seen catching the acknowledged writes a leader kill loses.")
@click.option("--flush-policy", type=click.Choice(["always", "never"]), default=None,
              help="The topic's flush.policy. never is a control run with power-loss faults: what a "
                   "broker acknowledged without an fsync, a power cut takes back.")
@click.option("--report-dir", default=None,
              help="Where history.jsonl, report.md, timeline.png and summary.json go "
                   "(default: chaos-reports/<UTC time>).")
def chaos(duration_s, brokers, partitions, faults, rate_per_s, replication_factor, seed, acks, flush_policy,
          report_dir):
    """Chaos-test a fresh local cluster: live workload, injected faults, history check, report."""
    # Imported here: the runner pulls in the checker and matplotlib, which no other command needs.
    from distlog.chaos.checker import anomalies_of
    from distlog.chaos.runner import ChaosConfig, ChaosRunError, run_chaos
    from distlog.protocol.errors import DistlogError
    from distlog.supervisor.control import ControlError

    if replication_factor is not None and replication_factor > brokers:
        raise click.BadParameter(f"{replication_factor} copies need as many brokers (--brokers {brokers})",
                                 param_hint="--replication-factor")
    if "partition" in faults and brokers < 2:
        raise click.BadParameter("a partition fault needs --brokers 2 or more", param_hint="--faults")
    seed = random.randrange(1_000_000) if seed is None else seed
    report_dir = report_dir or f"chaos-reports/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    config = ChaosConfig(duration_s=duration_s, brokers=brokers, partitions=partitions, faults=faults, seed=seed,
                         rate_per_s=rate_per_s, replication_factor=replication_factor, report_dir=report_dir,
                         acks=acks, flush_policy=flush_policy,
                         command=" ".join(["distlog", *sys.argv[1:]]))
    click.echo(f"chaos: seed {seed}, report in {report_dir}", err=True)
    try:
        result = run_chaos(config, say=lambda message: click.echo(f"chaos: {message}", err=True))
    except (ChaosRunError, DistlogError, ControlError) as error:  # the run could not be carried out
        click.echo(f"error: the chaos run failed: {error}", err=True)
        sys.exit(1)
    anomalies = {name: len(found) for name, found in anomalies_of(result).items() if found}
    verdict = "PASS" if result["valid"] else "FAIL"
    click.echo(f"{verdict}: {result['sends']['ok']} acknowledged writes checked, "
               f"{len(result['faults'])} faults, anomalies: {anomalies or 'none'}"
               + (f", harness errors: {result['harness_errors']}" if result["harness_errors"] else ""))
    click.echo(f"report: {result['report']}")
    sys.exit(0 if result["valid"] else 1)
