"""Entry point of the ``tracekit`` console script.

Subcommands are imported only when invoked, so ``tracekit trace`` never pays for the receiver or the
demo, and ``tracekit --help`` stays quick.
"""

from __future__ import annotations

import difflib
import importlib
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import NoReturn, TextIO

import click

from tracekit._version import __version__
from tracekit_cli.options import EXIT_ERROR, fail, stop_writing
from tracekit_cli.output import help_written, print_and_exit

_NO_ARGS: type[click.UsageError] | tuple[()] = getattr(click.exceptions, "NoArgsIsHelpError", ())
# command name -> "module:attribute" of its click command
COMMANDS = {
    "canary": "tracekit_cli.canary:canary",
    "collector": "tracekit_cli.collector:collector",
    "demo": "tracekit_cli.demo.command:demo",
    "diff": "tracekit_cli.diff:diff",
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

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        return help_written(super().get_help_option(ctx))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """A mistyped command gets click's own suggestion for a mistyped option."""
        typed = args[0] if args else ""
        if typed not in COMMANDS and not ctx.resilient_parsing:
            for close in difflib.get_close_matches(typed, COMMANDS, n=1):
                ctx.fail(f"No such command {typed!r}. Did you mean {close!r}?")
        return super().resolve_command(ctx, args)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        print_and_exit(ctx, f"tracekit, version {__version__}")


START_HERE = (
    "New here? Start with 'tracekit demo': it runs eight services on this machine, traces their"
    " requests into the store and ends with the commands to explore them."
)


@click.group(
    cls=LazyGroup, epilog=START_HERE, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_show_version, help="Show the version and exit.")  # fmt: skip
def cli() -> None:
    """Follow one request across services: correlation IDs, traces, logs."""


def main() -> None:
    """Run the ``tracekit`` command; usage errors are one line on stderr and exit 2."""
    _replace_unencodable_output()
    _stdout_may_be_closed()
    with _blocking_output():
        _run()


def _run() -> NoReturn:
    try:
        code = cli.main(standalone_mode=False, prog_name="tracekit")
    except _NO_ARGS as error:  # bare `tracekit`: the help is the answer (click 8.2+)
        try:
            error.show()
        except OSError:  # stderr's reader left, or a full disk: the status still says it
            stop_writing(sys.stderr)
        sys.exit(error.exit_code)
    except click.UsageError as error:
        fail(f"{error.format_message()} (see '{_command_path(error)} --help')", EXIT_ERROR)
    except click.ClickException as error:
        fail(error.format_message(), error.exit_code)
    except click.Abort:
        fail("aborted", 130)
    except Exception as error:  # a bug: one line like any error, the traceback when asked
        if os.environ.get("TRACEKIT_DEBUG"):
            raise
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        fail(f"internal error ({reason}); TRACEKIT_DEBUG=1 shows the traceback", EXIT_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


def _command_path(error: click.UsageError) -> str:
    """The command whose help answers ``error``. Click gives an option typed without its value
    (``tracekit search --since``) no context: the command is then the first word typed, as the
    group itself takes no option with a value."""
    if error.ctx is not None:
        return error.ctx.command_path
    typed = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    return f"tracekit {typed}" if typed in COMMANDS else "tracekit"


def _replace_unencodable_output() -> None:
    """Print what stdout's encoding lacks (an arrow under latin-1, a span name's accent under
    ascii) as '?', the way stderr already escapes it, instead of failing with a traceback."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")


@contextmanager
def _blocking_output() -> Iterator[None]:
    """Run with stdout and stderr blocking, as they were again afterwards. One left non-blocking
    (by ssh, or a Node.js tool sharing the pipe or terminal) lost output without a word: Python's
    text layer counted what the full pipe refused as written, and ``tracekit trace ID | less``
    showed the first 64 KiB, ``--format json > file`` wrote half a document, both with exit 0."""
    made_blocking = [fd for fd in map(_file_descriptor, (sys.stdout, sys.stderr))
                     if fd is not None and not os.get_blocking(fd)]  # fmt: skip
    for fd in made_blocking:
        os.set_blocking(fd, True)
    try:
        yield
    finally:
        try:  # what is left goes out while the descriptor still waits
            sys.stdout.flush()
        except OSError:
            stop_writing(sys.stdout)
        for fd in made_blocking:
            with suppress(OSError):  # replaced by /dev/null meanwhile: nothing to give back
                os.set_blocking(fd, False)


def _file_descriptor(stream: TextIO | None) -> int | None:
    try:
        return None if stream is None else stream.fileno()
    except (ValueError, OSError):  # a closed stream, or one that is no file
        return None


def _stdout_may_be_closed() -> None:
    """A command started with stdout closed (``>&-``) has no reader, like one whose reader left:
    its output goes nowhere and its exit status is the result's (Python's own ``sys.stdout`` is
    None then, which the commands' writes would fail on)."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - open until the process exits
