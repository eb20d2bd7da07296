"""OpenTelemetry's contrib instrumentations used beside tracekit, without tracekit's middleware:
they call the global propagator's ``extract``, which brings the caller's correlation ID into the
context they start their spans under. The work under the contrib SERVER span (the handler's log
lines, its spans, its outgoing calls) carries the caller's ID; the SERVER span itself is left to
tracekit's middleware (see test_enclosing_server_span.py). Real werkzeug servers on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.trace import SpanKind

import tracekit


def echo_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seen = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def calling_app(downstream: str) -> Any:
    """A plain WSGI app that reports its correlation ID and what its downstream call sent."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with trace.get_tracer("app").start_as_current_span("load order"):
            sent = requests.get(downstream, timeout=10).json()
        seen = {"correlation_id": tracekit.correlation_id(), "downstream": sent}
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(seen).encode()]

    return OpenTelemetryMiddleware(app)


@pytest.fixture
def contrib_requests() -> Iterator[None]:
    RequestsInstrumentor().instrument()
    yield
    RequestsInstrumentor().uninstrument()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Correlation-ID": "contrib-7"}, "contrib-7"),
        ({"baggage": "correlation.id=from-baggage,tenant=a"}, "from-baggage"),
        # as tracekit's middleware picks: the header over the baggage member
        ({"X-Correlation-ID": "hdr-1", "baggage": "correlation.id=bag-1"}, "hdr-1"),
    ],
)
def test_work_under_a_contrib_server_span_carries_the_callers_id(
    headers: dict[str, str],
    expected: str,
    serve_wsgi: Any,
    spans: Any,
    contrib_requests: None,
) -> None:
    downstream = serve_wsgi(echo_app) + "/stock"
    url = serve_wsgi(calling_app(downstream)) + "/orders"

    seen = requests.get(url, headers=headers, timeout=10).json()

    assert seen["correlation_id"] == expected
    assert seen["downstream"]["x-correlation-id"] == expected
    assert f"correlation.id={expected}" in seen["downstream"]["baggage"].split(",")
    finished = spans.get_finished_spans()
    (handler,) = [s for s in finished if s.name == "load order"]
    assert handler.attributes["correlation.id"] == expected
    (client,) = [s for s in finished if s.parent and s.parent.span_id == handler.context.span_id]
    assert client.kind is SpanKind.CLIENT
    assert client.attributes["correlation.id"] == expected


def test_an_invalid_or_repeated_id_is_not_carried(serve_wsgi: Any, contrib_requests: None) -> None:
    downstream = serve_wsgi(echo_app) + "/stock"
    url = serve_wsgi(calling_app(downstream)) + "/orders"

    bad = requests.get(url, headers={"X-Correlation-ID": "a b<script>"}, timeout=10).json()

    assert bad["correlation_id"] is None
    assert "x-correlation-id" not in bad["downstream"]


def test_a_consumer_span_started_under_the_extracted_context_carries_the_id(spans: Any) -> None:
    """What the contrib Celery and pika instrumentations do: start the CONSUMER span with
    ``context=extract(message headers)`` without attaching that context."""
    context = propagate.extract({"X-Correlation-ID": "task-5"})
    span = trace.get_tracer("worker").start_span("run", context=context, kind=SpanKind.CONSUMER)
    span.end()

    (finished,) = spans.get_finished_spans()
    assert finished.attributes["correlation.id"] == "task-5"


AFTER_INIT = """
import tracekit
from opentelemetry import context, propagate

tracekit.init("edge", exporter="none")
for headers in ({"X-Request-ID": "req-4"}, {"x-request-id": "req-5", "X-Trace-Tag": "t"},
                {"X-Correlation-ID": "cid-6", "X-Request-ID": "req-6"}):
    token = context.attach(propagate.extract(headers))
    print(tracekit.correlation_id())
    context.detach(token)
tracekit.shutdown()
"""


def test_the_global_extract_accepts_the_configured_request_headers() -> None:
    """The headers tracekit's middleware accepts (``correlation_headers``, by default
    X-Correlation-ID then X-Request-ID) are the ones the global extract reads, in that order."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AFTER_INIT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["req-4", "req-5", "cid-6"]
