"""One request through ASGI (Starlette) -> WSGI (Flask) -> ASGI (FastAPI), real servers on loopback.

The first hop calls the second with httpx (async), the second calls the third with requests. The
test client speaks raw HTTP so that it adds no span and no header of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import flask
import httpx
import pytest
import requests
from fastapi import FastAPI
from opentelemetry import baggage
from opentelemetry.trace import SpanKind
from rawhttp import send
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracekit
import tracekit.flask
from tracekit import asgi

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
INCOMING_TRACEPARENT = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"

Chain = Callable[..., str]


def third_service() -> FastAPI:
    # FastAPI's own spans off, so the three SERVER spans are tracekit's (with them on, tracekit
    # stamps FastAPI's SERVER span instead: test_enclosing_server_span.py).
    app = FastAPI(telemetry={"tracing": False})

    @app.get("/c/{name}")
    async def report(name: str) -> dict[str, Any]:
        return {"correlation_id": tracekit.correlation_id(), "baggage": dict(baggage.get_all())}

    app.add_middleware(asgi.TracekitMiddleware)
    return app


def second_service(third: str) -> flask.Flask:
    app = flask.Flask("second")

    @app.get("/b/<int:number>")
    def relay(number: int) -> Any:
        downstream = requests.get(f"{third}/c/item{number}", timeout=10)
        return {
            "correlation_id": tracekit.correlation_id(),
            "downstream": downstream.json(),
            "downstream_header": downstream.headers.get("X-Correlation-ID"),
        }

    return tracekit.flask.init_app(app)


def first_service(second: str, **options: Any) -> Starlette:
    async def entry(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            downstream = await client.get(f"{second}/b/7", timeout=10)
        return JSONResponse(
            {
                "correlation_id": tracekit.correlation_id(),
                "downstream": downstream.json(),
                "downstream_header": downstream.headers.get("X-Correlation-ID"),
            }
        )

    return Starlette(
        routes=[Route("/a/{slug}", entry)],
        middleware=[Middleware(asgi.TracekitMiddleware, **options)],
    )


@pytest.fixture
def chain(serve_asgi: Any, serve_wsgi: Any, http_clients: None) -> Chain:
    """Start the three services; returns a function building the front door's URL."""

    def start(**front_options: Any) -> str:
        third = serve_asgi(third_service())
        second = serve_wsgi(second_service(third))
        return serve_asgi(first_service(second, **front_options)) + "/a/x"

    return start


def test_one_trace_one_correlation_id_across_three_services(chain: Chain, wait_for_spans):
    response = send(chain(), [b"X-Correlation-ID: order-4711"])
    body = json.loads(response.body)

    assert response.status == 200
    assert response.header("X-Correlation-ID") == "order-4711"
    assert body["correlation_id"] == body["downstream"]["correlation_id"] == "order-4711"
    assert body["downstream_header"] == body["downstream"]["downstream_header"] == "order-4711"
    assert body["downstream"]["downstream"]["correlation_id"] == "order-4711"
    finished = wait_for_spans(5)
    kinds = sorted(span.kind.name for span in finished)
    assert kinds == ["CLIENT", "CLIENT", "SERVER", "SERVER", "SERVER"]
    assert len({span.context.trace_id for span in finished}) == 1
    assert {span.attributes["correlation.id"] for span in finished} == {"order-4711"}
    names = {span.name for span in finished if span.kind is SpanKind.SERVER}
    assert names == {"GET /a/{slug}", "GET /b/{number}", "GET /c/{name}"}
    _assert_single_chain(finished)


def _assert_single_chain(finished: list[Any]) -> None:
    """Every span but the root has its parent among the spans: one connected tree."""
    ids = {span.context.span_id for span in finished}
    roots = [span for span in finished if span.parent is None or span.parent.span_id not in ids]
    assert len(roots) == 1


def test_incoming_traceparent_is_continued(chain: Chain, wait_for_spans):
    response = send(chain(), [b"traceparent: " + INCOMING_TRACEPARENT.encode()])

    assert response.status == 200
    finished = wait_for_spans(5)
    assert {f"{span.context.trace_id:032x}" for span in finished} == {INCOMING_TRACE}
    (front,) = [s for s in finished if s.name == "GET /a/{slug}"]
    assert f"{front.parent.span_id:016x}" == INCOMING_SPAN
    assert front.parent.is_remote
    generated = response.header("X-Correlation-ID")
    assert generated and len(generated) == 32
    assert {span.attributes["correlation.id"] for span in finished} == {generated}


def test_public_endpoint_starts_new_root_with_link_and_drops_baggage(chain: Chain, wait_for_spans):
    response = send(
        chain(public_endpoint=True),
        [
            b"traceparent: " + INCOMING_TRACEPARENT.encode(),
            b"baggage: user=mallory,correlation.id=from-baggage",
            b"X-Correlation-ID: edge-req-1",
        ],
    )
    body = json.loads(response.body)

    assert response.header("X-Correlation-ID") == "edge-req-1"
    finished = wait_for_spans(5)
    (front,) = [s for s in finished if s.name == "GET /a/{slug}"]
    assert front.parent is None
    assert f"{front.context.trace_id:032x}" != INCOMING_TRACE
    assert [f"{link.context.trace_id:032x}" for link in front.links] == [INCOMING_TRACE]
    assert f"{front.links[0].context.span_id:016x}" == INCOMING_SPAN
    assert len({span.context.trace_id for span in finished}) == 1
    third_saw = body["downstream"]["downstream"]["baggage"]
    assert "user" not in third_saw
    assert third_saw == {"correlation.id": "edge-req-1"}
    assert {span.attributes["correlation.id"] for span in finished} == {"edge-req-1"}
