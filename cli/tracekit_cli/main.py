"""Entry point of the ``tracekit`` console script."""

from __future__ import annotations

import click

from tracekit._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tracekit")
def cli() -> None:
    """Follow one request across services: correlation IDs, traces, logs."""


def main() -> None:
    """Run the ``tracekit`` command."""
    cli()
