"""``--store=~/x.db``: the shell leaves a ``~`` after ``=`` as typed; tracekit expands it, as it
does in ``$TRACEKIT_STORE``, for every command that takes ``--store``."""

from __future__ import annotations

import signal
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
