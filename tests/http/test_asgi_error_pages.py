"""The correlation ID on the 500 that Starlette and FastAPI send for an unhandled exception, with
tracekit's middleware where users put it (``add_middleware``, inside the framework's
``ServerErrorMiddleware``) and outermost; real uvicorn on loopback."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from rawhttp import send
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

import tracekit
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


def _counted(registry: CollectorRegistry) -> list[tuple[str, str, str]]:
    """(route, status, error type) of each request the server metrics counted."""
    return [
        (s.labels["http_route"], s.labels["http_response_status_code"], s.labels["error_type"])
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "http_server_request_duration_seconds_count" and s.value
    ]


CRASH = [Route("/crash", crash)]


def _added(app: Starlette, registry: CollectorRegistry) -> Starlette:
    app.add_middleware(asgi.TracekitMiddleware, registry=registry)
    return app


ANSWERED_WITH_500 = {
    "starlette": lambda registry: starlette_app(registry=registry),
    "starlette-debug": lambda registry: _added(Starlette(debug=True, routes=CRASH), registry),
    "fastapi": lambda registry: _added(
        FastAPI(telemetry={"tracing": False}, routes=CRASH), registry
    ),
}


@pytest.mark.parametrize("kind", sorted(ANSWERED_WITH_500))
def test_an_unhandled_exception_is_the_500_its_app_answered(
    kind: str, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """Starlette's ``ServerErrorMiddleware`` answers outside ``add_middleware`` middleware: the
    client got a 500, while the span had no ``http.response.status_code`` and the metrics
    counted the request under an empty status. Both now say 500, the exception beside it."""
    registry = CollectorRegistry()
    response = send(serve_asgi(ANSWERED_WITH_500[kind](registry)) + "/crash", [])
    assert response.status == 500

    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.attributes.get("http.response.status_code") == 500
    assert span.status.status_code is StatusCode.ERROR
    assert _counted(registry) == [("/crash", "500", "RuntimeError")]


@pytest.mark.parametrize("error", [RuntimeError, OSError])
def test_a_bare_asgi_apps_exception_is_the_servers_500(
    error: type[Exception], serve_asgi: Any, wait_for_spans: Any
) -> None:
    """An ASGI app with no framework around it raises before responding: uvicorn answers with
    its own 500 (also for an ``OSError``), while the span had no ``http.response.status_code``
    and the metrics counted the request under an empty status, outside every 5xx panel."""

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise error("card service timed out")

    registry = CollectorRegistry()
    app = asgi.TracekitMiddleware(raw, registry=registry)
    assert send(serve_asgi(app) + "/crash", []).status == 500

    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.attributes.get("http.response.status_code") == 500
    assert span.attributes.get("error.type") == error.__name__
    assert [status for _, status, _ in _counted(registry)] == ["500"]


def _exits(error: BaseException) -> Any:
    async def view(request: Request) -> PlainTextResponse:
        raise error

    return view


def _bare_exit(error: BaseException) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    return app


EXITING = {  # the app, given the error its view raises and a registry
    "bare": lambda error, registry: asgi.TracekitMiddleware(_bare_exit(error), registry=registry),
    "starlette": lambda error, registry: _added(
        Starlette(routes=[Route("/crash", _exits(error))]), registry
    ),
    "fastapi": lambda error, registry: _added(
        FastAPI(telemetry={"tracing": False}, routes=[Route("/crash", _exits(error))]), registry
    ),
}


@pytest.mark.parametrize("kind", sorted(EXITING))
@pytest.mark.parametrize("error", [SystemExit(3), KeyboardInterrupt()])
def test_sys_exit_in_a_view_is_uvicorns_500(
    kind: str, error: BaseException, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """``sys.exit()`` (or a ``KeyboardInterrupt``) raised in a view: no framework catches it,
    and uvicorn answers it with its 500 as any exception. The span had no status and the
    metrics counted the request under an empty status, outside every 5xx panel."""
    registry = CollectorRegistry()
    assert send(serve_asgi(EXITING[kind](error, registry)) + "/crash", []).status == 500

    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.attributes.get("http.response.status_code") == 500
    assert span.status.status_code is StatusCode.ERROR
    assert [status for _, status, _ in _counted(registry)] == ["500"]


async def _unavailable(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("later", status_code=503)


def _unavailable_sync(request: Request, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("later", status_code=503)


async def _broken_handler(request: Request, exc: Exception) -> PlainTextResponse:
    raise LookupError("no such template")


def _fastapi_with_handler(registry: CollectorRegistry) -> FastAPI:
    app = _added(FastAPI(telemetry={"tracing": False}, routes=CRASH), registry)
    app.exception_handler(Exception)(_unavailable)  # FastAPI's documented decorator
    return app


async def _detail_only(request: Request, exc: Exception) -> dict[str, str]:
    return {"detail": "try later"}  # a common slip: what a FastAPI route may return


OWN_HANDLERS = {  # the app, and the status its client gets
    "starlette-async": (
        lambda registry: _added(
            Starlette(routes=CRASH, exception_handlers={Exception: _unavailable}), registry
        ),
        503,
    ),
    "starlette-sync": (
        lambda registry: _added(
            Starlette(routes=CRASH, exception_handlers={500: _unavailable_sync}), registry
        ),
        503,
    ),
    "fastapi": (_fastapi_with_handler, 503),
    "handler-returning-no-page": (  # Starlette cannot send it: uvicorn answers with its 500
        lambda registry: _added(
            Starlette(routes=CRASH, exception_handlers={Exception: _detail_only}), registry
        ),
        500,
    ),
    "handler-that-raises": (  # uvicorn answers then, with its own 500
        lambda registry: _added(
            Starlette(routes=CRASH, exception_handlers={Exception: _broken_handler}), registry
        ),
        500,
    ),
}


@pytest.mark.parametrize("kind", sorted(OWN_HANDLERS))
def test_the_status_of_an_apps_own_500_handler_is_recorded(
    kind: str, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """An app's own handler chooses the status of its page, sent by its ``ServerErrorMiddleware``
    outside this middleware, after the exception has gone through it: the span had no
    ``http.response.status_code`` and the metrics counted the request under an empty status,
    where the client got a 503. tracekit's wrapper of that handler sees the page's status."""
    registry = CollectorRegistry()
    make_app, status = OWN_HANDLERS[kind]
    assert send(serve_asgi(make_app(registry)) + "/crash", []).status == status
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.attributes.get("http.response.status_code") == status
    assert span.attributes.get("error.type") == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR
    assert _counted(registry) == [("/crash", str(status), "RuntimeError")]
    assert _in_flight(registry) == [0]


def _in_flight(registry: CollectorRegistry) -> list[float]:
    return [
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == "http_server_active_requests"
    ]


class _CatchAll:
    """A pure ASGI middleware answering any exception from within with a 503 of its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            await JSONResponse({"error": "unavailable"}, status_code=503)(scope, receive, send)


