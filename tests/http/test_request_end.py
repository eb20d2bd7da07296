"""When a request's span and metrics end: with its response, whatever the application does after
it or however its exception misbehaves. Real uvicorn and werkzeug servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
from conditions import wait_for
from fastapi import BackgroundTasks, Depends, FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import asgi, wsgi

DURATION = "http_server_request_duration_seconds"
ACTIVE = "http_server_active_requests"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no words for this")


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"service_name": "shop", "service_version": "",
                                            **labels})  # fmt: skip


@pytest.mark.parametrize("status", [200, 503])
def test_background_work_after_the_response_is_not_the_requests(
    status: int, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """Starlette runs BackgroundTasks after the response and before the app returns: the span,
    the duration and the in-flight gauge end with the response, not 1.5 s later. A 5xx too,
    whose span waits for the exception that may follow it: it counted the background task as
    request time and stayed in flight through it (p99 inflated during incidents)."""

    async def signup(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", status, background=BackgroundTask(time.sleep, 1.5))

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/signup", signup, methods=["POST"])])
    url = serve_asgi(asgi.TracekitMiddleware(app, registry=registry, service_name="shop"))

    answered = time.monotonic()
    assert requests.post(url + "/signup", timeout=10).status_code == status
    wait_for(lambda: _value(registry, ACTIVE) == 0.0, 1.0, "no request in flight")
    assert time.monotonic() - answered < 1.0  # while the background task still sleeps
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 < 1.0
    labels = {"http_request_method": "POST", "http_route": "/signup",
              "http_response_status_code": str(status),
              "error_type": "" if status < 500 else str(status)}  # fmt: skip
    assert (_value(registry, DURATION + "_sum", **labels) or 2.0) < 1.0
    time.sleep(1.7)  # the task ends: nothing more is recorded for the request
    assert _value(registry, DURATION + "_count", **labels) == 1.0


def _starlette_raising() -> Starlette:
    async def boom(request: Request) -> PlainTextResponse:
        raise Unprintable()

    return Starlette(routes=[Route("/boom", boom)])


def _wsgi_raising(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise Unprintable()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_an_exception_that_cannot_be_printed_still_ends_the_span_and_the_request(
    kind: str, serve_asgi: Any, serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    caplog.set_level(logging.CRITICAL)  # the servers log the exception
    registry = CollectorRegistry()
    if kind == "asgi":
        app = asgi.TracekitMiddleware(_starlette_raising(), registry=registry, service_name="shop")
        url = serve_asgi(app)
    else:
        app = wsgi.TracekitMiddleware(_wsgi_raising, registry=registry, service_name="shop")
        url = serve_wsgi(app)

    for _ in range(2):
        assert requests.get(url + "/boom", timeout=10).status_code == 500

    spans = [s for s in wait_for_spans(2) if s.kind is SpanKind.SERVER]
    assert len(spans) == 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None and span.attributes["error.type"] == "Unprintable"
        (event,) = [e for e in span.events if e.name == "exception"]
        assert "Unprintable" in str((event.attributes or {}).get("exception.stacktrace"))
    assert _value(registry, ACTIVE) == 0.0
    counted = sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == DURATION + "_count"
    )
    assert counted == 2.0


def test_a_background_task_that_fails_is_a_failed_span_under_the_request(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """The response went out fine (the request's span says so); the exception after it gets a
    span of its own, a child of the request's, from the response to the failure."""
    caplog.set_level(logging.CRITICAL)  # uvicorn logs the exception

    def send_mail() -> None:
        time.sleep(0.2)
        raise LookupError("no such mailbox")

    async def signup(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(send_mail))

    app = Starlette(routes=[Route("/signup", signup, methods=["POST"])])
    url = serve_asgi(asgi.TracekitMiddleware(app, registry=CollectorRegistry()))

    assert requests.post(url + "/signup", timeout=10).status_code == 200
    spans = wait_for_spans(2)
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (after,) = [s for s in spans if s.kind is SpanKind.INTERNAL]
    assert request.status.status_code is StatusCode.UNSET
    assert after.name == "POST /signup after response"
    assert after.parent is not None and after.parent.span_id == request.context.span_id
    assert after.status.status_code is StatusCode.ERROR
    assert after.status.description == "LookupError: no such mailbox"
    assert after.start_time is not None and request.end_time is not None
    assert after.start_time >= request.end_time - 1_000_000  # from the response on
    assert after.attributes is not None and after.attributes["correlation.id"]


def _fastapi_failing_after_its_response(how: str) -> FastAPI:
    """A FastAPI app whose ``POST /signup`` answers, then fails: in a background task, or in
    the exit code of a dependency with ``yield``, which FastAPI runs after the response."""
    app = FastAPI()  # native telemetry on: FastAPI opens the SERVER span itself

    def send_mail() -> None:
        time.sleep(0.2)
        raise LookupError("no such mailbox")

    async def mailer() -> AsyncIterator[None]:
        yield
        send_mail()

    if how == "background task":

        @app.post("/signup")
        async def signup(tasks: BackgroundTasks) -> dict[str, str]:
            tasks.add_task(send_mail)
            return {"ok": "yes"}

    else:

        @app.post("/signup")
        async def signup_with_mailer(mailed: None = Depends(mailer)) -> dict[str, str]:
            return {"ok": "yes"}

    return app


@pytest.mark.parametrize("how", ["background task", "dependency exit"])
def test_a_failure_after_fastapis_own_span_ended_is_a_failed_span_under_it(
    how: str, serve_asgi: Any, spans: Any, caplog: Any
) -> None:
    """FastAPI's own SERVER span (tracekit adds none of its own) ends with the response; what
    the app raised after it was in no span at all: ``tracekit trace`` showed a request without
    an error, and uvicorn's log line alone had it."""
    caplog.set_level(logging.CRITICAL)  # uvicorn logs the exception
    app = _fastapi_failing_after_its_response(how)
    app.add_middleware(asgi.TracekitMiddleware, registry=CollectorRegistry())
    url = serve_asgi(app)

    assert requests.post(url + "/signup", timeout=10).status_code == 200

    def after_response() -> list[Any]:
        return [s for s in spans.get_finished_spans() if s.name.endswith("after response")]

    (after,) = wait_for(after_response, 5, "the span after the response")
    (request,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert after.name == "POST /signup after response"
    assert after.parent is not None and after.parent.span_id == request.context.span_id
    assert after.status.status_code is StatusCode.ERROR
    assert after.status.description == "LookupError: no such mailbox"
    assert request.attributes is not None and after.attributes is not None
    assert after.attributes["correlation.id"] == request.attributes["correlation.id"]


async def _with_trailers(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"x", "more_body": False})
    await asyncio.sleep(0.3)  # computing the trailers (a checksum of the body)
    await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]})


