"""``--store=~/x.db``: the shell leaves a ``~`` after ``=`` as typed; tracekit expands it, as it
does in ``$TRACEKIT_STORE``, for every command that takes ``--store``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.receiver._collector_process import start_collector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import write_store

from tracekit_cli.main import cli

SINCE = "2023-11-14T22:00:00+00:00"
CANARY = ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1"]
COMMANDS = {  # what each says about the checkout and incident requests: its exit status
    "trace": (["trace", "req-checkout-1"], 0),
    "search": (["search", "--since", SINCE], 0),
    "services": (["services", "--since", SINCE], 0),
    "diff": (["diff", "req-checkout-1", "req-incident-9"], 1),
    "canary": (CANARY, 4),  # no requests of either version: inconclusive
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # where a "~" taken literally would be made
    write_store(tmp_path / "x.db")
    return tmp_path


@pytest.mark.parametrize("name", list(COMMANDS))
def test_store_option_expands_a_tilde(home: Path, name: str) -> None:
    args, status = COMMANDS[name]

    result = CliRunner().invoke(cli, [*args, "--store=~/x.db", "--format", "json"])

    assert (result.exit_code, result.stderr) == (status, "")


def test_collector_store_option_expands_a_tilde(home: Path) -> None:
    process, _ = start_collector(Path("~/collected.db"))
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    assert (home / "collected.db").is_file() and not (home / "~").exists()


@pytest.mark.parametrize("variable", ["~/traces.db", "~/traces.db "], ids=["tilde", "space"])
def test_a_service_writes_where_the_command_reads_tracekit_store(
    home: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """``TRACEKIT_STORE=~/traces.db`` from an env file (no shell expands it there): the service's
    store exporter made ``./~/traces.db`` and ``tracekit search`` found no store at all; with a
    trailing space, which the command strips, the service wrote to ``traces.db `` instead."""
    monkeypatch.setenv("TRACEKIT_STORE", variable)
    service = (
        "import tracekit; from opentelemetry import trace; tracekit.init('billing');"
        " trace.get_tracer('t').start_span('charge').end(); tracekit.shutdown()"
    )
    env = {**os.environ, "TRACEKIT_EXPORTER": "store", "TRACEKIT_METRICS_PORT": "0"}
    subprocess.run([sys.executable, "-c", service], env=env, check=True, timeout=60)

    result = CliRunner().invoke(cli, ["search", "--format", "json"])

    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert [r["root_service"] for r in json.loads(result.stdout)["requests"]] == ["billing"]
    assert (home / "traces.db").is_file() and not (home / "~").exists()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_before_any_store_exists_the_error_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A new user's first command, before anything wrote a store, said only "no tracekit store
    at PATH": not how a store comes about."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("TRACEKIT_STORE", raising=False)
    args, _ = COMMANDS[name]

    result = CliRunner().invoke(cli, args)

    where = tmp_path / ".local" / "share" / "tracekit" / "tracekit.db"
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: no tracekit store at {where} yet: 'tracekit demo' makes one, as do"
        " 'tracekit collector' and services run with TRACEKIT_EXPORTER=store (--store reads"
        " another)\n"
    )
    assert not where.parent.exists(), "reading makes no store"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_folder_given_as_the_store_is_named_as_one(home: Path, name: str) -> None:
    """``--store ~/.local/share/tracekit`` (the folder, not its file) said "no tracekit store"
    there, as if nothing had been written."""
    args, _ = COMMANDS[name]

    result = CliRunner().invoke(cli, [*args, "--store", str(home)])

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: {home} is a folder, not a store: name the store file in it"
        f" (such as {home / 'tracekit.db'})\n"
    )


WRITERS = {
    "demo": ["demo", "--requests", "1", "--no-canary"],
    "collector": ["collector", "--port", "0", "--grpc-port", "0"],
}


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("given", ["option", "variable"])
def test_a_folder_given_to_the_commands_that_write_is_named_as_one(
    home: Path, monkeypatch: pytest.MonkeyPatch, name: str, given: str
) -> None:
    """The demo and the collector said "Invalid value for '--store': File '/x' is a directory."
    for a folder in --store, and "cannot open store /x: unable to open database file" for one in
    $TRACEKIT_STORE, where the reading commands say what to name instead."""
    option = ["--store", str(home)] if given == "option" else []
    if given == "variable":
        monkeypatch.setenv("TRACEKIT_STORE", str(home))

    result = CliRunner().invoke(cli, [*WRITERS[name], *option])

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"tracekit: {home} is a folder, not a store: name the store file in it"
        f" (such as {home / 'tracekit.db'})\n"
    )
    assert sorted(p.name for p in home.iterdir()) == ["x.db", "x.db-lock"], (
        "nothing made in the folder"
    )


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_store_path_the_system_cannot_look_at_is_a_store_that_cannot_be_opened(
    home: Path, name: str
) -> None:
    """Checking for a folder made the demo and the collector end in "internal error (OSError:
    [Errno 36] File name too long ...)" (and PermissionError for a path inside a folder they may
    not search), where they said "cannot open store ...": the store's opening says why, exit 2."""
    path = home / ("a" * 300 + ".db")  # a name over the file system's 255 bytes

    result = CliRunner().invoke(cli, [*WRITERS[name], "--store", str(path)])

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("tracekit") and result.stderr.count("\n") == 1
    assert "cannot open store" in result.stderr  # the reason is past one line's 300 characters
    assert "internal error" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [["demo", "--requests", "1", "--no-canary"], ["collector", "--port", "0", "--grpc-port", "0"]],
    ids=["demo", "collector"],
)
def test_an_empty_store_option_is_refused_by_the_commands_that_write(
    tmp_path: Path, command: list[str]
) -> None:
    """``--store "$UNSET"``: the demo wrote into the default store as if --store were not given,
    and the collector said "cannot open store .: unable to open database file"; the reading
    commands already said what was wrong."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_DATA_HOME", "TRACEKIT_STORE")}
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", *command, "--store", ""], cwd=tmp_path,
        env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "tracekit: --store was given an empty value\n"
    assert list(tmp_path.iterdir()) == [], "no store anywhere"


_NO_HOME = (
    "import pwd, sys\n"
    "def no_entry(uid):\n"  # a container's arbitrary uid: no passwd entry, and no $HOME either
    "    raise KeyError(uid)\n"
    "pwd.getpwuid = no_entry\n"
    "from tracekit_cli.main import main\n"
    "main()\n"
)


@pytest.mark.parametrize("command", [["search"], ["collector", "--port", "0"], ["demo"]])
def test_no_home_directory_for_the_default_store_is_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    """No --store, no $TRACEKIT_STORE, no $HOME, no passwd entry: every command (even --help)
    ended in "internal error (RuntimeError: Could not determine home directory.)"."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_DATA_HOME")}
    env.pop("TRACEKIT_STORE", None)
    run = [sys.executable, "-c", _NO_HOME, *command]
    result = subprocess.run(run, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    helped = subprocess.run([*run, "--help"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip

    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("tracekit: no home directory for the default store path")
    assert "set TRACEKIT_STORE or pass --store" in result.stderr
    assert result.stderr.count("\n") == 1
    assert helped.returncode == 0 and "$TRACEKIT_STORE" in helped.stdout, helped.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_named_pipe_given_as_the_store_is_named_as_one(home: Path, name: str) -> None:
    """It said "no tracekit store at PATH", as if nothing were there."""
    args, _ = COMMANDS[name]
    os.mkfifo(home / "pipe.db")

    result = CliRunner().invoke(cli, [*args, "--store", str(home / "pipe.db")])

    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"tracekit: store {home / 'pipe.db'}: a named pipe, not a file\n"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_store_path_with_a_character_a_line_hides_is_shown_escaped(
    tmp_path: Path, name: str
) -> None:
    """``--store "$(cat store-path.txt)"``, the file saved with Windows line ends, names the
    store with a carriage return at its end. The error said ``no tracekit store at
    /data/x.db yet`` of a store that is right there (the return shown as a space), and a
    folder named with an escape sequence was a path that did not exist either. Such a path is
    now shown escaped, the stray character with it."""
    args, _ = COMMANDS[name]
    typed = f"{write_store(tmp_path / 'x.db')}\r"
    folder = tmp_path / "dir\x1b[31m"
    folder.mkdir()

    missing = CliRunner().invoke(cli, [*args, "--store", typed])
    a_folder = CliRunner().invoke(cli, [*args, "--store", str(folder)])

    assert missing.exit_code == a_folder.exit_code == 2
    assert missing.stderr.startswith(f"tracekit: no tracekit store at {typed!r} yet: ")
    assert a_folder.stderr == (
        f"tracekit: {str(folder)!r} is a folder, not a store: name the store file in it"
        f" (such as {str(folder / 'tracekit.db')!r})\n"
    )
