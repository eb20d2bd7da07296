"""HTTP/1.1 pipelining under uvicorn: the server starts a connection's next request from inside
the send that completes the previous response, so that request's task copies whatever context
is current there. None of the previous request's correlation ID or span may reach it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import asgi


async def answer(request: Request) -> PlainTextResponse:
    """A response, then background work (a 5xx's span waits for the application)."""
    status = int(request.query_params.get("status", "200"))
    return PlainTextResponse("done", status, background=BackgroundTask(asyncio.sleep, 0.3))


async def whose(request: Request) -> PlainTextResponse:
    """The correlation ID and trace this request sees."""
    span_context = trace.get_current_span().get_span_context()
    return PlainTextResponse(f"id={tracekit.correlation_id()} trace={span_context.trace_id:032x}")


def _app(**options: Any) -> Starlette:
    app = Starlette(
        routes=[Route("/answer", answer), Route("/whose", whose), Route("/health", whose)]
    )
    app.add_middleware(asgi.TracekitMiddleware, excluded_urls=["^/health$"], **options)
    return app


def _pipelined(url: str, first: str, second: str) -> list[str]:
    """Send two requests in one write on one connection; return the two responses' texts."""
    port = int(url.rsplit(":", 1)[1])
    wire = (
        f"GET {first} HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: first-request\r\n\r\n"
        f"GET {second} HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: second-request\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(wire.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = received.decode().split("HTTP/1.1 ")[1:]
    assert len(responses) == 2, received
    return responses


@pytest.mark.parametrize("mode", ["full", "correlation"])
@pytest.mark.parametrize("status", ["200", "503"])
def test_a_request_pipelined_after_another_sees_nothing_of_it(
    serve_asgi: Any, mode: str, status: str
) -> None:
    """An excluded health check pipelined after a traced request ran with that request's
    correlation ID and trace current (its logs carried another request's ID)."""
    url = serve_asgi(_app(mode=mode))
    first, second = _pipelined(url, f"/answer?status={status}", "/health")
    assert first.startswith(status) and "x-correlation-id: first-request" in first.lower()
    assert second.startswith("200") and second.endswith("id=None trace=" + "0" * 32)


def test_a_request_pipelined_after_a_5xx_at_work_is_a_request_of_its_own(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """After a 503 whose application was still at work (its span waits for it), the next
    pipelined request was taken for a part of the 503's: it got the 503's correlation ID on
    its response and in its handler, and no span or metrics of its own."""
    url = serve_asgi(_app())
    first, second = _pipelined(url, "/answer?status=503", "/whose")
    assert "x-correlation-id: first-request" in first.lower()
    assert "x-correlation-id: second-request" in second.lower()
    assert "x-correlation-id: first-request" not in second.lower()
    assert "id=second-request" in second

    spans = wait_for_spans(2)
    by_id = {span.attributes["correlation.id"]: span for span in spans}
    assert sorted(by_id) == ["first-request", "second-request"] and len(spans) == 2
    assert by_id["second-request"].name == "GET /whose"
    assert by_id["second-request"].parent is None
    assert f"trace={by_id['second-request'].context.trace_id:032x}" in second
