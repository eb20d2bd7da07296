"""A collector killed with its writer process leaves a batch mark; the next start removes it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.receiver._collector_process import _children, start_collector

from tracekit.store._marks import PREFIX, new_mark


def _export_one_span(port: int) -> SpanExportResult:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("marks").start_as_current_span("one"):
        pass
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30)
    try:
        return exporter.export(memory.get_finished_spans())
    finally:
        exporter.shutdown()


def _marks(store: Path) -> set[str]:
    conn = sqlite3.connect(store)
    try:
        rows = conn.execute("SELECT key FROM meta WHERE key LIKE ?", (f"{PREFIX}%",)).fetchall()
    finally:
        conn.close()
    return {key for (key,) in rows}


def _kill_with_its_writer(collector: subprocess.Popen[str]) -> None:
    """SIGKILL to the collector and its children at once (a grace period's end, the OOM killer)."""
    for pid in [*_children(collector.pid), collector.pid]:
        os.kill(pid, signal.SIGKILL)
    collector.wait(30)


def _stop(collector: subprocess.Popen[str]) -> None:
    collector.send_signal(signal.SIGTERM)
    collector.communicate(timeout=60)


def test_marks_of_collectors_gone_are_removed_and_no_other(tmp_path: Path) -> None:
    """Three collectors killed with their writer processes left three rows in meta, for good,
    one more at each such kill. A collector's writer process now removes, as it starts, the
    rows of collectors known to be gone, and keeps the rest: a collector running on the same
    store, one of another machine or container, one written before marks named their owner."""
    store = tmp_path / "t.db"
    running, running_port = start_collector(store)
    try:
        assert _export_one_span(running_port) == SpanExportResult.SUCCESS
        (running_mark,) = _marks(store)
        for _ in range(3):
            killed, port = start_collector(store)
            assert _export_one_span(port) == SpanExportResult.SUCCESS
            _kill_with_its_writer(killed)
        assert len(_marks(store)) >= 2  # the last one killed is still there at least
        elsewhere = new_mark().replace(" pid:[", " pid:[9")  # another PID namespace
        unnamed = f"{PREFIX}0123456789abcdef"  # from a tracekit before owners were named
        conn = sqlite3.connect(store)
        with conn:
            conn.executemany("INSERT INTO meta VALUES (?, 1)", [(elsewhere,), (unnamed,)])
        conn.close()
        starting, port = start_collector(store)
        try:
            assert _export_one_span(port) == SpanExportResult.SUCCESS  # after its cleanup
            new = _marks(store) - {running_mark, elsewhere, unnamed}
            assert len(new) == 1  # its own: the three killed collectors' rows are gone
            assert {running_mark, elsewhere, unnamed} <= _marks(store)
            assert _export_one_span(running_port) == SpanExportResult.SUCCESS  # unharmed
        finally:
            _stop(starting)
    finally:
        _stop(running)
    assert _marks(store) == {elsewhere, unnamed}  # each stopped collector removed its own
