"""A request whose span cannot start (a host sampler that raises) keeps its correlation ID,
and leaves nothing of itself behind on the server's thread: a WSGI server (wsgiref, gunicorn's
gthread workers) runs the next requests on that same thread."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
from loopback import serve_in_thread
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

import tracekit
from tracekit import asgi, wsgi


class RaisesOnSomePaths(Sampler):
    """A host's sampler with a bug that shows on one path only."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
    ) -> SamplingResult:
        if (attributes or {}).get("url.path") == "/broken":
            raise KeyError("tenant")
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, kind, attributes, links)

    def get_description(self) -> str:
        return "RaisesOnSomePaths"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answers with the correlation ID its log lines would carry ('-' for none)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(tracekit.correlation_id() or "-").encode()]


@pytest.fixture
def url() -> Iterator[str]:
    provider = TracerProvider(sampler=RaisesOnSomePaths())
    middleware = wsgi.TracekitMiddleware(app, tracer_provider=provider, excluded_urls=["^/health$"])
    server = make_server("127.0.0.1", 0, middleware, handler_class=_Quiet)  # one thread
    stop = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        stop()


def test_a_failed_start_leaves_no_id_for_the_next_requests(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def get(path: str, cid: str | None = None) -> str:
        headers = {"X-Correlation-ID": cid} if cid else {}
        response = requests.get(url + path, headers=headers, timeout=10)
        if cid:
            assert response.headers["X-Correlation-ID"] == cid
        return response.text

    with caplog.at_level(logging.WARNING, logger="tracekit"):
        assert get("/broken", "order-1") == "order-1"  # served, its ID on lines and answer
    assert "request span failed (KeyError)" in caplog.text
    assert get("/health") == "-"  # not order-1's
    assert get("/orders", "order-2") == "order-2"
    assert get("/health") == "-"


def test_an_asgi_request_whose_span_fails_keeps_its_id(
    serve_asgi: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def answer(scope: Any, receive: Any, send: Any) -> None:
        body = (tracekit.correlation_id() or "-").encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    provider = TracerProvider(sampler=RaisesOnSomePaths())
    base = serve_asgi(asgi.TracekitMiddleware(answer, tracer_provider=provider))
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        response = requests.get(
            base + "/broken", headers={"X-Correlation-ID": "order-3"}, timeout=10
        )
    assert response.text == "order-3"
    assert response.headers["X-Correlation-ID"] == "order-3"
