"""A link to an empty span context costs the link, never its span or the batch.

The OpenTelemetry specification says an SDK SHOULD record a link whose span context is invalid
(all-zero ids) when it carries attributes, and the Python SDK does. An all-zero (or empty) trace
or span id names no link target: the receiver drops that link and stores the span, whatever the
encoding, and ``tracekit trace`` shows the request.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Link
from tests.receiver._collector_process import start_collector
from tests.receiver.conftest import post

from tracekit.receiver import Receiver
from tracekit.store import Store
from tracekit.store.exporter import StoreSpanExporter

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
TRACE = "0af7651916cd43dd8448eb211c80319c"


def _spans_with_an_empty_link(correlation_id: str) -> list[object]:
    """A root and a child linking to the invalid context, as the Python SDK records them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.links")
    correlation = {"correlation.id": correlation_id}
    with tracer.start_as_current_span("POST /checkout", attributes=correlation):
        link = Link(INVALID_SPAN_CONTEXT, {"reason": "no upstream context"})
        with tracer.start_as_current_span("reserve stock", links=[link]):
            pass
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    assert [len(s.links) for s in spans] == [1, 0]  # the SDK kept the empty link
    return spans


def _trace_json(store: Path, query: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [TRACEKIT, "trace", query, "--store", str(store), "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _shows_both_spans_and_no_link(path: dict) -> None:  # type: ignore[type-arg]
    assert sorted(s["name"] for s in path["spans"]) == ["POST /checkout", "reserve stock"]
    assert len(path["trace_ids"]) == 1 and path["trace_ids"][0] != "0" * 32
    assert [s["links"] for s in path["spans"]] == [[], []]


def test_python_sdk_http_exporter_with_an_empty_link(tmp_path: Path) -> None:
    store = tmp_path / "links.db"
    collector, port = start_collector(store)
    try:
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        assert exporter.export(_spans_with_an_empty_link("req-link-1")) == SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(30) == 0
    _shows_both_spans_and_no_link(_trace_json(store, "req-link-1"))


def test_store_exporter_with_an_empty_link(tmp_path: Path) -> None:
    store = tmp_path / "links.db"
    exporter = StoreSpanExporter(store)
    assert exporter.export(_spans_with_an_empty_link("req-link-2")) == SpanExportResult.SUCCESS
    exporter.shutdown()
    _shows_both_spans_and_no_link(_trace_json(store, "req-link-2"))


@pytest.mark.parametrize("link_id", ["", "0" * 32], ids=["empty", "zeros"])
def test_json_span_with_an_empty_link_is_stored(
    link_id: str, receiver: Receiver, reader: Store
) -> None:
    empty_link = {"traceId": link_id, "spanId": link_id[:16], "attributes": [
        {"key": "reason", "value": {"stringValue": "no upstream context"}}]}  # fmt: skip
    real_link = {"traceId": TRACE, "spanId": "00f067aa0ba902b7"}
    spans = [
        {"traceId": TRACE, "spanId": f"{n:016x}", "name": f"s{n}", "links": links,
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000000000001"}
        for n, links in enumerate([[], [empty_link], [empty_link, real_link]], start=1)
    ]  # fmt: skip
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    reply = post(receiver, "/v1/traces", body, {"Content-Type": "application/json"})
    assert (reply.status, reply.body) == (200, b"{}")
    stored = {s.name: s for s in reader.spans_by_trace_ids([TRACE])}
    assert sorted(stored) == ["s1", "s2", "s3"]
    assert stored["s2"].links == []
    assert [(ln.trace_id, ln.span_id) for ln in stored["s3"].links] == [(TRACE, "00f067aa0ba902b7")]


def test_a_link_id_of_the_wrong_length_is_still_malformed(receiver: Receiver) -> None:
    span = {"traceId": TRACE, "spanId": "00f067aa0ba902b7", "name": "s",
            "links": [{"traceId": "abcd", "spanId": "00f067aa0ba902b7"}]}  # fmt: skip
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()
    assert post(receiver, "/v1/traces", body, {"Content-Type": "application/json"}).status == 400
