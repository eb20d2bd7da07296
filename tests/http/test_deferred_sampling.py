"""A caller leaving the sampling decision to this hop (B3 without a sampling state, X-Ray's
``Sampled=?``), against real uvicorn and werkzeug servers whose middleware has a tracer provider
of its own: the decision is that provider's sampler's, taken for the request's span, with its
name and attributes, so a sampler's rules apply to it as to any new trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from conditions import wait_for
from deferred_sampling import DEFERRED, PARENT, TRACE, DropsWhere
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from tracekit import asgi, propagation, wsgi


def traceparent_sent_on() -> bytes:
    """The traceparent a call made while handling the request would carry."""
    carrier: dict[str, str] = {}
    propagation.inject_trace_context(carrier)
    return carrier[propagation.TRACEPARENT].encode()


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": traceparent_sent_on()})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [traceparent_sent_on()]


@pytest.mark.parametrize("caller", sorted(DEFERRED))
@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_a_decision_left_to_this_hop_follows_the_middlewares_sampler_rules(
    caller: str,
    server: str,
    serve_asgi: Callable[[Any], str],
    serve_wsgi: Callable[[Any], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every such request was recorded and sent on as sampled, health checks included (3 of 3
    formats under either server): the decision was asked of the global provider's sampler
    before the request was known, with no span name and no attributes."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3,xray")
    recorded = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(DropsWhere("url.path", "/health")))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    if server == "uvicorn":
        base = serve_asgi(asgi.TracekitMiddleware(asgi_app, tracer_provider=provider))
    else:
        base = serve_wsgi(wsgi.TracekitMiddleware(wsgi_app, tracer_provider=provider))

    health = requests.get(base + "/health", headers=DEFERRED[caller], timeout=10)
    orders = requests.get(base + "/orders", headers=DEFERRED[caller], timeout=10)
    # (a span ends just after its response has gone)
    wait_for(lambda: len(recorded.get_finished_spans()) >= 1, 5, "a recorded span")
    time.sleep(0.05)  # a straggler would show up: "exactly one" means something
    provider.shutdown()

    assert health.text.startswith(f"00-{TRACE}-") and health.text.endswith("-00")
    assert orders.text.startswith(f"00-{TRACE}-") and orders.text.endswith("-01")
    stored = [(span.attributes or {}).get("url.path") for span in recorded.get_finished_spans()]
    assert stored == ["/orders"]
    (span,) = recorded.get_finished_spans()
    assert span.parent is not None and span.parent.span_id == int(PARENT, 16)
