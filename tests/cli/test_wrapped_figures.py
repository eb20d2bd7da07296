"""Lines that wrap at the terminal's width (a trace's summary, a diff's notes and verdict) keep
each figure with its unit: "200.0" at the end of one line and "ms" at the start of the next
read as a bare number."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology, write_store

from tracekit_cli.main import cli

COMMANDS = {
    "trace": ["trace", "req-incident-9"],
    "diff": ["diff", "req-checkout-1", "req-incident-9"],
}
ENDS_IN_A_NUMBER = re.compile(r"\d$")
STARTS_WITH_A_UNIT = re.compile(r"^[\s│|]*(ms|s|min|h|d|y|UTC)\b")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("figures") / "tracekit.db")


@pytest.mark.parametrize("fmt", ["text", "rich"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_figure_is_split_from_its_unit(store: Path, command: str, fmt: str) -> None:
    split = []
    for width in range(40, 121):
        result = CliRunner().invoke(
            cli, [*COMMANDS[command], "--store", str(store), "--format", fmt],
            env={"COLUMNS": str(width), "NO_COLOR": "1"},
        )  # fmt: skip
        assert result.exit_code in (0, 1), result.output
        lines = result.stdout.splitlines()
        split += [
            (width, line, after)
            for line, after in itertools.pairwise(lines)
            if ENDS_IN_A_NUMBER.search(line) and STARTS_WITH_A_UNIT.match(after)
        ]
    assert not split, split[:3]


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_an_http_status_stays_beside_its_protocol(tmp_path: Path, fmt: str) -> None:
    """A span that failed with a 5xx and no message reads 'HTTP 500' in the errors under the
    tree; at 40 columns (tracekit demo's inventory errors) the line ended in 'HTTP' and the next
    began with '500', a status without its protocol. The two now wrap together."""
    t = Topology("req-stock-1")
    root = t.span("fulfilment", "GET /stock", "CLIENT", 0, 20, status="ERROR",
                  attrs={"http.response.status_code": 500})  # fmt: skip
    t.span("inventory", "GET /stock/{sku}", "SERVER", 2, 18, root, status="ERROR",
           attrs={"http.response.status_code": 500})  # fmt: skip
    db = write_store(tmp_path / "status.db", t)
    split = []
    for width in range(40, 81):
        result = CliRunner().invoke(
            cli, ["trace", "req-stock-1", "--store", str(db), "--format", fmt],
            env={"COLUMNS": str(width), "NO_COLOR": "1"},
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        split += [(width, line, after) for line, after in itertools.pairwise(lines)
                  if line.endswith("HTTP") and re.match(r"^[\s│|]*\d{3}\b", after)]  # fmt: skip
    assert not split, split[:3]
