"""A caller leaving the sampling decision to this hop (B3 without a sampling state, X-Ray's
``Sampled=?``), against real uvicorn and werkzeug servers whose middleware has a tracer provider
of its own: the decision is that provider's sampler's, taken for the request's span, with its
name and attributes, so a sampler's rules apply to it as to any new trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import requests
from conditions import wait_for
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from tracekit import asgi, propagation, wsgi

TRACE, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
DEFERRED = {
    "b3": {"b3": f"{TRACE}-{PARENT}"},
    "b3multi": {"X-B3-TraceId": TRACE, "X-B3-SpanId": PARENT},
    "xray": {"X-Amzn-Trace-Id": f"Root=1-{TRACE[:8]}-{TRACE[8:]};Parent={PARENT};Sampled=?"},
}


class NoHealthChecks(Sampler):
    """Records every new trace but a health check's, told by the span's ``url.path``."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (attributes or {}).get("url.path") == "/health":
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "NoHealthChecks"


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
    provider = TracerProvider(sampler=ParentBased(NoHealthChecks()))
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
