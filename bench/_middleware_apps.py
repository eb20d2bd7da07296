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

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

ORDER_ID = "8271"
PATH = f"/orders/{ORDER_ID}"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# A UUID4, so asgi-correlation-id's default validator accepts it just as tracekit's does.
CORRELATION_ID = "6f1c9a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
HEADER = "X-Correlation-ID"


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
    """Bare Starlette, asgi-correlation-id, OpenTelemetry's ASGI middleware, tracekit x2."""
    from asgi_correlation_id import CorrelationIdMiddleware
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from prometheus_client import CollectorRegistry

    from tracekit.asgi import TracekitMiddleware

    app = starlette_app
    otel_provider, otel_exporter = traced_provider()
    tk_provider, tk_exporter = traced_provider()
    registry = CollectorRegistry()
    return [
        Stack("bare Starlette", app()),
        Stack("asgi-correlation-id", CorrelationIdMiddleware(app(), header_name=HEADER)),
        Stack(
            "OpenTelemetry ASGI",
            OpenTelemetryMiddleware(app(), tracer_provider=otel_provider),
            otel_exporter,
            otel_provider,
        ),
        Stack("tracekit correlation", TracekitMiddleware(app(), mode="correlation")),
        Stack(
            "tracekit full",
            TracekitMiddleware(app(), tracer_provider=tk_provider, registry=registry),
            tk_exporter,
            tk_provider,
            registry,
        ),
    ]


def wsgi_stacks() -> list[Stack]:
    """Bare Flask, OpenTelemetry's WSGI middleware, tracekit correlation-only and full."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from prometheus_client import CollectorRegistry

    from tracekit.wsgi import TracekitMiddleware

    def app() -> Any:
        return flask_app().wsgi_app  # what ``app.wsgi_app = Middleware(app.wsgi_app)`` wraps

    otel_provider, otel_exporter = traced_provider()
    tk_provider, tk_exporter = traced_provider()
    registry = CollectorRegistry()
    return [
        Stack("bare Flask", app()),
        Stack(
            "OpenTelemetry WSGI",
            OpenTelemetryMiddleware(app(), tracer_provider=otel_provider),
            otel_exporter,
            otel_provider,
        ),
        Stack("tracekit correlation", TracekitMiddleware(app(), mode="correlation")),
        Stack(
            "tracekit full",
            TracekitMiddleware(app(), tracer_provider=tk_provider, registry=registry),
            tk_exporter,
            tk_provider,
            registry,
        ),
    ]