def test_a_response_with_trailers_ends_with_its_trailers(spans: Any) -> None:
    """The ASGI HTTP trailers extension: the response ends with its last trailers message, not
    its body. No server installed here speaks the extension (uvicorn does not), so the
    middleware is driven the way a server that does would drive it."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "scheme": "http",
             "server": ("127.0.0.1", 80), "http_version": "1.1",
             "extensions": {"http.response.trailers": {}}}  # fmt: skip
    middleware = asgi.TracekitMiddleware(_with_trailers, registry=CollectorRegistry())
    asyncio.run(middleware(scope, receive, send))

    (span,) = spans.get_finished_spans()
    assert [m["type"] for m in sent][-1] == "http.response.trailers"
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 >= 0.3


def _drive(app: Any, mode: str, extension: str, cid: str) -> list[tuple[str, str | None]]:
    """Run one request through tracekit around ``app`` as a server offering the ASGI
    ``extension`` would (none installed here does): each message sent, with the correlation ID
    current as it was sent."""
    seen: list[tuple[str, str | None]] = []

    async def send(message: dict[str, Any]) -> None:
        seen.append((message["type"], tracekit.correlation_id()))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "scheme": "http",
             "headers": [(b"x-correlation-id", cid.encode())], "http_version": "1.1",
             "extensions": {extension: {}}}  # fmt: skip
    middleware = asgi.TracekitMiddleware(app, registry=CollectorRegistry(), mode=mode)
    asyncio.run(middleware(scope, receive, send))
    return seen


@pytest.mark.parametrize("mode", ["full", "correlation"])
def test_only_the_last_trailers_go_in_the_context_the_request_arrived_in(mode: str) -> None:
    """The message that completes a response is sent in the context the request arrived in
    (a server starts a pipelined request inside it); with trailers announced that is the last
    trailers message, not the body. Correlation-only mode took the body for it."""
    assert _drive(_with_trailers, mode, "http.response.trailers", "trailed-1") == [
        ("http.response.start", "trailed-1"),
        ("http.response.body", "trailed-1"),
        ("http.response.trailers", None),
    ]


async def _file_by_path(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.pathsend", "path": "/srv/report.pdf"})
    await asyncio.sleep(0.3)  # work after answering


@pytest.mark.parametrize("mode", ["full", "correlation"])
def test_a_file_sent_by_path_completes_the_response(mode: str, spans: Any) -> None:
    """The ASGI path send extension (Starlette's ``FileResponse`` uses it where the server
    offers it): the file's message completes the response, sent in the context the request
    arrived in, and the request's span ends with it, not with the work after it."""
    assert _drive(_file_by_path, mode, "http.response.pathsend", "filed-1") == [
        ("http.response.start", "filed-1"),
        ("http.response.pathsend", None),
    ]
    if mode == "full":
        (span,) = spans.get_finished_spans()
        assert span.end_time is not None and span.start_time is not None
        assert (span.end_time - span.start_time) / 1e9 < 0.3


async def _stream_failing_midway(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first rows\n", "more_body": True})
    raise ConnectionResetError("the database went away mid-export")


def _wsgi_stream_failing_midway(environ: Any, start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])

    def rows() -> Any:
        yield b"first rows\n"
        raise ConnectionResetError("the database went away mid-export")

    return rows()


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_stream_that_fails_after_its_first_chunk_is_a_failed_request_in_the_metrics(
    kind: str, serve_asgi: Any, serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """The 200 had gone out, then the body failed: the client got a cut response, the span
    said ERROR, and the duration histogram counted a plain 200, so dashboards and canary error
    rates never saw it. It now carries ``error_type`` (OpenTelemetry's ``error.type``: the
    exception's class), beside the status that was sent."""
    caplog.set_level(logging.CRITICAL)  # the servers log the exception
    registry = CollectorRegistry()
    if kind == "asgi":
        app = asgi.TracekitMiddleware(_stream_failing_midway, registry=registry,
                                      service_name="shop")  # fmt: skip
        url = serve_asgi(app)
    else:
        app = wsgi.TracekitMiddleware(_wsgi_stream_failing_midway, registry=registry,
                                      service_name="shop")  # fmt: skip
        url = serve_wsgi(app)

    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url + "/export", timeout=10).raise_for_status()

    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.status.status_code is StatusCode.ERROR
    wait_for(lambda: _value(registry, ACTIVE) == 0.0, 5.0, "the request ended")
    labels = {"http_request_method": "GET", "http_route": "_unmatched",
              "http_response_status_code": "200"}  # fmt: skip
    assert _value(registry, DURATION + "_count", **labels, error_type="ConnectionResetError") == 1
    assert _value(registry, DURATION + "_count", **labels, error_type="") is None
