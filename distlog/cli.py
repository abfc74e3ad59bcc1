"""The `distlog` command line: click commands over the client library and the supervisor."""

import click

from distlog import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="distlog")
def main():
    """distlog: a Kafka-style distributed, partitioned, replicated log."""


if __name__ == "__main__":
    main()
