"""The shares in "where the time went": a part too small to show in tenths of a percent reads
0.0%, whichever its sign (its delta beside it keeps the sign)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology, write_store

from tracekit_cli.main import cli


def _checkout(correlation_id: str, end_ms: float, stock_ms: float) -> Topology:
    t = Topology(correlation_id)
    root = t.span("gateway", "POST /checkout", "SERVER", 0, end_ms)
    t.http(root, "inventory", "/stock", 10, 10 + stock_ms, lag_ms=0)
    return t


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_a_small_part_that_got_faster_reads_zero_percent(tmp_path: Path, fmt: str) -> None:
    """Stock lookups 0.2 ms faster in a request 1 s slower: the view said "-0.0%"."""
    store = write_store(tmp_path / "tracekit.db", _checkout("req-fast", 100, 20.2),
                        _checkout("req-slow", 1100, 20.0))  # fmt: skip
    result = CliRunner().invoke(
        cli, ["diff", "req-fast", "req-slow", "--store", str(store), "--format", fmt],
        env={"COLUMNS": "80", "NO_COLOR": "1"},
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    stock = [line for line in result.stdout.splitlines() if line.endswith("GET /stock")]
    parts = [line for line in stock if "on the path" in line]
    assert [line.split()[:3] for line in parts] == [["-0.2", "ms", "0.0%"]], stock
    assert "-0.0%" not in result.stdout
