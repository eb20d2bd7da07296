"""Entry point of the ``tracekit`` console script.

Subcommands are imported only when invoked, so ``tracekit trace`` never pays for the receiver or the
demo, and ``tracekit --help`` stays quick.
"""

from __future__ import annotations

import importlib

import click

from tracekit._version import __version__

# command name -> "module:attribute" of its click command
COMMANDS = {
    "canary": "tracekit_cli.canary:canary",
    "collector": "tracekit_cli.collector:collector",
    "demo": "tracekit_cli.demo.command:demo",
    "search": "tracekit_cli.search:search",
    "services": "tracekit_cli.services:services",
    "trace": "tracekit_cli.trace:trace",
}


class LazyGroup(click.Group):
    """A group whose subcommands live in their own modules and load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tracekit")
def cli() -> None:
    """Follow one request across services: correlation IDs, traces, logs."""


def main() -> None:
    """Run the ``tracekit`` command."""
    cli()
