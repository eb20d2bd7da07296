"""Parent ids that form a cycle: hostile or corrupt exports must not hide spans or crash.

Span ids are chosen by the exporting process, so two spans may claim each other as parent (or a
longer loop may close). The engine breaks the loop where it closes, shows every stored span and
says so in the path's warnings; the CLI exits as usual.
"""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner
from trace_topologies import MemorySource, Topology

from tracekit.path import Path, reconstruct
from tracekit.records import SpanLink, SpanRecord
from tracekit.store import Store


def looped(t: Topology, *pairs: tuple[SpanRecord, SpanRecord]) -> None:
    """Point each first span's parent id at the second span."""
    for child, parent in pairs:
        child.parent_span_id = parent.span_id


def run(t: Topology) -> Path:
    path = reconstruct(MemorySource(t.spans, t.logs), t.correlation_id or "")
    assert path is not None
    return path


@pytest.mark.parametrize("stored_order", ["as written", "reversed"])
def test_two_spans_that_are_each_others_parent_are_both_shown_with_a_warning(
    stored_order: str,
) -> None:
    t = Topology()
    a = t.span("orders", "handle", "SERVER", 0, 50)
    b = t.span("orders", "step", "INTERNAL", 10, 40, a)
    looped(t, (a, b))
    if stored_order == "reversed":
        t.spans.reverse()
    path = run(t)
    assert sorted(s.record.span_id for s in path.spans) == sorted([a.span_id, b.span_id])
    assert [w for w in path.warnings if "cycle" in w] == [
        f"parent cycle: orders 'handle' ({a.span_id}) is its own ancestor through parent "
        f"{b.span_id}; shown as a root"
    ]


def test_a_cycle_next_to_a_real_root_hides_nothing() -> None:
    t = Topology()
    root = t.span("gateway", "GET /a", "SERVER", 0, 100)
    t.span("gateway", "work", "INTERNAL", 5, 20, root)
    x = t.span("orders", "x", "INTERNAL", 30, 60, root)
    y = t.span("orders", "y", "INTERNAL", 35, 55, x)
    z = t.span("orders", "z", "INTERNAL", 40, 50, y)
    looped(t, (x, z))  # x -> z -> y -> x
    path = run(t)
    assert len(path.spans) == len(t.spans) == 5
    assert sum("parent cycle" in w for w in path.warnings) == 1
    loop = [s for s in path.spans if s.record.span_id in {x.span_id, y.span_id, z.span_id}]
    assert sorted(s.depth for s in loop) == [0, 1, 2]  # the loop is cut once, into a chain


def test_self_parent_is_shown() -> None:
    t = Topology()
    root = t.span("gateway", "GET /a", "SERVER", 0, 100)
    looped(t, (root, root))
    path = run(t)
    assert [s.record.span_id for s in path.spans] == [root.span_id]


@pytest.mark.parametrize("stored_order", ["as written", "reversed"])
def test_trace_roots_that_link_to_each_other_keep_the_request_entry_on_top(
    stored_order: str,
) -> None:
    """Links are chosen by the exporting process: the entry's root may link back to the span
    that consumed its own message. The loop is cut at the later root, never above the entry."""
    t = Topology()
    entry = t.span("api", "POST /report", "SERVER", 0, 100)
    producer = t.publish(entry, "reports", 10, 15)
    t.new_trace()
    worker = t.consume("worker", "reports", 30, 60, links=[producer])
    entry.links = [SpanLink(worker.trace_id, worker.span_id)]
    if stored_order == "reversed":
        t.spans.reverse()
    path = run(t)
    assert path.spans[0].record is entry
    assert [s.record.span_id for s in path.spans] == [
        entry.span_id,
        producer.span_id,
        worker.span_id,
    ]
    assert path.spans[2].parent is not None and path.spans[2].parent.record is producer


def test_trace_command_shows_every_span_and_exits_zero(tmp_path: FilePath) -> None:
    from tracekit_cli.main import cli

    t = Topology("req-loop")
    a = t.span("orders", "handle", "SERVER", 0, 50)
    b = t.span("orders", "step", "INTERNAL", 10, 40, a)
    looped(t, (a, b))
    db = tmp_path / "tracekit.db"
    with Store(db) as store:
        store.write_spans(t.spans)
    for fmt in ("text", "json"):
        result = CliRunner().invoke(cli, ["trace", "req-loop", "--store", str(db), "--format", fmt])
        assert (result.exit_code, result.stderr) == (0, ""), result.output
        assert "parent cycle" in result.stdout
        assert "handle" in result.stdout and "step" in result.stdout
