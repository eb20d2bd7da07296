"""Requests whose wall clock stepped back mid-span (NTP), as an OpenTelemetry SDK exports them
(an end before the start) through a real receiver into the store ``tracekit canary`` reads.

The store keeps such a span lasting 0 ms (``tracekit.clock_stepped_back_ns``). OpenTelemetry
holds an end before the start invalid: how long the request took is unknown, not zero.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store
from tracekit_cli.main import cli

T0 = 1_700_000_000_000_000_000
WINDOW = ("--start", "2023-11-14T22:13:20+00:00", "--end", "2023-11-14T22:43:20+00:00")
REQUESTS = 60
STEPPED = 40  # of the canary's requests: their clock went back 1 s while they ran


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    started = Receiver(Store(tmp_path / "tracekit.db"), ReceiverConfig(port=0))
    started.start()
    yield started
    started.stop()


def serve(receiver: Receiver, version: str, ms: float, stepped: int) -> None:
    """``REQUESTS`` GET /orders/{id} of ``version`` lasting about ``ms``, the first ``stepped``
    of them ending a second before they started, exported by the SDK over OTLP/HTTP."""
    resource = Resource.create({"service.name": "orders", "service.version": version})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    rng = random.Random(version)
    attributes = {"http.request.method": "GET", "http.route": "/orders/{id}",
                  "http.response.status_code": 200}  # fmt: skip
    for number in range(REQUESTS):
        start = T0 + rng.randrange(1_000 * 10**9)
        took = int(ms * 1e6 * rng.uniform(0.9, 1.1))
        end = start - 10**9 if number < stepped else start + took
        span = tracer.start_span("GET /orders/{id}", kind=SpanKind.SERVER, start_time=start,
                                 attributes=attributes)  # fmt: skip
        span.end(end_time=end)
    provider.shutdown()


def test_a_request_whose_clock_stepped_back_is_counted_but_not_timed(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A canary 50% slower, most of whose requests' clocks stepped back: they were timed at
    0 ms: the canary read p50 0.0 ms, its latency passed, and the verdict was inconclusive
    (exit 4) where it is a fail."""
    serve(receiver, "1.0", 100, stepped=0)
    serve(receiver, "1.1", 150, stepped=STEPPED)

    result = CliRunner().invoke(
        cli, ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1",
              "--store", str(tmp_path / "tracekit.db"), *WINDOW, "--format", "json"],
    )  # fmt: skip

    doc = json.loads(result.stdout)
    latency = next(m for m in doc["metrics"] if m["name"] == "latency")
    canary = latency["summary"]["canary"]
    assert (canary["requests"], canary["errors"]) == (REQUESTS, 0)  # still counted, not failed
    assert canary["p50_ms"] > 130
    assert result.exit_code == 1, result.stdout
