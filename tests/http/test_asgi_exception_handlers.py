"""A view's exception that the application's own Starlette or FastAPI exception handler answers.

Handlers for an exception class (``@app.exception_handler(DatabaseDown)``) run in Starlette's
``ExceptionMiddleware``, inside every ``add_middleware`` middleware: the exception never reached
tracekit's, and a handler answering with a 5xx left the span with ``error.type`` ``503`` and no
exception (the metrics likewise), so ``tracekit trace`` showed a 503 without its cause. One
answered with a 5xx is the server's error, recorded as an exception let out is; one answered
with a 4xx is the client's. ``HTTPException(503)`` is an answer, not an exception. Real uvicorn
on loopback; FastAPI opens the SERVER span itself, tracekit's middleware under Starlette.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from conditions import wait_for
from fastapi import FastAPI, HTTPException
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracekit import asgi

DURATION_COUNT = "http_server_request_duration_seconds_count"


class DatabaseDown(Exception):
    """The server's trouble: answered with a 503."""


class Refused(ValueError):
    """The client's mistake: answered with a 400."""


async def order(request: Request) -> JSONResponse:
    order_id = request.path_params["order_id"]
    if order_id == "1":
        raise DatabaseDown("primary unreachable")
    if order_id == "2":
        raise Refused("order 2 is not yours")
    raise HTTPException(503, "maintenance")


async def answer(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"error": type(error).__name__}, 400 if isinstance(error, Refused) else 503)


def starlette_app() -> Starlette:
    handlers: Any = {DatabaseDown: answer, Refused: answer}
    return Starlette(routes=[Route("/orders/{order_id}", order)], exception_handlers=handlers)


def fastapi_app() -> FastAPI:
    app = FastAPI()  # native telemetry on: FastAPI opens the SERVER span itself
    app.add_exception_handler(DatabaseDown, answer)
    app.add_exception_handler(Refused, answer)
    app.add_api_route("/orders/{order_id}", order)
    return app


APPS = {"starlette": starlette_app, "fastapi": fastapi_app}


def _get(kind: str, order_id: int, serve_asgi: Any, spans: Any) -> tuple[Any, CollectorRegistry]:
    """The SERVER span of ``GET /orders/{order_id}`` and the middleware's registry."""
    app, registry = APPS[kind](), CollectorRegistry()
    app.add_middleware(asgi.TracekitMiddleware, registry=registry)
    response = requests.get(f"{serve_asgi(app)}/orders/{order_id}", timeout=10)
    assert response.status_code == (400 if order_id == 2 else 503)
    return _server_span(spans), registry


def _server_span(spans: Any) -> Any:
    def server() -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]

    (span,) = wait_for(server, 5, "the SERVER span")
    return span


def _count(registry: CollectorRegistry, status: str, error_type: str) -> float | None:
    labels = {"http_request_method": "GET", "http_route": "/orders/{order_id}",
              "http_response_status_code": status, "error_type": error_type,
              "service_name": "unknown_service:python", "service_version": ""}  # fmt: skip
    return registry.get_sample_value(DURATION_COUNT, labels)


@pytest.mark.parametrize("kind", sorted(APPS))
def test_an_exception_a_handler_answers_with_a_5xx_is_recorded(
    kind: str, serve_asgi: Any, spans: Any
) -> None:
    span, registry = _get(kind, 1, serve_asgi, spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 503
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.message"] == "primary unreachable"
    if kind == "starlette":  # tracekit's own span; FastAPI names the error of its own span
        assert span.status.description == "DatabaseDown: primary unreachable"
        assert span.attributes["error.type"] == "DatabaseDown"
    assert _count(registry, "503", span.attributes["error.type"]) == 1.0  # as on the span


@pytest.mark.parametrize("kind", sorted(APPS))
@pytest.mark.parametrize(
    ("order_id", "status", "error_type"),
    [(2, "400", ""),  # answered with a 4xx: the client's error
     (3, "503", "503")],  # HTTPException(503): an answer, not an exception
    ids=["client-error", "http-exception"],
)  # fmt: skip
def test_no_exception_is_recorded_for_an_answer(
    kind: str, order_id: int, status: str, error_type: str, serve_asgi: Any, spans: Any
) -> None:
    span, registry = _get(kind, order_id, serve_asgi, spans)
    assert span.attributes.get("error.type", "") == error_type
    assert (span.status.status_code is StatusCode.ERROR) == bool(error_type)
    assert not [e for e in span.events if e.name == "exception"]
    assert _count(registry, status, error_type) == 1.0
