"""The applications and middleware stacks that bench/middleware_bench.py compares.

Every stack wraps its own instance of the same Starlette (ASGI) or Flask (WSGI) app serving
``/orders/{order_id}`` (own instances, because tracekit connects to a Flask app's signals and those
receivers must not run in the other stacks).
Spans from OpenTelemetry's contrib middleware and from tracekit go through one real SDK
``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter that discards what it receives,
so the measured cost is the instrumentation's, not an exporter's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

ORDER_ID = "8271"
PATH = f"/orders/{ORDER_ID}"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# A UUID4, so asgi-correlation-id's default validator accepts it just as tracekit's does.
CORRELATION_ID = "6f1c9a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
HEADER = "X-Correlation-ID"
REFERENCE = "reference: SDK span only"


class DiscardingExporter(SpanExporter):
    """Accepts every batch and keeps only a count and the last span, for the sanity checks."""

    def __init__(self) -> None:
        self.exported = 0
        self.last: ReadableSpan | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        self.last = spans[-1] if spans else self.last
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class Stack:
    """One middleware arrangement: ``app`` is the ASGI or WSGI callable the benchmark calls."""

    name: str
    app: Callable[..., Any]
    exporter: DiscardingExporter | None = None
    provider: TracerProvider | None = None
    registry: Any = None


# The attributes tracekit's SERVER span carries, for the reference stacks below.
_SPAN_ATTRIBUTES: dict[str, str | int] = {
    "url.scheme": "http",
    "server.address": "orders.internal",
    "server.port": 8000,
    "network.protocol.version": "1.1",
    "http.request.method": "GET",
    "url.path": PATH,
    "correlation.id": CORRELATION_ID,
}


class _SpanOnly:
    """Reference, not a product: only the SDK work any tracing middleware pays for one request.

    One SERVER span with tracekit's nine attributes, made current while the app runs; no
    context extraction, no correlation ID, no metrics. Its added cost is the floor under every
    tracing stack in the table.
    """

    def __init__(self, app: Callable[..., Any], provider: TracerProvider) -> None:
        self.app = app
        self.tracer = provider.get_tracer("bench.reference")

    def _open(self) -> tuple[Any, object]:
        span = self.tracer.start_span("GET", kind=SpanKind.SERVER, attributes=_SPAN_ATTRIBUTES)
        return span, otel_context.attach(trace.set_span_in_context(span))

    def _close(self, span: Any, token: object) -> None:
        span.set_attributes({"http.route": "/orders/{order_id}", "http.response.status_code": 200})
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]


class AsgiSpanOnly(_SpanOnly):
    """``_SpanOnly`` as ASGI middleware."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        span, token = self._open()
        try:
            await self.app(scope, receive, send)
        finally:
            self._close(span, token)


class WsgiSpanOnly(_SpanOnly):
    """``_SpanOnly`` as WSGI middleware (the body is read before the span ends)."""

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        span, token = self._open()
        try:
            return list(self.app(environ, start_response))
        finally:
            self._close(span, token)


def traced_provider() -> tuple[TracerProvider, DiscardingExporter]:
    """A fresh SDK provider (default sampler) exporting in batches to a discarding exporter."""
    exporter = DiscardingExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


def starlette_app() -> Any:
    """A bare Starlette app with one parameterised route answering a small JSON body."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def order(request: Any) -> JSONResponse:
        return JSONResponse({"id": request.path_params["order_id"], "status": "shipped"})

    return Starlette(routes=[Route("/orders/{order_id}", order)])


def flask_app() -> Any:
    """A bare Flask app with one parameterised route answering a small JSON body."""
    from flask import Flask

    app = Flask("bench")

    @app.get("/orders/<order_id>")
    def order(order_id: str) -> dict[str, str]:
        return {"id": order_id, "status": "shipped"}

    return app


def asgi_stacks() -> list[Stack]:
    """Bare Starlette, asgi-correlation-id, OpenTelemetry's ASGI middleware, tracekit x2, floor."""
    from asgi_correlation_id import CorrelationIdMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from tracekit.asgi import TracekitMiddleware

    app = starlette_app
    return [
        Stack("bare Starlette", app()),
        Stack("asgi-correlation-id", CorrelationIdMiddleware(app(), header_name=HEADER)),
        *_tracing_stacks("ASGI", app, OpenTelemetryMiddleware, TracekitMiddleware, AsgiSpanOnly),
    ]


def wsgi_stacks() -> list[Stack]:
    """Bare Flask, OpenTelemetry's WSGI middleware, tracekit correlation-only and full, floor."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    from tracekit.wsgi import TracekitMiddleware

    def app() -> Any:
        return flask_app().wsgi_app  # what ``app.wsgi_app = Middleware(app.wsgi_app)`` wraps

    return [
        Stack("bare Flask", app()),
        *_tracing_stacks("WSGI", app, OpenTelemetryMiddleware, TracekitMiddleware, WsgiSpanOnly),
    ]


def _tracing_stacks(
    kind: str,
    app: Callable[[], Any],
    opentelemetry: Callable[..., Any],
    tracekit: Callable[..., Any],
    span_only: type[_SpanOnly],
) -> list[Stack]:
    """The stacks both suites compare, each around an ``app()`` of its own: OpenTelemetry's
    ``kind`` middleware, tracekit correlation-only and full, and the reference floor. Each
    traced stack has a provider of its own."""
    from prometheus_client import CollectorRegistry

    otel_provider, otel_exporter = traced_provider()
    tk_provider, tk_exporter = traced_provider()
    ref_provider, ref_exporter = traced_provider()
    registry = CollectorRegistry()
    return [
        Stack(
            f"OpenTelemetry {kind}",
            opentelemetry(app(), tracer_provider=otel_provider),
            otel_exporter,
            otel_provider,
        ),
        Stack("tracekit correlation", tracekit(app(), mode="correlation")),
        Stack(
            "tracekit full",
            tracekit(app(), tracer_provider=tk_provider, registry=registry),
            tk_exporter,
            tk_provider,
            registry,
        ),
        Stack(REFERENCE, span_only(app(), ref_provider), ref_exporter, ref_provider),
    ]
