"""A caller's baggage that names ``correlation.id`` twice (a proxy appending its own member to
the client's) with no correlation header: every reader of the caller's ID takes the first
member, as tracekit's HTTP middleware always did, so one message or request has one ID whether
an HTTP server, a queue consumer (full or correlation-only mode) or a contrib instrumentation
reads it."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from rawhttp import send

import tracekit
from tracekit import messaging, wsgi

BAGGAGE = "correlation.id=client-1,tenant=a,correlation.id=proxy-2"


def test_the_http_middleware_takes_the_first(serve_wsgi: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(tracekit.correlation_id() or "none").encode()]

    response = send(serve_wsgi(wsgi.TracekitMiddleware(app)), [f"baggage: {BAGGAGE}".encode()])
    assert response.body == b"client-1"


@pytest.mark.parametrize("mode", ["full", "correlation"])
def test_a_queue_consumer_takes_the_first(
    mode: str, spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", mode)
    with messaging.consume({"baggage": BAGGAGE}, system="test", destination="q"):
        seen = tracekit.correlation_id()
    assert seen == "client-1"


def test_the_global_extract_takes_the_first() -> None:
    token = otel_context.attach(propagate.extract({"baggage": BAGGAGE}))
    try:
        assert tracekit.correlation_id() == "client-1"
    finally:
        otel_context.detach(token)