def _fastapi_caught_by_its_http_middleware(registry: CollectorRegistry) -> FastAPI:
    app = _added(FastAPI(telemetry={"tracing": False}, routes=CRASH), registry)

    @app.middleware("http")  # FastAPI's documented way, added after tracekit: outside it
    async def unavailable(request: Request, call_next: Any) -> Any:
        try:
            return await call_next(request)
        except Exception:
            return JSONResponse({"error": "unavailable"}, status_code=503)

    return app


def _starlette_caught_by_a_middleware_outside(registry: CollectorRegistry) -> Starlette:
    app = _added(Starlette(routes=CRASH), registry)
    app.add_middleware(_CatchAll)
    return app


ANSWERED_OUTSIDE_TRACEKIT = {
    "fastapi-http-middleware": _fastapi_caught_by_its_http_middleware,
    "starlette-asgi-middleware": _starlette_caught_by_a_middleware_outside,
}


@pytest.mark.parametrize("kind", sorted(ANSWERED_OUTSIDE_TRACEKIT))
def test_an_exception_a_middleware_outside_answers_is_not_taken_for_a_500(
    kind: str, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """A middleware added after tracekit's sits between it and ``ServerErrorMiddleware`` and
    answers the exception its own way (here a 503), unseen by tracekit: no status is recorded,
    where a 500 the client never got was."""
    registry = CollectorRegistry()
    app = ANSWERED_OUTSIDE_TRACEKIT[kind](registry)
    assert send(serve_asgi(app) + "/crash", []).status == 503
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert "http.response.status_code" not in (span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert _counted(registry) == [("/crash", "", "RuntimeError")]


def test_an_exception_of_a_wrapped_app_mounted_in_starlette_is_not_taken_for_a_500(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """tracekit wrapping an ASGI app that a Starlette app mounts: the exception goes on to the
    mounting app, whose own handler for it answers (here a 400): no status is recorded."""

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("no such card")

    async def bad_request(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("bad card", status_code=400)

    app = Starlette(
        routes=[Mount("/cards", app=asgi.TracekitMiddleware(raw))],
        exception_handlers={ValueError: bad_request},
    )
    assert send(serve_asgi(app) + "/cards/7", []).status == 400
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert "http.response.status_code" not in (span.attributes or {})
    assert span.attributes.get("error.type") == "ValueError"


async def _quoting_the_id(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(_ids_here(), status_code=500)


def _quoting_the_id_sync(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(_ids_here(), status_code=500)


def _ids_here() -> dict[str, str | None]:
    span = trace.get_current_span().get_span_context()
    return {
        "correlation_id": tracekit.correlation_id(),
        "trace_id": format(span.trace_id, "032x") if span.is_valid else None,
    }


@pytest.mark.parametrize("mode", ["full", "correlation"])
@pytest.mark.parametrize("handler", [_quoting_the_id, _quoting_the_id_sync])
def test_the_apps_own_500_handler_runs_in_its_request(
    mode: str, handler: Any, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """A handler whose error page quotes the request's correlation ID (for the user to give
    support) ran after the exception had left tracekit's middleware: its page said null, while
    its header carried the ID. Async or sync, it now runs with the request's ID and span."""
    routes = [Route("/crash", crash), Route("/fine", fine)]
    app = Starlette(routes=routes, exception_handlers={Exception: handler})
    app.add_middleware(asgi.TracekitMiddleware, mode=mode)
    url = serve_asgi(app)

    response = send(url + "/crash", [b"X-Correlation-ID: ticket-77"])
    after = send(url + "/fine", [])

    assert response.status == 500 and response.header("X-Correlation-ID") == "ticket-77"
    quoted = json.loads(response.body)
    assert quoted["correlation_id"] == "ticket-77"
    assert after.status == 200 and after.header("X-Correlation-ID") != "ticket-77"
    if mode == "full":
        (span,) = [
            s
            for s in wait_for_spans(2)
            if s.kind is SpanKind.SERVER and s.attributes.get("correlation.id") == "ticket-77"
        ]
        assert quoted["trace_id"] == format(span.context.trace_id, "032x")


def _upload_limited(registry: CollectorRegistry) -> FastAPI:
    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{len(await request.body())} bytes")

    app = FastAPI(telemetry={"tracing": False}, max_body_size=1024)
    app.add_api_route("/upload", upload, methods=["POST"])
    app.add_middleware(asgi.TracekitMiddleware, registry=registry)
    return app


def test_an_upload_over_the_apps_body_limit_is_the_clients_413(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """FastAPI's ``max_body_size``: Starlette's body limit answers an upload whose
    Content-Length is over it with a 413 of its own and stops the app with an exception of its
    own. The span was failed and the request counted with error_type
    ``_RequestBodyLimitResponseSent``, a server error on every dashboard, for the client's 413."""
    registry = CollectorRegistry()
    url = serve_asgi(_upload_limited(registry)) + "/upload"
    response = requests.post(url, data=b"x" * 4096, timeout=10)
    fine_upload = requests.post(url, data=b"x" * 10, timeout=10)

    assert response.status_code == 413 and fine_upload.text == "10 bytes"
    assert "X-Correlation-ID" not in response.headers  # the limit's own page, sent outside
    spans = [s for s in wait_for_spans(2) if s.kind is SpanKind.SERVER]
    (span,) = [s for s in spans if s.attributes.get("http.response.status_code") == 413]
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in (span.attributes or {}) and not span.events
    assert sorted(_counted(registry)) == [("/upload", "200", ""), ("/upload", "413", "")]


def test_a_traced_app_mounted_in_a_correlation_only_one_ends_with_their_handlers_page(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """A gateway with correlation-only tracekit and a 500 handler mounts a traced app: both
    layers leave the request for that handler. The outer one's note replaced the inner one's,
    so the traced request never ended: no span, and http_server_active_requests one higher
    for every such error, for ever."""
    registry = CollectorRegistry()

    async def cards(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("card service timed out")

    app = Starlette(
        routes=[Mount("/cards", app=asgi.TracekitMiddleware(cards, registry=registry))],
        exception_handlers={Exception: _quoting_the_id},
    )
    app.add_middleware(asgi.TracekitMiddleware, mode="correlation")
    url = serve_asgi(app)

    responses = [send(url + "/cards/7", [b"X-Correlation-ID: ticket-9"]) for _ in range(3)]

    assert [r.status for r in responses] == [500] * 3
    assert {json.loads(r.body)["correlation_id"] for r in responses} == {"ticket-9"}
    server = [s for s in wait_for_spans(3) if s.kind is SpanKind.SERVER]
    assert [s.attributes.get("http.response.status_code") for s in server] == [500] * 3
    assert _counted(registry) == [("/cards", "500", "RuntimeError")]
    assert _in_flight(registry) == [0]


def _handler_added_at_startup(registry: CollectorRegistry) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.add_exception_handler(Exception, _unavailable)  # after Starlette built its stack
        yield

    return _added(FastAPI(telemetry={"tracing": False}, routes=CRASH, lifespan=lifespan), registry)


def _debug_switched_on_later(registry: CollectorRegistry) -> Starlette:
    app = _added(Starlette(routes=CRASH, exception_handlers={Exception: _unavailable}), registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.debug = True  # after Starlette built its stack: its handler still answers
        yield

    app.router.lifespan_context = lifespan
    return app


ANSWERED_AS_BUILT = {  # the app, and the status its client gets
    "handler-added-at-startup": (_handler_added_at_startup, 500),
    "debug-switched-on-later": (_debug_switched_on_later, 503),
}


@pytest.mark.parametrize("kind", sorted(ANSWERED_AS_BUILT))
def test_the_status_recorded_is_that_of_the_answer_starlette_built(
    kind: str, serve_asgi: Any, wait_for_spans: Any
) -> None:
    """Starlette builds its ``ServerErrorMiddleware`` once, at the app's first call (its
    lifespan): a 500 handler added in the lifespan, or ``debug`` switched on there, changes
    nothing in what it answers. tracekit read the app's attributes instead: it recorded no
    status for the 500 the client got, and a 500 for the handler's 503."""
    registry = CollectorRegistry()
    make_app, status = ANSWERED_AS_BUILT[kind]
    assert send(serve_asgi(make_app(registry)) + "/crash", []).status == status
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.attributes.get("http.response.status_code") == status
    assert _counted(registry) == [("/crash", str(status), "RuntimeError")]
    assert _in_flight(registry) == [0]


def test_a_bare_apps_exception_answered_by_an_outer_middleware_is_not_a_500(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """A bare ASGI app behind tracekit's middleware, with a generic middleware outside both
    that answers any exception with its own 503 (Starlette's ServerErrorMiddleware used
    alone, with a handler): the client got 503, the span and the metrics said 500."""
    from starlette.middleware.errors import ServerErrorMiddleware

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("card service timed out")

    registry = CollectorRegistry()
    traced = asgi.TracekitMiddleware(raw, registry=registry)

    async def unavailable(request: Request, exc: Exception) -> PlainTextResponse:
        return PlainTextResponse("later", status_code=503)

    app = ServerErrorMiddleware(traced, handler=unavailable)
    assert send(serve_asgi(app) + "/crash", []).status == 503

    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    assert span.attributes.get("http.response.status_code") in (None, 503)
    assert span.attributes.get("error.type") == "RuntimeError"
    assert [status for _, status, _ in _counted(registry)] != ["500"]


def test_a_bare_apps_exception_re_raised_by_opentelemetrys_middleware_counts_as_a_500(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """OpenTelemetry's own ASGI middleware around tracekit's records the exception and raises
    it again, on to uvicorn, which answers 500: tracekit's metrics counted it with no status.
    (The SERVER span is OpenTelemetry's, which describes it as without tracekit.)"""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("card service timed out")

    registry = CollectorRegistry()
    app = OpenTelemetryMiddleware(asgi.TracekitMiddleware(raw, registry=registry))
    assert send(serve_asgi(app) + "/crash", []).status == 500

    assert _counted(registry) == [("_unmatched", "500", "RuntimeError")]
