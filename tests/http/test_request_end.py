"""When a request's span and metrics end: with its response, whatever the application does after
it or however its exception misbehaves. Real uvicorn and werkzeug servers on loopback."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import requests
from conditions import wait_for
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tracekit import asgi, wsgi

DURATION = "http_server_request_duration_seconds"
ACTIVE = "http_server_active_requests"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no words for this")


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"service_name": "shop", "service_version": "",
                                            **labels})  # fmt: skip


def test_background_work_after_the_response_is_not_the_requests(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """Starlette runs BackgroundTasks after the response and before the app returns: the span,
    the duration and the in-flight gauge end with the response, not 1.5 s later."""

    async def signup(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", background=BackgroundTask(time.sleep, 1.5))

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/signup", signup, methods=["POST"])])
    url = serve_asgi(asgi.TracekitMiddleware(app, registry=registry, service_name="shop"))

    answered = time.monotonic()
    assert requests.post(url + "/signup", timeout=10).status_code == 200
    wait_for(lambda: _value(registry, ACTIVE) == 0.0, 1.0, "no request in flight")
    assert time.monotonic() - answered < 1.0  # while the background task still sleeps
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 < 1.0
    labels = {"http_request_method": "POST", "http_route": "/signup",
              "http_response_status_code": "200"}  # fmt: skip
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
