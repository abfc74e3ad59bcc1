"""Finding a local cluster without typing its address, the way every `distlog` command does.

`distlog cluster up` (and scripts/up) picks broker ports when the usual ones are taken and
records them in DATA_DIR/cluster.json; reading that record is what lets a script written once
reach whichever ports this machine's cluster got.
"""

from __future__ import annotations

import os

from distlog.supervisor import cluster_file

BOOTSTRAP_ENV = "DISTLOG_BOOTSTRAP"
DATA_DIR_ENV = "DISTLOG_DATA_DIR"
DEFAULT_DATA_DIR = ".distlog"


class ClusterNotFoundError(Exception):
    """No cluster where we looked; the message says where that was and what to do."""


def local_bootstrap(data_dir=None) -> str:
    """The bootstrap of this machine's cluster: $DISTLOG_BOOTSTRAP if set, else the brokers
    listed in the cluster.json of `data_dir`, $DISTLOG_DATA_DIR or ./.distlog, in that order
    (a `data_dir` given here names the cluster, so the environment's bootstrap does not apply)."""
    if data_dir is None:
        from_env = os.environ.get(BOOTSTRAP_ENV, "").strip()
        if from_env:
            return from_env
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    try:
        return brokers_in(data_dir)
    except ClusterNotFoundError as error:
        raise ClusterNotFoundError(f"{error}; or set {BOOTSTRAP_ENV}=HOST:PORT") from None


def brokers_in(data_dir) -> str:
    """"tcp://a:1,tcp://b:2": every broker address the cluster record in data_dir lists."""
    try:
        record = cluster_file.load(data_dir)
    except cluster_file.ClusterFileError as error:
        raise ClusterNotFoundError(str(error)) from None
    addresses = [b.get("address") for b in record.get("brokers", []) if b.get("address")]
    if not addresses:
        raise ClusterNotFoundError(f"the cluster in {data_dir} lists no brokers; bring it up again with "
                                   "`distlog cluster up`")
    return ",".join(addresses)
