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
from click.testing import CliRunner, Result
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


def serve(
    receiver: Receiver, version: str, ms: float, stepped: int, requests: int = REQUESTS
) -> None:
    """``requests`` GET /orders/{id} of ``version`` lasting about ``ms``, the first ``stepped``
    of them ending a second before they started, exported by the SDK over OTLP/HTTP."""
    resource = Resource.create({"service.name": "orders", "service.version": version})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop")
    rng = random.Random(version)
    attributes = {"http.request.method": "GET", "http.route": "/orders/{id}",
                  "http.response.status_code": 200}  # fmt: skip
    for number in range(requests):
        start = T0 + rng.randrange(1_000 * 10**9)
        took = int(ms * 1e6 * rng.uniform(0.9, 1.1))
        end = start - 10**9 if number < stepped else start + took
        span = tracer.start_span("GET /orders/{id}", kind=SpanKind.SERVER, start_time=start,
                                 attributes=attributes)  # fmt: skip
        span.end(end_time=end)
    provider.shutdown()


def canary(tmp_path: Path, output: str) -> Result:
    return CliRunner().invoke(
        cli, ["canary", "--service", "orders", "--baseline", "1.0", "--canary", "1.1",
              "--store", str(tmp_path / "tracekit.db"), *WINDOW, "--format", output],
    )  # fmt: skip


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


def test_a_baseline_whose_every_request_stepped_back_cannot_let_a_slower_canary_pass(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Its requests succeeded, untimed: it was read as a route the baseline only ever failed (a
    new endpoint, errors alone compared), and a canary three times slower passed, exit 0, with
    the warning 'none of version 1.0's 700 requests succeeded'."""
    serve(receiver, "1.0", 100, stepped=700, requests=700)
    serve(receiver, "1.1", 300, stepped=0, requests=700)

    result = canary(tmp_path, "json")

    doc = json.loads(result.stdout)
    assert {m["name"]: m["class"] for m in doc["metrics"]} == {
        "latency": "inconclusive", "tail_latency": "inconclusive", "error_rate": "pass"
    }  # fmt: skip
    assert not any("succeeded" in warning for warning in doc["warnings"])
    assert result.exit_code == 4, result.stdout


def test_a_canary_whose_every_request_stepped_back_is_not_said_to_have_failed(
    receiver: Receiver, tmp_path: Path
) -> None:
    """The latency checks said 'none of the canary's 60 requests succeeded' beside 0 errors."""
    serve(receiver, "1.0", 100, stepped=0)
    serve(receiver, "1.1", 100, stepped=REQUESTS)

    result = canary(tmp_path, "json")

    explanations = {m["name"]: m["explanation"] for m in json.loads(result.stdout)["metrics"]}
    assert explanations["latency"] == (
        "none of the canary's 60 requests was timed: 60 succeeded while the clock stepped back,"
        " 0 failed"
    )
    assert result.exit_code == 4, result.stdout
