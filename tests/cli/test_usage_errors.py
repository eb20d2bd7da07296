"""The installed ``tracekit``: usage errors are one line and exit 2; help tells the truth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tracekit_cli.main import COMMANDS, cli

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))


def tracekit(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("TRACEKIT_STORE", "XDG_DATA_HOME")}
    return subprocess.run(
        [TRACEKIT, *args], capture_output=True, text=True, timeout=60, env={**environ, **env}
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["search", "--since", "yesterday-ish"], "Invalid value for '--since'"),
        (["search", "--limit", "0"], "Invalid value for '--limit'"),
        (["search", "--bogus"], "No such option '--bogus'"),
        (["trace"], "Missing argument 'ID'"),
        (["trace", "x", "--format", "xml"], "Invalid value for '--format'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["collector", "--port", "70000"], "Invalid value for '--port'"),
        (["collector", "--host", ""], "Invalid value for '--host': empty"),
        (["demo", "--queue", "kafka"], "Invalid value for '--queue'"),
        # NaN is out of every range (it compares false with both bounds: click lets it through)
        (
            ["canary", "--service", "s", "--baseline", "1", "--canary", "2", "--alpha", "nan"],
            "Invalid value for '--alpha': nan is not a finite number",
        ),
        (
            [
                "canary",
                "--service",
                "s",
                "--baseline",
                "1",
                "--canary",
                "2",
                "--tail-quantile",
                "NaN",
            ],
            "Invalid value for '--tail-quantile': nan is not a finite number",
        ),
        (
            ["trace", "x", "--tempo", "http://127.0.0.1:1", "--timeout", "nan"],
            "Invalid value for '--timeout': nan is not a finite number",
        ),
        (["search", "--min-duration", "nan"], "Invalid value for '--min-duration'"),
        (["diff", "a", "b", "--min-delta-ms", "nan"], "Invalid value for '--min-delta-ms'"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    result = tracekit(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tracekit: "), result.stderr
    assert says in result.stderr
    assert result.stderr.rstrip().endswith("--help')")


@pytest.mark.parametrize(
    "args",
    [["search", "--since"], ["trace", "x", "--max-spans"], ["demo", "--requests"],
     ["collector", "--port"]],
    ids=lambda args: " ".join(args),
)  # fmt: skip
def test_an_option_without_its_value_points_at_its_commands_help(args: list[str]) -> None:
    """``tracekit search --since`` (the value forgotten) pointed at ``tracekit --help``, which
    lists no option of ``search``: click leaves the command out of this error."""
    result = tracekit(*args)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: Option '{args[-1]}' requires an argument. (see 'tracekit {args[0]} --help')\n"
    )


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("serach", "search"), ("trac", "trace"), ("servces", "services"), ("colector", "collector")],
)
def test_a_mistyped_command_is_named_as_a_mistyped_option_is(typed: str, meant: str) -> None:
    """`tracekit serach` said `No such command 'serach'.` alone, where `tracekit --versio` gets
    click's `Did you mean '--version'?`."""
    result = tracekit(typed)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: No such command '{typed}'. Did you mean '{meant}'? (see 'tracekit --help')\n"
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_the_store_default_this_environment_uses(name: str) -> None:
    result = tracekit(name, "--help", XDG_DATA_HOME="/srv/xdg")  # short: click wraps at 80
    assert result.returncode == 0 and "--store" in result.stdout
    words = " ".join(result.stdout.split())
    assert "[default: /srv/xdg/tracekit/tracekit.db;" in words
    explicit = tracekit(name, "--help", TRACEKIT_STORE="/srv/t.db")
    assert "[default: /srv/t.db;" in " ".join(explicit.stdout.split())


def test_every_option_of_every_command_has_help_text() -> None:
    context = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        for param in command.params:
            if isinstance(param, click.Option):
                record = param.get_help_record(click.Context(command))
                assert record and record[1].strip(), f"tracekit {name} {param.opts[0]}"


_BROKEN_COMMAND = """
import sys
import tracekit_cli.main as entry

def broken(*args, **kwargs):
    raise LookupError("a bug\\x1b[2J\\nsecond line")

entry.cli.main = broken  # any command failing in a way no code path expected
sys.argv = ["tracekit", "services"]
entry.main()
"""


def test_an_unexpected_error_is_one_line_and_exit_2_unless_debugging() -> None:
    """A bug must not print a traceback either (the contract: one line, exit 2); with
    TRACEKIT_DEBUG=1 the traceback is there for the bug report. A terminal sequence in the
    exception's text is taken out whole (the line read "a bug [2J second line")."""
    environ = {k: v for k, v in os.environ.items() if k != "TRACEKIT_DEBUG"}
    run = [sys.executable, "-c", _BROKEN_COMMAND]
    quiet = subprocess.run(run, capture_output=True, text=True, timeout=60, env=environ)
    assert quiet.returncode == 2
    assert quiet.stderr == (
        "tracekit: internal error (LookupError: a bug second line);"
        " TRACEKIT_DEBUG=1 shows the traceback\n"
    )
    debugging = subprocess.run(
        run, capture_output=True, text=True, timeout=60, env={**environ, "TRACEKIT_DEBUG": "1"}
    )
    assert debugging.returncode == 1
    assert "Traceback" in debugging.stderr and "LookupError: a bug" in debugging.stderr


_CTRL_C_WHILE_STARTING = """
import os, signal, sys

class CtrlCDuringImports:  # the user's Ctrl-C lands while the command's modules load
    def find_spec(self, name, path=None, target=None):
        if name == "tracekit_cli.options":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlCDuringImports())
sys.argv = ["tracekit", "search"]
from tracekit_cli import main
main()
"""


def test_ctrl_c_while_the_command_starts_is_one_line_and_exit_130() -> None:
    """Ctrl-C pressed as ``tracekit`` started (its imports take a tenth of a second) printed
    a traceback of whatever module was loading, and the process died of SIGINT."""
    result = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_STARTING], capture_output=True,
                            text=True, timeout=60)  # fmt: skip

    assert (result.returncode, result.stdout, result.stderr) == (130, "", "tracekit: aborted\n")
