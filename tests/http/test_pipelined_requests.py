"""HTTP/1.1 pipelining and keep-alive under uvicorn: the server starts a connection's next request
from inside the send that completes the previous response, or from inside the receive that
resumed reading the connection, so that request's task copies whatever context is current
there. None of the previous request's correlation ID or span may reach it."""

from __future__ import annotations

import asyncio
import socket
import time
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


async def upload(request: Request) -> PlainTextResponse:
    """Read the request's body, as an upload does, once more than 64 KiB of it have come."""
    await asyncio.sleep(0.2)
    return PlainTextResponse(str(len(await request.body())))


def _app(**options: Any) -> Starlette:
    routes = [Route("/answer", answer), Route("/whose", whose), Route("/health", whose),
              Route("/upload", upload, methods=["POST"])]  # fmt: skip
    app = Starlette(routes=routes)
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


@pytest.mark.parametrize("mode", ["full", "correlation"])
def test_a_request_after_an_upload_on_one_connection_sees_nothing_of_it(
    serve_asgi: Any, mode: str
) -> None:
    """uvicorn stops reading a connection while more than 64 KiB of a body wait for the app,
    and reads on when the app asks for the body: from inside the app's receive, in the upload's
    context, which every later request on that keep-alive connection then started in (an
    excluded health check saw the upload's correlation ID and trace)."""
    port = int(serve_asgi(_app(mode=mode)).rsplit(":", 1)[1])
    upload_head = (b"POST /upload HTTP/1.1\r\nHost: x\r\nX-Correlation-ID: upload-1\r\n"
                   b"Content-Length: 210000\r\n\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(upload_head + b"x" * 200_000)  # uvicorn stops reading: the app sleeps
        time.sleep(0.5)  # the app has asked for the body, and has the first 200,000 bytes
        sock.sendall(b"x" * 10_000)  # the rest, read on in the app's receive
        assert _response(reader) == "210000"
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection
        assert _response(reader) == "id=None trace=" + "0" * 32


def _response(reader: Any) -> str:
    """The body of the next response read from ``reader`` (one with a Content-Length)."""
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return str(reader.read(length).decode())
