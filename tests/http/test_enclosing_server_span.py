"""When a framework or OpenTelemetry's contrib middleware already opened the request's SERVER span
outside tracekit's middleware, tracekit stamps that span instead of adding a second one."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import SpanKind
from rawhttp import send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import asgi


def server_spans(spans: Any) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


def test_fastapi_native_telemetry_gives_one_server_span_with_the_correlation_id(
    serve_asgi: Any, spans: Any
) -> None:
    app = FastAPI()  # native telemetry on: FastAPI opens the SERVER span itself

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        return {"correlation_id": tracekit.correlation_id()}

    app.add_middleware(asgi.TracekitMiddleware)
    response = send(serve_asgi(app) + "/orders/7", [b"X-Correlation-ID: fa-1"])

    assert response.status == 200
    assert response.header("X-Correlation-ID") == "fa-1"
    time.sleep(0.1)
    (server,) = server_spans(spans)
    assert server.name == "GET /orders/{order_id}"
    assert server.attributes["correlation.id"] == "fa-1"


def test_contrib_asgi_middleware_outside_tracekit_gives_one_server_span(
    serve_asgi: Any, spans: Any
) -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(tracekit.correlation_id() or "")

    inner = asgi.TracekitMiddleware(Starlette(routes=[Route("/hello", hello)]))
    response = send(serve_asgi(OpenTelemetryMiddleware(inner)) + "/hello", [b"X-Request-ID: r-9"])

    assert response.status == 200
    assert response.body == b"r-9"
    time.sleep(0.1)
    (server,) = server_spans(spans)
    assert server.attributes["correlation.id"] == "r-9"
