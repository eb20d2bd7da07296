"""``propagate.inject(headers, context=saved)``: work a request saved for later (an outbox, a
batch sender) sends with the request's context it kept. The trace headers came from that
context, the correlation ID from whatever was current, usually nothing: the next hop continued
the request's trace under no correlation ID. A real server on loopback."""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from rawhttp import send

from tracekit import correlation, wsgi


def test_a_saved_request_context_sends_the_requests_id_later(serve_wsgi: Any) -> None:
    saved: list[Context] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        saved.append(otel_context.get_current())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"queued"]

    url = serve_wsgi(wsgi.TracekitMiddleware(app))
    assert send(url + "/orders", [b"X-Correlation-ID: outbox-1"]).status == 200

    sent: dict[str, str] = {}
    later = threading.Thread(target=propagate.inject, args=(sent,), kwargs={"context": saved[0]})
    later.start()
    later.join()

    assert "traceparent" in sent
    assert sent["x-correlation-id"] == "outbox-1"
    assert "correlation.id=outbox-1" in sent["baggage"].split(",")


def test_the_id_set_where_inject_runs_still_wins(serve_wsgi: Any) -> None:
    """Inside a request, ``set_correlation_id`` (or the request's own ID) is what goes out,
    whatever context the call passes."""
    sent: dict[str, str] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        token = correlation.set_correlation_id("changed-2")
        try:
            propagate.inject(sent, context=otel_context.get_current())
        finally:
            correlation.reset_correlation_id(token)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    url = serve_wsgi(wsgi.TracekitMiddleware(app))
    assert send(url + "/orders", [b"X-Correlation-ID: first-2"]).status == 200
    assert sent["x-correlation-id"] == "changed-2"
