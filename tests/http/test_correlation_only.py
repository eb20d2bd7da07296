"""Correlation-only mode (``mode="correlation"``): the ID in context and on the response, and no
spans or metrics, for teams that only want IDs in their logs. Real servers on loopback."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import flask
import pytest
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from rawhttp import send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import tracekit
from tracekit import asgi, config, logs, wsgi

NEW_ID = re.compile(r"[0-9a-f]{32}")


def asgi_app(registry: CollectorRegistry) -> Any:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(tracekit.correlation_id() or "none")

    async def fail(request: Request) -> PlainTextResponse:
        raise RuntimeError("handler failed")

    app = Starlette(routes=[Route("/hello", hello), Route("/fail", fail)])
    return asgi.TracekitMiddleware(app, mode="correlation", registry=registry)


def wsgi_app(registry: CollectorRegistry) -> Any:
    app = flask.Flask("correlation_only")

    @app.get("/hello")
    def hello() -> str:
        return tracekit.correlation_id() or "none"

    app.wsgi_app = wsgi.TracekitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, mode="correlation", registry=registry
    )
    return app


@pytest.fixture(params=["asgi", "wsgi"])
def served(request: pytest.FixtureRequest, serve_asgi: Any, serve_wsgi: Any) -> tuple[str, Any]:
    registry = CollectorRegistry()
    if request.param == "asgi":
        return serve_asgi(asgi_app(registry)) + "/hello", registry
    return serve_wsgi(wsgi_app(registry)) + "/hello", registry


CASES: list[tuple[str, list[bytes], Callable[[str], bool]]] = [
    ("valid header kept", [b"X-Correlation-ID: order-77"], lambda cid: cid == "order-77"),
    ("request id accepted", [b"X-Request-ID: req-5"], lambda cid: cid == "req-5"),
    ("from baggage", [b"baggage: correlation.id=bag-9"], lambda cid: cid == "bag-9"),
    ("invalid replaced", [b"X-Correlation-ID: <script>"], lambda cid: NEW_ID.fullmatch(cid)),
    ("absent generated", [], lambda cid: NEW_ID.fullmatch(cid) is not None),
]


@pytest.mark.parametrize(("case", "lines", "expected"), CASES, ids=[c[0] for c in CASES])
def test_id_in_handler_and_response_without_spans_or_metrics(
    served: tuple[str, CollectorRegistry],
    spans: Any,
    case: str,
    lines: list[bytes],
    expected: Callable[[str], bool],
) -> None:
    url, registry = served
    response = send(url, lines)

    assert response.status == 200
    cid = response.body.decode()
    assert expected(cid), cid
    assert response.header("X-Correlation-ID") == cid
    assert not [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert not [m for m in registry.collect() if m.name.startswith("http_server")]


def test_asgi_handler_exception_propagates_and_the_id_does_not_leak(
    serve_asgi: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # uvicorn logs the handler's exception
    url = serve_asgi(asgi_app(CollectorRegistry()))

    failed = send(url + "/fail", [b"X-Correlation-ID: first-1"])
    after = send(url + "/hello", [])

    assert failed.status == 500
    assert NEW_ID.fullmatch(after.body.decode()), "the next request does not inherit first-1"


def test_asgi_streamed_response_arrives_whole(serve_asgi: Any) -> None:
    """uvicorn announces ASGI 2.3, so Starlette streams a body from a task of its own: the
    last send came in another context than the request's, restoring the request's context
    there raised into the application, and the client got a body cut short."""

    async def chunks() -> Any:
        yield b"id="
        yield (tracekit.correlation_id() or "none").encode()

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    app = Starlette(routes=[Route("/stream", stream)])
    url = serve_asgi(asgi.TracekitMiddleware(app, mode="correlation"))

    response = send(url + "/stream", [b"X-Correlation-ID: streamed-1"])

    assert response.raw.endswith(b"0\r\n\r\n"), response.raw  # the last chunk came
    assert (response.status, response.body) == (200, b"id=streamed-1")
    assert response.header("X-Correlation-ID") == "streamed-1"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_otel_sdk_disabled_leaves_correlation_ids_alone(
    kind: str, serve_asgi: Any, serve_wsgi: Any, spans: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_SDK_DISABLED=true, OpenTelemetry's switch that "takes precedence over all other
    configuration": the middleware still recorded spans on the process's provider and counted
    requests in its metrics. Now it carries the correlation ID and nothing else, as in
    correlation-only mode; the variable is read as the SDKs read it (``TRUE`` too)."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    registry = CollectorRegistry()

    async def hello_asgi(request: Request) -> PlainTextResponse:
        return PlainTextResponse(tracekit.correlation_id() or "none")

    def hello_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(tracekit.correlation_id() or "none").encode()]

    if kind == "asgi":
        app = Starlette(routes=[Route("/hello", hello_asgi)])
        url = serve_asgi(asgi.TracekitMiddleware(app, registry=registry))
    else:
        url = serve_wsgi(wsgi.TracekitMiddleware(hello_wsgi, registry=registry))
    response = send(url + "/hello", [b"X-Correlation-ID: order-78"])

    assert (response.status, response.body) == (200, b"order-78")
    assert response.header("X-Correlation-ID") == "order-78"
    assert spans.get_finished_spans() == ()
    assert not [m for m in registry.collect() if m.name.startswith("http_server")]


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_work_handed_to_a_pool_with_the_otel_context_logs_the_id(
    kind: str, serve_asgi: Any, serve_wsgi: Any
) -> None:
    """OpenTelemetry's threading instrumentation carries only OpenTelemetry's context into a
    pool thread (``context.get_current()`` at submit, attached in the thread). In full mode the
    ID rides in it; in correlation-only mode it rode nowhere, and the pool's lines showed
    none."""
    factory = logging.getLogRecordFactory()  # put back after: tracekit's stays installed
    logs.install(config.resolve("shop", environ={}, export_logs=False))
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter("%(correlation_id)s %(message)s"))
    log = logging.getLogger("shop.pool")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    pool = ThreadPoolExecutor(1)

    def log_with(carried: Context) -> None:
        token = otel_context.attach(carried)
        try:
            log.info("pool work")
        finally:
            otel_context.detach(token)

    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        pool.submit(log_with, otel_context.get_current()).result()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    async def hello_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # the server's lifespan: nothing to start
        pool.submit(log_with, otel_context.get_current()).result()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    if kind == "asgi":
        url = serve_asgi(asgi.TracekitMiddleware(hello_asgi, mode="correlation"))
    else:
        url = serve_wsgi(wsgi.TracekitMiddleware(hello, mode="correlation"))
    try:
        assert send(url + "/", [b"X-Correlation-ID: pooled-3"]).status == 200
        pool.submit(log.info, "pool idle").result()
    finally:
        pool.shutdown()
        log.removeHandler(handler)
        logs.uninstall()
        logging.setLogRecordFactory(factory)
    assert output.getvalue().splitlines() == ["pooled-3 pool work", "- pool idle"]
