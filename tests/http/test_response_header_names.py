"""``response_header`` names the header the correlation ID is echoed in and sent on. A header
HTTP itself acts on was taken: ``Content-Length`` made uvicorn drop every streamed response
(the client read nothing), ``Transfer-Encoding`` every response, and ``Connection`` sent the ID
as a connection option. ``traceparent`` (or another trace context header) was written after
the trace headers on every outgoing request, so the next service got the correlation ID for its
parent and began a new trace. Such a name is refused as the application starts, naming the
option."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tracekit import asgi, wsgi
from tracekit.config import ConfigError

PROTOCOL_HEADERS = ["Content-Length", "transfer-encoding", "Connection", "Host", "Upgrade"]


async def _streamed(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"hello "
        yield b"world"

    return StreamingResponse(chunks())


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("name", PROTOCOL_HEADERS)
def test_a_protocol_header_is_refused_as_the_asgi_app_starts(name: str) -> None:
    with pytest.raises(ConfigError, match="response_header"):
        asgi.TracekitMiddleware(Starlette(routes=[Route("/", _streamed)]), response_header=name)


@pytest.mark.parametrize("name", ["Content-Length", "Content-Type"])
def test_a_body_header_is_refused_as_the_wsgi_app_starts(name: str) -> None:
    with pytest.raises(ConfigError, match="TRACEKIT_RESPONSE_HEADER"):
        wsgi.TracekitMiddleware(_wsgi_app, response_header=name)


def test_an_ordinary_name_echoes_on_a_streamed_response(serve_asgi: Any) -> None:
    app = Starlette(routes=[Route("/", _streamed)])
    url = serve_asgi(asgi.TracekitMiddleware(app, response_header="X-Request-ID"))

    response = requests.get(url + "/", headers={"X-Request-ID": "order-42"}, timeout=5)

    assert response.text == "hello world"
    assert response.headers["X-Request-ID"] == "order-42"


@pytest.mark.parametrize(
    "name", ["traceparent", "Tracestate", "baggage", "b3", "X-B3-TraceId", "X-Amzn-Trace-Id"]
)
def test_a_trace_context_header_is_refused_as_the_app_starts(name: str) -> None:
    with pytest.raises(ConfigError, match="trace context"):
        asgi.TracekitMiddleware(Starlette(routes=[Route("/", _streamed)]), response_header=name)
