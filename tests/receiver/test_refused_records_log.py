"""Records refused from an export that was otherwise stored (a partial success): OpenTelemetry
Python's exporters, over HTTP and gRPC, read no answer to a success and log nothing, so the
collector says it, at most once a minute."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

REFUSED = re.compile(
    r"tracekit collector: refused 1 of 2 spans from ipv4:127\.0\.0\.1:\d+: span start time"
    r" before 2000 or more than a day ahead \(told to the exporter, which may not log it\)"
)


@pytest.fixture
def both_sides(store_path: Path) -> Iterator[Receiver]:
    """A receiver serving OTLP/HTTP and OTLP/gRPC on free ports."""
    receiver = Receiver(Store(store_path), ReceiverConfig(port=0, grpc_port=0)).start()
    assert receiver.wait_ready(30)
    yield receiver
    receiver.stop()


def _exporter(receiver: Receiver, protocol: str) -> SpanExporter:
    if protocol == "http":
        return HttpExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    assert receiver.grpc_address is not None
    return GrpcExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_address[1]}", insecure=True)


def _send_one_good_one_dated_1970(exporter: SpanExporter) -> None:
    """Both spans in one batch, as a service whose clock was reset would send them."""
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    tracer.start_span("from 1970", start_time=1_000_000_000).end(end_time=2_000_000_000)
    tracer.start_span("GET /orders").end()
    provider.shutdown()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_records_refused_from_a_stored_export_are_logged(
    protocol: str, both_sides: Receiver, store_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the exporter logged nothing and neither did the collector: the span was
    missing from ``tracekit trace`` with no word anywhere."""
    with caplog.at_level(logging.WARNING):
        _send_one_good_one_dated_1970(_exporter(both_sides, protocol))
        _send_one_good_one_dated_1970(_exporter(both_sides, protocol))
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    exporters = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    reader = Store(store_path)
    try:
        stored = [span.name for span in reader.spans_since(time.time_ns() - 60 * 10**9)]
    finally:
        reader.close()
    assert stored == ["GET /orders", "GET /orders"]
    assert exporters == []  # the exporter says nothing of it
    assert len(refused) == 1, refused  # the second export's within the minute: not said again
    assert REFUSED.fullmatch(refused[0]), refused
