"""The rich trace view at 80 columns, the most common width: span names that differ only at
their end (the demo's "send pricing.1", "send pricing.2", "send pricing.3") are told apart."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import Topology, write_store

from tracekit_cli.main import cli


def _fan_out() -> Topology:
    """gateway -> orders -> fulfilment, which sends three pricing jobs (as ``tracekit demo``)."""
    t = Topology("req-fan-out")
    root = t.span("gateway", "POST /checkout", "SERVER", 0, 100)
    _, orders = t.http(root, "orders", "/orders", 5, 90, method="POST")
    _, fulfilment = t.http(orders, "fulfilment", "/fulfil", 10, 80, method="POST")
    for n in (1, 2, 3):
        t.span("fulfilment", f"send pricing.{n}", "PRODUCER", 10 + 20 * n, 12 + 20 * n, fulfilment)
    return t


def test_names_that_differ_at_their_end_are_shown_whole_at_80_columns(tmp_path: Path) -> None:
    """At 80 columns all three rows read "fulfilment send pric…" while the waterfall kept 20
    columns; the waterfall now gives up room (down to 10 columns) before a name is cut."""
    store = write_store(tmp_path / "tracekit.db", _fan_out())
    result = CliRunner().invoke(
        cli, ["trace", "req-fan-out", "--store", str(store), "--format", "rich"],
        env={"COLUMNS": "80", "NO_COLOR": "1"},
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if "send pricing" in line]
    assert [line.split("fulfilment ")[1].split()[:2] for line in rows] == [
        ["send", f"pricing.{n}"] for n in (1, 2, 3)
    ]
    assert all("█" in line for line in rows)  # each row keeps its waterfall bar


LEGENDS = {
    "rich": ["◆ critical path", "⏳ queue wait", "✗ error"],
    "text": ["* critical path", "# span", "! span in error", "~ queue wait"],
}


@pytest.mark.parametrize("fmt", sorted(LEGENDS))
@pytest.mark.parametrize("columns", [40, 50, 60])
def test_the_legend_keeps_each_glyph_beside_its_meaning(
    tmp_path: Path, fmt: str, columns: int
) -> None:
    """At 40 columns the rich legend ended a line with a bare "✗" and began the next with
    "error" (the text view: "! span in" / "error"); it now wraps between its items."""
    store = write_store(tmp_path / "tracekit.db", _fan_out())
    result = CliRunner().invoke(
        cli, ["trace", "req-fan-out", "--store", str(store), "--format", fmt],
        env={"COLUMNS": str(columns), "NO_COLOR": "1"},
    )  # fmt: skip

    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(LEGENDS[fmt][0]))
    items = [item for line in lines[first:] for item in line.strip().split("   ") if item]
    assert items[: len(LEGENDS[fmt])] == LEGENDS[fmt]
    assert max(len(line) for line in lines[first:]) <= columns


def _celery_chain(tmp_path: Path, fmt: str, tasks: tuple[str, ...], columns: int) -> Result:
    """``tracekit trace`` of a request whose Celery tasks run one after the other, all through
    the queue ``celery``, as tracekit's Celery integration records them."""
    t = Topology("req-chain")
    parent = t.span("shop", "POST /checkout", "SERVER", 0, 100)
    for n, task in enumerate(tasks):
        attrs = {"messaging.system": "celery", "messaging.destination.name": "celery",
                 "tracekit.celery.task_name": task}  # fmt: skip
        sent = t.span("shop", "send celery", "PRODUCER", 10 + 40 * n, 12 + 40 * n, parent,
                      attrs=attrs)  # fmt: skip
        parent = t.span("worker", "process celery", "CONSUMER", 20 + 40 * n, 45 + 40 * n, sent,
                        attrs=attrs)  # fmt: skip
    store = write_store(tmp_path / "tracekit.db", t)
    return CliRunner().invoke(
        cli, ["trace", "req-chain", "--store", str(store), "--format", fmt],
        env={"COLUMNS": str(columns), "NO_COLOR": "1"},
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["text", "rich"])
def test_celery_tasks_of_one_queue_are_named_by_their_task(tmp_path: Path, fmt: str) -> None:
    """Every task of a Celery chain goes through one queue, so each span is named "send
    celery" or "process celery": the rows said so, and nothing told the charge from the shipment
    (the task name was in ``--format json`` only). Each row now names its task after the span."""
    result = _celery_chain(tmp_path, fmt, ("shop.charge", "shop.ship"), columns=120)

    assert result.exit_code == 0, result.output
    named = re.findall(r"(?:send|process) celery(?: \([\w.]+\))?", result.stdout)
    assert named == [
        "send celery (shop.charge)",
        "process celery (shop.charge)",
        "send celery (shop.ship)",
        "process celery (shop.ship)",
    ]


@pytest.mark.parametrize(("fmt", "arrow"), [("text", "->"), ("rich", "→")])
def test_celery_hops_are_named_by_the_task_they_ran(tmp_path: Path, fmt: str, arrow: str) -> None:
    """The rows named each task, but the "hops:" list said "shop -> worker  celery celery" for
    every hop of the chain. Each hop now names the task its receiving span ran, on one line,
    without the control characters a stored name may hold."""
    result = _celery_chain(tmp_path, fmt, ("shop.charge", "shop.ship\x1b[31m\nnow"), columns=400)

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    hops = [line for line in result.stdout.splitlines() if f"shop {arrow} worker  " in line]
    assert [line.split("  ")[2] for line in hops] == [
        "celery celery (shop.charge)",
        "celery celery (shop.ship\ufffd[31m now)",
    ]
