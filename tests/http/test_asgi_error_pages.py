"""The correlation ID on the 500 that Starlette and FastAPI send for an unhandled exception, with
tracekit's middleware where users put it (``add_middleware``, inside the framework's
``ServerErrorMiddleware``) and outermost; real uvicorn on loopback."""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode
from rawhttp import send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tracekit import asgi


async def crash(request: Request) -> PlainTextResponse:
    raise RuntimeError("card service timed out")


async def fine(request: Request) -> PlainTextResponse:
    return PlainTextResponse("fine")


def starlette_app(**options: Any) -> Starlette:
    app = Starlette(routes=[Route("/crash", crash), Route("/fine", fine)])
    app.add_middleware(asgi.TracekitMiddleware, **options)
    return app


def fastapi_app(tracing: bool) -> FastAPI:
    app = FastAPI(telemetry={"tracing": tracing})
    app.add_api_route("/crash", crash)
    app.add_api_route("/fine", fine)
    app.add_middleware(asgi.TracekitMiddleware)
    return app


def custom_error_page() -> Starlette:
    async def apologise(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("sorry", status_code=500, headers={"X-Correlation-ID": "own"})

    app = Starlette(routes=[Route("/crash", crash)], exception_handlers={500: apologise})
    app.add_middleware(asgi.TracekitMiddleware)
    return app


APPS = {
    "starlette": starlette_app,
    "starlette-correlation-only": lambda: starlette_app(mode="correlation"),
    "starlette-outermost": lambda: asgi.TracekitMiddleware(
        Starlette(routes=[Route("/crash", crash), Route("/fine", fine)])
    ),
    "fastapi-native-telemetry": lambda: fastapi_app(tracing=True),
    "fastapi-without-telemetry": lambda: fastapi_app(tracing=False),
}


@pytest.fixture(autouse=True)
def quiet_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="uvicorn.error")


@pytest.mark.parametrize("kind", sorted(APPS))
def test_unhandled_exception_500_echoes_the_correlation_id(
    kind: str, serve_asgi: Any, wait_for_spans: Any
) -> None:
    url = serve_asgi(APPS[kind]())

    crashed = send(url + "/crash", [b"X-Correlation-ID: ticket-500"])
    minted = send(url + "/crash", [])
    fine_response = send(url + "/fine", [b"X-Request-ID: ok-1"])

    assert crashed.status == 500
    assert crashed.body == b"Internal Server Error"  # the framework's page, unchanged
    assert crashed.header("X-Correlation-ID") == "ticket-500"
    assert [name.lower() for name, _ in crashed.headers].count("x-correlation-id") == 1
    assert minted.status == 500 and len(minted.header("X-Correlation-ID") or "") == 32
    assert fine_response.header("X-Correlation-ID") == "ok-1"
    if kind == "starlette-correlation-only":
        return
    server = [s for s in wait_for_spans(3) if s.kind is SpanKind.SERVER]
    failed = [s for s in server if s.attributes.get("correlation.id") == "ticket-500"]
    assert len(failed) == 1 and failed[0].status.status_code is StatusCode.ERROR


def test_the_apps_own_500_handler_keeps_its_header(serve_asgi: Any) -> None:
    response = send(serve_asgi(custom_error_page()) + "/crash", [b"X-Correlation-ID: mine-1"])
    assert response.status == 500 and response.body == b"sorry"
    assert [v for k, v in response.headers if k.lower() == "x-correlation-id"] == ["own"]


def test_requests_tracekit_did_not_see_get_no_header(serve_asgi: Any) -> None:
    app = Starlette(routes=[Route("/crash", crash)])  # no tracekit middleware in this app
    asgi.TracekitMiddleware(Starlette())  # ...though tracekit is in the process
    response = send(serve_asgi(app) + "/crash", [b"X-Correlation-ID: nobody"])
    assert response.status == 500 and response.header("X-Correlation-ID") is None


def test_the_debug_page_echoes_the_correlation_id(serve_asgi: Any) -> None:
    app = Starlette(debug=True, routes=[Route("/crash", crash)])
    app.add_middleware(asgi.TracekitMiddleware)
    response = send(serve_asgi(app) + "/crash", [b"X-Correlation-ID: debug-7"])
    assert response.status == 500 and b"card service timed out" in response.body
    assert response.header("X-Correlation-ID") == "debug-7"


def _apologise_sync(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("sorry (sync)", status_code=500)


async def _apologise(request: Request, exc: Exception, words: str) -> PlainTextResponse:
    return PlainTextResponse(words, status_code=500)


HANDLERS = {
    "async": functools.partial(_apologise, words="sorry (async)"),
    "sync": _apologise_sync,
}


@pytest.mark.parametrize("kind", sorted(HANDLERS))
def test_the_apps_own_500_page_gets_the_header_it_did_not_set(kind: str, serve_asgi: Any) -> None:
    """An app's 500 handler, async (here a partial, as Starlette accepts) or sync (Starlette
    runs it in its thread pool), answers with its own page, which gets the correlation ID."""
    app = Starlette(routes=[Route("/crash", crash)], exception_handlers={500: HANDLERS[kind]})
    app.add_middleware(asgi.TracekitMiddleware)
    response = send(serve_asgi(app) + "/crash", [b"X-Correlation-ID: handled-5"])
    assert response.status == 500 and response.body == f"sorry ({kind})".encode()
    assert response.header("X-Correlation-ID") == "handled-5"
