"""A client sending two different spans with one span id in a trace: the store keeps the first
and ``tracekit trace`` warns of it, but the operator running ``tracekit collector`` saw nothing
on its log. It now says so, once a minute at most, naming the id (hex the store made, never the
client's text).

A real ``tracekit collector`` process; spans through the OpenTelemetry SDK's OTLP/HTTP exporter.
"""

from __future__ import annotations

import signal
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from tests.receiver._collector_process import start_collector
from tests.store.test_span_id_clashes import (
    SHARED,
    TRACE_ID,
    OneTrace,
    ReusedIds,
    SentTwice,
    send_checkout,
)


def collector_log(store: Path, exporter: type[OTLPSpanExporter], ids: object) -> list[str]:
    """What the collector wrote on stderr while ``send_checkout`` ran against it, then stopped."""
    process, port = start_collector(store)
    try:
        send_checkout(f"http://127.0.0.1:{port}", exporter, ids)  # type: ignore[arg-type]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    return stderr.splitlines()


def test_the_collector_logs_a_span_id_sent_for_two_spans(tmp_path: Path) -> None:
    lines = collector_log(tmp_path / "store.db", OTLPSpanExporter, ReusedIds())
    assert lines == [
        f"tracekit receiver: span id {SHARED} of trace {TRACE_ID:032x} was sent for two"
        " different spans (a client reusing span ids): only the first is stored (1 such id in"
        " this batch)"
    ]


def test_a_span_exported_again_is_not_logged(tmp_path: Path) -> None:
    assert collector_log(tmp_path / "store.db", SentTwice, OneTrace()) == []
