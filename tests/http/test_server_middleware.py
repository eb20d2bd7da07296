"""Middleware behaviour on real servers: streaming, exceptions, 5xx, exclusions, websockets,
lifespan, and span names from Starlette routes, Flask url rules and Django resolvers.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import flask
import pytest
import requests
from loopback import serve_in_thread
from metric_labels import routes_labelled
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import tracekit
import tracekit.flask
from tracekit import asgi, correlation, wsgi

events: dict[str, Any] = {}


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"chunk{i}-{tracekit.correlation_id()}\n".encode()
            await _sleep()
        events["asgi_last_chunk_ns"] = time.time_ns()

    return StreamingResponse(chunks())


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.02)


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("kaboom")


async def unavailable(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def items(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def echo_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(f"cid={tracekit.correlation_id()}")
    await websocket.close()


def lifespan(app: Any) -> Any:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        events["lifespan_started"] = True
        yield

    return run(app)


@pytest.fixture
def asgi_url(serve_asgi: Any) -> str:
    events.clear()
    app = Starlette(
        routes=[
            Route("/stream", stream),
            Route("/boom", boom),
            Route("/unavailable", unavailable),
            Route("/health", health),
            Route("/items/{item_id}", items),
            WebSocketRoute("/ws/{room}", echo_socket),
        ],
        middleware=[Middleware(asgi.TracekitMiddleware, excluded_urls=["^/health$"])],
        lifespan=lifespan,
    )
    return serve_asgi(app)


def test_asgi_streaming_response_is_covered(asgi_url: str, wait_for_spans: Any) -> None:
    response = requests.get(asgi_url + "/stream", timeout=10)

    cid = response.headers["X-Correlation-ID"]
    assert response.text == "".join(f"chunk{i}-{cid}\n" for i in range(3))
    (span,) = wait_for_spans(1)
    assert span.name == "GET /stream"
    assert span.end_time >= events["asgi_last_chunk_ns"]


def test_asgi_exception_recorded_and_reraised(asgi_url: str, wait_for_spans, log_lines) -> None:
    response = requests.get(asgi_url + "/boom", timeout=10)

    assert response.status_code == 500
    (span,) = wait_for_spans(1)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert [e.attributes["exception.message"] for e in span.events] == ["kaboom"]
    # Starlette's error middleware (outside ours) saw the same exception: it was re-raised.
    assert any("RuntimeError: kaboom" in line for line in log_lines)


def test_5xx_marks_error_and_2xx_does_not(asgi_url: str, wait_for_spans: Any) -> None:
    requests.get(asgi_url + "/unavailable", timeout=10)
    requests.get(asgi_url + "/items/42", timeout=10)

    by_name = {span.name: span for span in wait_for_spans(2)}
    assert by_name["GET /unavailable"].status.status_code is StatusCode.ERROR
    assert by_name["GET /unavailable"].attributes["http.response.status_code"] == 503
    assert by_name["GET /items/{item_id}"].status.status_code is StatusCode.UNSET
    assert by_name["GET /items/{item_id}"].attributes["http.route"] == "/items/{item_id}"


def test_excluded_url_gets_no_span_but_works(asgi_url: str, wait_for_spans: Any) -> None:
    response = requests.get(asgi_url + "/health", timeout=10)

    assert response.text == "ok"
    assert wait_for_spans(1, timeout=0.3) == []


def test_websocket_scope_is_traced(asgi_url: str, wait_for_spans: Any) -> None:
    ws_url = asgi_url.replace("http://", "ws://") + "/ws/lobby"
    with connect(ws_url, additional_headers={"X-Correlation-ID": "ws-conn-1"}) as socket:
        message = socket.recv(timeout=10)
        echoed = socket.response.headers["X-Correlation-ID"]

    assert message == "cid=ws-conn-1"
    assert echoed == "ws-conn-1"
    (span,) = wait_for_spans(1)
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /ws/{room}"
    assert span.attributes["correlation.id"] == "ws-conn-1"


def test_a_websocket_the_client_closes_is_no_server_error(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """An endpoint that reads until the client leaves (FastAPI's documented echo loop) gets
    Starlette's ``WebSocketDisconnect`` out of ``receive_text`` when the client closes: every
    such connection was an ERROR span with the exception, as if the server had failed. The
    exception still goes out to the server unchanged; one the endpoint raises is still an error."""
    caplog.set_level(logging.CRITICAL)  # uvicorn logs what the endpoints let out

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            await websocket.send_text(await websocket.receive_text())

    async def broken(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise RuntimeError("the chat room went away")

    app = Starlette(routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/broken", broken)])
    app.add_middleware(asgi.TracekitMiddleware)
    ws_url = serve_asgi(app).replace("http://", "ws://")
    with connect(ws_url + "/echo") as client:
        client.send("hello")
        assert client.recv(timeout=10) == "hello"
    with connect(ws_url + "/broken") as client:
        client.send("hello")
        time.sleep(0.2)

    by_name = {span.name: span for span in wait_for_spans(2)}
    closed, broke = by_name["GET /echo"], by_name["GET /broken"]
    assert closed.status.status_code is StatusCode.UNSET
    assert "error.type" not in closed.attributes and list(closed.events) == []
    assert closed.attributes["http.response.status_code"] == 101
    assert broke.status.status_code is StatusCode.ERROR
    assert broke.attributes["error.type"] == "RuntimeError"


@pytest.mark.parametrize("mode", ["full", "correlation"])
def test_a_websocket_whose_endpoint_raises_before_accepting_carries_the_correlation_id(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any, mode: str
) -> None:
    """The server answers a WebSocket whose endpoint raises before accepting it with a 500,
    which carried no correlation ID, unlike every HTTP response's 500: the client refused had
    no ID to look the failure up by."""
    caplog.set_level(logging.CRITICAL)  # uvicorn logs what the endpoint lets out

    async def fail(websocket: WebSocket) -> None:
        raise RuntimeError("no room")

    app = Starlette(routes=[WebSocketRoute("/fail", fail)])
    app.add_middleware(asgi.TracekitMiddleware, mode=mode)
    ws_url = serve_asgi(app).replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url + "/fail", additional_headers={"X-Correlation-ID": "ws-fail-1"})

    answer = refused.value.response
    assert answer.status_code == 500
    assert answer.headers["X-Correlation-ID"] == "ws-fail-1"
    assert answer.body == b"Internal Server Error"
    if mode == "full":
        (span,) = wait_for_spans(1)
        assert span.attributes["http.response.status_code"] == 500
        assert span.attributes["error.type"] == "RuntimeError"
        assert span.attributes["correlation.id"] == "ws-fail-1"


def test_a_websocket_refused_before_accepting_is_refused_as_without_tracekit_in_a_test_client() -> (
    None
):
    """What an application's own tests see through Starlette's TestClient is unchanged: a
    close before accepting raises ``WebSocketDisconnect`` with the endpoint's close code (not
    the ``WebSocketDenialResponse`` a denial response carrying the header would raise), and an
    exception before accepting is the endpoint's own."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    async def refuse(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    async def fail(websocket: WebSocket) -> None:
        raise RuntimeError("no room")

    app = Starlette(routes=[WebSocketRoute("/refuse", refuse), WebSocketRoute("/fail", fail)])
    app.add_middleware(asgi.TracekitMiddleware)
    client = TestClient(app)
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/refuse"):
        pass
    assert closed.value.code == 1008
    with pytest.raises(RuntimeError, match="no room"), client.websocket_connect("/fail"):
        pass


def test_lifespan_passes_through(asgi_url: str, spans: Any) -> None:
    assert events["lifespan_started"] is True
    assert spans.get_finished_spans() == ()


def wsgi_stream(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        for i in range(3):
            time.sleep(0.02)
            yield f"part{i}-{tracekit.correlation_id()}\n".encode()
        events["wsgi_last_chunk_ns"] = time.time_ns()
    finally:
        events["wsgi_generator_closed"] = True


def test_wsgi_generator_is_covered_and_closed(serve_wsgi: Any, wait_for_spans: Any) -> None:
    events.clear()
    url = serve_wsgi(wsgi.TracekitMiddleware(wsgi_stream))

    response = requests.get(url + "/gen", timeout=10)

    cid = response.headers["X-Correlation-ID"]
    assert response.text == "".join(f"part{i}-{cid}\n" for i in range(3))
    (span,) = wait_for_spans(1)
    assert events["wsgi_generator_closed"] is True
    assert span.end_time >= events["wsgi_last_chunk_ns"]
    assert span.attributes["correlation.id"] == cid


def _post_and_reset(url: str, count: int) -> None:
    """A client that reads the whole answer, then resets the connection (SO_LINGER 0), as a
    load balancer or a client timing out can; the app never reads the request body."""
    host, port = url.removeprefix("http://").split(":")
    for _ in range(count):
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"POST /order HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            answer = b""
            while b"queued" not in answer:
                answer += conn.recv(4096)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_wsgi_request_ends_when_the_client_resets_after_the_answer(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """werkzeug skips the response's close() when the client resets the connection while it
    drains unread request data: the span must end anyway, once per request."""
    closed: list[int] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"queued"

        def close(self) -> None:
            closed.append(1)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        start_response("200 OK", [("Content-Length", "6")])
        return Body()

    _post_and_reset(serve_wsgi(wsgi.TracekitMiddleware(app)), 20)

    finished = wait_for_spans(20)
    assert [s.kind for s in finished] == [SpanKind.SERVER] * 20
    assert len(closed) == 20  # the app's close() ran once per request


def flask_app(wrap: Callable[[flask.Flask], flask.Flask] = tracekit.flask.init_app) -> flask.Flask:
    app = flask.Flask("routes")

    @app.get("/orders/<int:order_id>/lines/<line>")
    def line(order_id: int, line: str) -> str:
        return f"{order_id}/{line}"

    @app.get("/fail")
    def fail() -> str:
        raise ValueError("flask view failed")

    return wrap(app)


def wrap_wsgi_app(app: flask.Flask) -> flask.Flask:
    """The plain WSGI way, without tracekit.flask: ``app.wsgi_app = TracekitMiddleware(...)``."""
    app.wsgi_app = wsgi.TracekitMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


@pytest.mark.parametrize("wrap", [tracekit.flask.init_app, wrap_wsgi_app])
def test_flask_url_rules_name_spans_and_errors_are_recorded(
    serve_wsgi, wait_for_spans, caplog, wrap
):
    caplog.set_level(logging.CRITICAL)  # Flask logs the view's exception; not this test's concern
    url = serve_wsgi(flask_app(wrap))

    assert requests.get(url + "/orders/7/lines/a", timeout=10).text == "7/a"
    assert requests.get(url + "/fail", timeout=10).status_code == 500

    by_name = {span.name: span for span in wait_for_spans(2)}
    assert set(by_name) == {"GET /orders/{order_id}/lines/{line}", "GET /fail"}
    failed = by_name["GET /fail"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ValueError"
    assert [e.attributes["exception.type"] for e in failed.events] == ["ValueError"]


def test_a_wsgi_app_that_raises_after_starting_its_response_is_no_200(
    serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """A Flask ``teardown_request`` that raises does so after the response was started, before
    any of it went out: the server answers with its own 500, while the span and the metrics
    said 200 (with the exception), as if the client had got the view's answer; then nothing.
    They say the server's 500, beside the exception."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception; not this test's concern
    app = flask.Flask("teardown")
    app.get("/orders")(lambda: "orders")

    @app.teardown_request
    def close_session(error: BaseException | None) -> None:
        raise RuntimeError("session close failed")

    registry = CollectorRegistry()
    url = serve_wsgi(tracekit.flask.init_app(app, registry=registry, service_name="shop"))
    assert requests.get(url + "/orders", timeout=10).status_code == 500

    (span,) = wait_for_spans(1)
    assert span.name == "GET /orders" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    sample = {"http_request_method": "GET", "http_route": "/orders", "error_type": "RuntimeError",
              "http_response_status_code": "500", "service_name": "shop",
              "service_version": ""}  # fmt: skip
    assert registry.get_sample_value("http_server_request_duration_seconds_count", sample) == 1


def test_a_wsgi_body_that_fails_before_its_first_chunk_is_no_200(
    serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """A streamed body that raises before yielding anything: nothing has gone out and the
    server answers with its own 500, while the span said 200 (with the exception)."""
    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception; not this test's concern
    app = flask.Flask("report")

    @app.get("/report")
    def report() -> flask.Response:
        def rows() -> Iterator[bytes]:
            raise LookupError("no such report")
            yield b"never"

        return flask.Response(rows())

    url = serve_wsgi(tracekit.flask.init_app(app))
    assert requests.get(url + "/report", timeout=10).status_code == 500

    (span,) = wait_for_spans(1)
    assert span.name == "GET /report" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "LookupError"


def test_flask_init_app_is_idempotent() -> None:
    app = flask_app()
    wrapped = app.wsgi_app
    assert tracekit.flask.init_app(app).wsgi_app is wrapped


@pytest.fixture(scope="module")
def django_application() -> Any:
    """A Django project configured in code: only settings name tracekit's middleware."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="test-only",
            ROOT_URLCONF=__name__ + "_urls",
            MIDDLEWARE=["tracekit.django.TracekitMiddleware"],
            TRACEKIT={"excluded_urls": ["^/ping$"]},
            LOGGING_CONFIG=None,
        )
    import sys

    import django
    from django.http import HttpResponse, StreamingHttpResponse
    from django.urls import path

    def order(request: Any, order_id: int) -> HttpResponse:
        return HttpResponse(f"order {order_id} {tracekit.correlation_id()}")

    def crash(request: Any) -> HttpResponse:
        raise KeyError("django view failed")

    def refused(request: Any) -> HttpResponse:
        raise ConnectionRefusedError("the card service refused the connection")

    def streamed(request: Any) -> StreamingHttpResponse:
        def body() -> Iterator[bytes]:
            for i in range(3):
                time.sleep(0.02)
                yield f"row{i}\n".encode()
            events["django_last_chunk_ns"] = time.time_ns()

        return StreamingHttpResponse(body())

    def broken_stream(request: Any) -> StreamingHttpResponse:
        def body() -> Iterator[bytes]:
            yield b"row0\n"
            raise OSError("the export file went away")

        return StreamingHttpResponse(body())

    def stillborn_stream(request: Any) -> StreamingHttpResponse:
        def body() -> Iterator[bytes]:
            raise LookupError("no such export")
            yield b"never"

        return StreamingHttpResponse(body())

    def async_stillborn_stream(request: Any) -> StreamingHttpResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"row0\n"
            raise OSError("the export file went away")

        return StreamingHttpResponse(body())

    sys.modules[__name__ + "_urls"] = SimpleNamespace(  # type: ignore[assignment]
        urlpatterns=[
            path("orders/<int:order_id>", order),
            path("crash", crash),
            path("refused", refused),
            path("stream", streamed),
            path("broken-stream", broken_stream),
            path("stillborn-stream", stillborn_stream),
            path("async-stillborn-stream", async_stillborn_stream),
            path("ping", lambda request: HttpResponse("pong")),
        ]
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def test_django_resolver_routes_name_spans(django_application, serve_wsgi, wait_for_spans, caplog):
    caplog.set_level(logging.CRITICAL)
    url = serve_wsgi(django_application)

    ok = requests.get(url + "/orders/12", headers={"X-Request-ID": "dj-1"}, timeout=10)
    crashed = requests.get(url + "/crash", timeout=10)
    streamed = requests.get(url + "/stream", timeout=10)
    assert requests.get(url + "/ping", timeout=10).text == "pong"

    assert ok.text == "order 12 dj-1"
    assert ok.headers["X-Correlation-ID"] == "dj-1"
    assert crashed.status_code == 500
    assert streamed.text == "row0\nrow1\nrow2\n"
    by_name = {span.name: span for span in wait_for_spans(3)}
    assert set(by_name) == {"GET /orders/{order_id}", "GET /crash", "GET /stream"}
    assert by_name["GET /orders/{order_id}"].attributes["correlation.id"] == "dj-1"
    assert by_name["GET /crash"].status.status_code is StatusCode.ERROR
    assert by_name["GET /crash"].attributes["error.type"] == "KeyError"
    assert by_name["GET /stream"].end_time >= events["django_last_chunk_ns"]


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_an_exception_django_propagates_is_the_servers_500(
    django_application: Any, server: str, request: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """With ``DEBUG_PROPAGATE_EXCEPTIONS`` Django lets a view's exception out to the server
    (under ASGI, through its async middleware path), which answers with its own 500
    (werkzeug's, uvicorn's): the span had no ``http.response.status_code`` and the metrics an
    empty status, as for Flask's ``PROPAGATE_EXCEPTIONS``."""
    from django.core.asgi import get_asgi_application
    from django.test import override_settings

    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception
    caplog.set_level(logging.CRITICAL, logger="uvicorn.error")  # and uvicorn
    if server == "wsgi":
        url = request.getfixturevalue("serve_wsgi")(django_application)
    else:
        url = request.getfixturevalue("serve_asgi")(get_asgi_application())
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True):
        assert requests.get(url + "/crash", timeout=10).status_code == 500

    (span,) = wait_for_spans(1)
    assert span.name == "GET /crash" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "KeyError"


def sync_only_middleware(get_response: Any) -> Any:
    """A middleware that runs only synchronously (function-style): under ASGI Django then runs
    tracekit's middleware above it synchronously too, in a worker thread."""

    def middleware(request: Any) -> Any:
        return get_response(request)

    return middleware


def test_an_oserror_django_propagates_under_asgi_is_uvicorns_500_also_run_synchronously(
    django_application: Any, serve_asgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """uvicorn answers any exception with its 500, an ``OSError`` too (gunicorn answers that
    with nothing). Where Django ran tracekit's middleware synchronously under ASGI, tracekit
    took uvicorn for gunicorn there: the span had no ``http.response.status_code`` and the
    metrics an empty status."""
    from django.core.asgi import get_asgi_application
    from django.test import override_settings

    caplog.set_level(logging.CRITICAL, logger="uvicorn.error")  # uvicorn logs the exception
    middleware = ["tracekit.django.TracekitMiddleware", f"{__name__}.sync_only_middleware"]
    with override_settings(MIDDLEWARE=middleware, DEBUG_PROPAGATE_EXCEPTIONS=True):
        url = serve_asgi(get_asgi_application())
        assert requests.get(url + "/refused", timeout=10).status_code == 500

    (span,) = wait_for_spans(1)
    assert span.name == "GET /refused" and span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "ConnectionRefusedError"


def test_a_django_stream_that_fails_part_way_is_a_failed_request(
    django_application: Any, serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """A ``StreamingHttpResponse`` whose body raises after its first chunk: the client gets a
    cut body, and the span said the request went well (200, no error), where the WSGI and
    ASGI middleware record the exception."""
    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception
    url = serve_wsgi(django_application)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url + "/broken-stream", timeout=10)

    (span,) = wait_for_spans(1)
    assert span.name == "GET /broken-stream"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "OSError"
    assert [event.name for event in span.events] == ["exception"]


def test_a_django_stream_that_fails_before_its_first_chunk_is_no_200(
    django_application: Any, serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """Under WSGI nothing of a streamed response goes out before its first chunk: a body that
    fails at once gets the server's own 500, while the span said 200 (with the exception)."""
    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception
    url = serve_wsgi(django_application)
    assert requests.get(url + "/stillborn-stream", timeout=10).status_code == 500

    (span,) = wait_for_spans(1)
    assert span.name == "GET /stillborn-stream"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "LookupError"


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")  # what this test is
def test_an_async_django_stream_that_fails_under_wsgi_is_no_200(
    django_application: Any, serve_wsgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """Under WSGI Django reads an async streamed body whole before sending any of it: one that
    fails after its first chunk gets the server's own 500, while the span and the metrics said
    200 (with the exception), so the failure was missing from 5xx error ratios."""
    caplog.set_level(logging.CRITICAL)  # werkzeug logs the exception
    url = serve_wsgi(django_application)
    assert requests.get(url + "/async-stillborn-stream", timeout=10).status_code == 500

    (span,) = wait_for_spans(1)
    assert span.name == "GET /async-stillborn-stream"
    assert span.status.status_code is StatusCode.ERROR
    # an OSError, which gunicorn answers with nothing (werkzeug with a 500): status not known
    assert "http.response.status_code" not in span.attributes
    assert span.attributes["error.type"] == "OSError"


def test_django_excluded_urls_match_the_path_below_the_script_name(
    django_application: Any, serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """Behind a proxy that mounts the project under ``/api`` (``SCRIPT_NAME``), ``^/ping$``
    still excludes the health check, as the WSGI middleware's ``PATH_INFO`` does; it was
    matched against ``/api/ping`` and the check was traced."""

    def under_api(environ: dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"] = "/api"
        return django_application(environ, start_response)

    url = serve_wsgi(under_api)
    assert requests.get(url + "/ping", timeout=10).text == "pong"
    assert requests.get(url + "/orders/3", timeout=10).status_code == 200
    (span,) = wait_for_spans(1)
    assert (span.name, span.attributes["url.path"]) == ("GET /orders/{order_id}", "/api/orders/3")


@pytest.mark.parametrize("next_client", ["Client", "AsyncClient"])
def test_a_stream_left_unread_in_djangos_test_client_does_not_take_over_the_next_request(
    django_application: Any, spans: Any, next_client: str
) -> None:
    """Django's test client closes a streamed response only once a test reads its body; a test
    that checked only the status left that request current in the thread, and every request
    after it (for the rest of the test run) was taken for part of it: no span of its own, and
    the old correlation ID echoed, on its logs and on the tasks its view sent."""
    import asyncio

    from django import test

    export = test.Client().get("/stream", HTTP_X_REQUEST_ID="dj-export")
    assert export.status_code == 200  # its body never read, as many tests leave it
    if next_client == "Client":
        order = test.Client().get("/orders/5", HTTP_X_REQUEST_ID="dj-next")
    else:
        order = asyncio.run(
            test.AsyncClient().get("/orders/5", headers={"X-Request-ID": "dj-next"})
        )

    assert order.content == b"order 5 dj-next"
    assert order.headers["X-Correlation-ID"] == "dj-next"
    (span,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert span.name == "GET /orders/{order_id}"
    assert span.attributes["correlation.id"] == "dj-next"
    assert span.parent is None
    export.close()
    # and the test's thread is left as it was: an ID a context carries into it is seen there
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract({"X-Correlation-ID": "dj-later"}))
    try:
        assert tracekit.correlation_id() == "dj-later"
    finally:
        context.detach(token)


def test_a_stream_left_unread_in_djangos_test_client_gives_back_the_tests_context(
    django_application: Any, spans: Any
) -> None:
    """The request after a stream left unread started afresh, but so did the test: the span and
    correlation ID the test had before the abandoned request were gone once the next request
    returned, so the test's own logs and spans after it lost their trace and ID."""
    from django import test
    from opentelemetry import trace

    tracer = trace.get_tracer("django-test")
    token = correlation.set_correlation_id("checkout-suite")
    try:
        with tracer.start_as_current_span("checkout test") as test_span:
            export = test.Client().get("/stream", HTTP_X_REQUEST_ID="dj-export")
            assert export.status_code == 200  # its body never read
            order = test.Client().get("/orders/5", HTTP_X_REQUEST_ID="dj-next")
            assert order.content == b"order 5 dj-next"
            assert trace.get_current_span() is test_span
            assert tracekit.correlation_id() == "checkout-suite"
        export.close()
    finally:
        correlation.reset_correlation_id(token)


def test_a_request_through_djangos_async_test_client_leaves_the_test_as_it_was(
    django_application: Any, spans: Any
) -> None:
    """Django's ``AsyncClient`` runs the request in the test's own task (a server gives each
    request a task of its own): the test went on with the request's correlation ID and span
    current, and, through ``async_to_sync`` (how Django's test case runs an async test), so
    did every test after it: their logs and tasks carried that ID, their spans joined its trace."""
    from asgiref.sync import async_to_sync
    from django import test
    from opentelemetry import trace

    async def request() -> Any:
        return await test.AsyncClient().get("/orders/5", headers={"X-Request-ID": "dj-async"})

    response = async_to_sync(request)()

    assert response.content == b"order 5 dj-async"
    assert tracekit.correlation_id() is None
    assert not trace.get_current_span().get_span_context().is_valid
    (span,) = spans.get_finished_spans()
    assert span.attributes["correlation.id"] == "dj-async"


def test_a_wsgi_url_path_is_the_whole_path_the_client_sent(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """Behind a proxy that mounts the application under ``/api`` (``SCRIPT_NAME``), ``url.path``
    was ``PATH_INFO`` alone (``/orders/3``), where the ASGI middleware (``root_path``) and
    Django's (``request.path``) say ``/api/orders/3``; exclusions still match below the root."""

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    traced = wsgi.TracekitMiddleware(plain, excluded_urls=["^/ping$"])

    def under_api(environ: dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"] = "/api/caf\xc3\xa9"  # as PEP 3333 hands bytes over: latin-1
        return traced(environ, start_response)

    url = serve_wsgi(under_api)
    for path in ("/ping", "/orders/3", ""):
        assert requests.get(url + path, timeout=10).text == "ok"

    paths = sorted(span.attributes["url.path"] for span in wait_for_spans(2))
    assert paths == ["/api/café/", "/api/café/orders/3"]


def _mounted_app() -> Starlette:
    """Routes under a parametrised mount, under a mounted sub-application, and a mount that
    serves whatever lies below it (as ``StaticFiles`` does): no route of its own."""

    async def files(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("file")(scope, receive, send)

    tenants = Mount("/tenants/{tenant}", routes=[Route("/items/{item_id}", items)])
    version = Mount("/v1", app=Starlette(routes=[Mount("/shop/{shop}", routes=[
        Route("/items/{item_id}", items)])]))  # fmt: skip
    return Starlette(routes=[tenants, version, Mount("/static", app=files)])


@pytest.mark.parametrize("wrapping", ["add_middleware", "around the app"])
def test_routes_under_mounts_are_named_by_templates_never_by_the_path_sent(
    serve_asgi: Any, wait_for_spans: Any, wrapping: str
) -> None:
    app: Any = _mounted_app()
    if wrapping == "add_middleware":
        app.add_middleware(asgi.TracekitMiddleware)
    else:
        app = asgi.TracekitMiddleware(app)
    url = serve_asgi(app)
    paths = ["/tenants/acme/items/1", "/tenants/evil-2/items/2", "/v1/shop/evil-3/items/3",
             "/static/css/site.css", "/tenants/%1b%5b31mRED%0d%0aX/items/4"]  # fmt: skip

    for path in paths:
        assert requests.get(url + path, timeout=10).status_code == 200

    names = sorted(span.name for span in wait_for_spans(len(paths)))
    assert names == ["GET /static"] + ["GET /tenants/{tenant}/items/{item_id}"] * 3 + [
        "GET /v1/shop/{shop}/items/{item_id}"
    ]


def test_a_sub_application_mounted_through_middleware_keeps_its_mount_template(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """``app.mount("/v1", CORSMiddleware(v1))``: the mount routes through middleware, which has
    no routes of its own; its routes were named without the mount (``/v1`` and ``/v2`` were
    both ``GET /items/{item_id}``, a route the app does not have)."""
    from starlette.middleware.cors import CORSMiddleware
    from starlette.middleware.gzip import GZipMiddleware

    v1 = Starlette(routes=[Route("/items/{item_id}", items)])
    v2 = Starlette(routes=[Route("/items/{item_id}", items)])
    app = Starlette(routes=[Mount("/v1", app=CORSMiddleware(v1, allow_origins=["*"])),
                            Mount("/v2/{region}", app=GZipMiddleware(v2))])  # fmt: skip
    app.add_middleware(asgi.TracekitMiddleware)
    url = serve_asgi(app)

    for path in ("/v1/items/1", "/v2/eu/items/2"):
        assert requests.get(url + path, timeout=10).status_code == 200

    routes = {
        span.attributes["url.path"]: span.attributes["http.route"] for span in wait_for_spans(2)
    }
    assert routes == {"/v1/items/1": "/v1/items/{item_id}",
                      "/v2/eu/items/2": "/v2/{region}/items/{item_id}"}  # fmt: skip


def test_starlette_convertors_are_not_part_of_the_route_template(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """``/items/{item_id:int}`` was the span name and the metrics' ``http_route`` as written,
    where the same route is ``/items/{item_id}`` in Flask and Django, and in the SERVER span
    Starlette's and FastAPI's own telemetry opens around tracekit's middleware."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/items/{item_id:int}", health),
                            Mount("/tenants/{tenant:str}",
                                  routes=[Route("/files/{name:path}", health)])])  # fmt: skip
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="shop")
    url = serve_asgi(app)

    for path in ("/items/7", "/tenants/acme/files/a/b.txt"):
        assert requests.get(url + path, timeout=10).status_code == 200

    routes = {
        span.attributes["url.path"]: (span.name, span.attributes["http.route"])
        for span in wait_for_spans(2)
    }
    assert routes == {
        "/items/7": ("GET /items/{item_id}", "/items/{item_id}"),
        "/tenants/acme/files/a/b.txt": (
            "GET /tenants/{tenant}/files/{name}",
            "/tenants/{tenant}/files/{name}",
        ),
    }
    assert routes_labelled(registry) == {"/items/{item_id}", "/tenants/{tenant}/files/{name}"}


def test_a_method_outside_the_known_ones_is_kept_beside_other(
    serve_asgi: Any, serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """WebDAV's ``PROPFIND`` is ``_OTHER`` for ``http.request.method`` (and the metrics), as
    OpenTelemetry says; the method sent stays in ``http.request.method_original`` and the span is
    ``HTTP {route}``. It was only ``HTTP``, with nothing saying which method came. A method that
    is no HTTP token (werkzeug passes anything without spaces) is not kept."""
    import rawhttp

    async def dav(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.method)

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    asgi_url = serve_asgi(asgi.TracekitMiddleware(
        Starlette(routes=[Route("/dav/{name}", dav, methods=["PROPFIND"])])))  # fmt: skip
    wsgi_url = serve_wsgi(wsgi.TracekitMiddleware(plain))

    assert requests.request("PROPFIND", asgi_url + "/dav/notes", timeout=10).text == "PROPFIND"
    assert rawhttp.send(wsgi_url + "/x", [], method="P\x1b[2JROP").status == 200

    by_path = {span.attributes["url.path"]: span for span in wait_for_spans(2)}
    dav_span, hostile = by_path["/dav/notes"], by_path["/x"]
    assert dav_span.name == "HTTP /dav/{name}"
    assert dav_span.attributes["http.request.method"] == "_OTHER"
    assert dav_span.attributes["http.request.method_original"] == "PROPFIND"
    assert hostile.attributes["http.request.method"] == "_OTHER"
    assert "http.request.method_original" not in hostile.attributes


def test_a_wsgi_path_is_the_text_the_client_sent(serve_wsgi: Any, wait_for_spans: Any) -> None:
    """PEP 3333 hands ``PATH_INFO`` over as its bytes decoded as latin-1: ``url.path`` said
    ``/files/cafÃ©`` where ASGI and Django say ``/files/café``, and an excluded ``^/café$``
    was traced. Bytes that are no UTF-8 become replacement characters."""

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    url = serve_wsgi(wsgi.TracekitMiddleware(plain, excluded_urls=["^/café$"]))
    for path in ("/files/caf%C3%A9", "/caf%C3%A9", "/raw/%FF"):
        assert requests.get(url + path, timeout=10).text == "ok"

    paths = sorted(span.attributes["url.path"] for span in wait_for_spans(2))
    assert paths == ["/files/café", "/raw/\ufffd"]


async def _denying_socket(scope: Any, receive: Any, send: Any) -> None:
    """A WebSocket endpoint that refuses the handshake with an HTTP response (ASGI's denial)."""
    await receive()  # websocket.connect
    await send({"type": "websocket.http.response.start", "status": 403, "headers": []})
    await send({"type": "websocket.http.response.body", "body": b"not yours"})


def test_a_refused_websocket_echoes_the_id_and_records_its_status(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    ws_url = serve_asgi(asgi.TracekitMiddleware(_denying_socket)).replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url + "/ws/vault", additional_headers={"X-Correlation-ID": "ws-refused-1"})

    assert refused.value.response.status_code == 403
    assert refused.value.response.headers["X-Correlation-ID"] == "ws-refused-1"
    (span,) = wait_for_spans(1)
    assert span.attributes["http.response.status_code"] == 403
    assert span.attributes["correlation.id"] == "ws-refused-1"


def test_a_websocket_closed_before_it_was_accepted_records_the_403(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """An app that closes a WebSocket before accepting it is answered ``403`` by the server (the
    ASGI spec says so); the span had no status code at all, as if nothing had been answered."""

    async def refuse(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    app = Starlette(routes=[WebSocketRoute("/ws/vault", refuse)])
    ws_url = serve_asgi(asgi.TracekitMiddleware(app)).replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url + "/ws/vault")

    assert refused.value.response.status_code == 403
    (span,) = wait_for_spans(1)
    assert (span.name, span.attributes["http.response.status_code"]) == ("GET /ws/vault", 403)


def test_a_registry_holding_a_metric_of_the_same_name_costs_only_the_metrics(
    serve_asgi: Any, serve_wsgi: Any, wait_for_spans: Any, caplog: Any, monkeypatch: Any
) -> None:
    """The application's registry already has its own ``http_server_request_duration_seconds``:
    tracekit cannot add its family there. That failed every request with a 500
    (``DuplicatedTimeseries`` from the middleware); now the requests are answered and traced,
    without tracekit's metrics, and one warning says why."""
    from prometheus_client import CollectorRegistry, Histogram

    from tracekit._runtime import guard

    monkeypatch.setattr(guard, "_reported", set())  # warned once per process: this test's
    registry = CollectorRegistry()
    Histogram("http_server_request_duration_seconds", "the app's own", registry=registry)

    async def answer(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    asgi_app = asgi.TracekitMiddleware(Starlette(routes=[Route("/a", answer)]), registry=registry)
    asgi_url = serve_asgi(asgi_app)
    wsgi_url = serve_wsgi(wsgi.TracekitMiddleware(plain, registry=registry))

    for url in (asgi_url + "/a", asgi_url + "/a", wsgi_url + "/w"):
        assert requests.get(url, timeout=10).text == "ok"
    assert sorted(span.name for span in wait_for_spans(3)) == ["GET", "GET /a", "GET /a"]
    warnings = [r.getMessage().split("\n")[0] for r in caplog.records if r.name == "tracekit"]
    assert (
        "tracekit: HTTP server metrics failed (DuplicateTimeseries); continuing without it"
        in warnings
    )


def test_a_client_that_leaves_during_its_upload_is_no_server_error(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """The client closes the connection before its request body has come: reading it raises
    Starlette's ``ClientDisconnect``. That was a failed span and a request counted with
    ``error_type="ClientDisconnect"`` (a server error on the dashboards, a failing canary); it
    is a ``499``, the client's doing, as for Django (docs/middleware.md)."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.CRITICAL)  # uvicorn logs the exception the app let out

    async def upload(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/upload", upload, methods=["POST"])])
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="shop")
    port = int(serve_asgi(app).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npart")
        time.sleep(0.1)

    (span,) = wait_for_spans(1)
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["http.response.status_code"] == 499
    assert "error.type" not in span.attributes
    sample = {"http_request_method": "POST", "http_route": "/upload", "error_type": "",
              "http_response_status_code": "499", "service_name": "shop",
              "service_version": ""}  # fmt: skip
    assert registry.get_sample_value("http_server_request_duration_seconds_count", sample) == 1


def test_a_client_that_leaves_a_streamed_echo_of_its_upload_is_no_server_error(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """An app that answers while it reads the upload (each chunk streamed back as it comes)
    has sent its 200 when the client leaves and reading the body raises Starlette's
    ``ClientDisconnect``. Only before the response was that the client's doing (a ``499``);
    after it, it was a failed span with the exception and a request counted with
    ``error_type="ClientDisconnect"``. Now it keeps the 200 it was answered with, no error."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.CRITICAL)  # uvicorn logs the exception the app let out

    class Echo:  # an ASGI endpoint (a class, which Starlette calls as one)
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            async for chunk in Request(scope, receive).stream():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/echo", Echo(), methods=["POST"])])
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="shop")
    port = int(serve_asgi(app).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"5\r\nhello\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")

    (span,) = wait_for_spans(1)
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes["http.response.status_code"] == 200
    assert "error.type" not in span.attributes
    assert not span.events
    sample = {"http_request_method": "POST", "http_route": "/echo", "error_type": "",
              "http_response_status_code": "200", "service_name": "shop",
              "service_version": ""}  # fmt: skip
    assert registry.get_sample_value("http_server_request_duration_seconds_count", sample) == 1
    in_flight = {"service_name": "shop", "service_version": ""}
    assert registry.get_sample_value("http_server_active_requests", in_flight) == 0


@pytest.mark.parametrize("framework", ["bare", "starlette"])
def test_an_app_that_returns_without_answering_is_uvicorns_500(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any, framework: str
) -> None:
    """uvicorn answers an application that returned without starting a response with its own
    500 ("ASGI callable returned without starting response"): the span had no status code and
    no error, and the request was counted with an empty status and no ``error_type``."""
    from prometheus_client import CollectorRegistry

    caplog.set_level(logging.CRITICAL)  # uvicorn logs the application's fault

    class Forgets:  # an ASGI endpoint that never answers
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            return

    registry = CollectorRegistry()
    if framework == "bare":
        app: Any = asgi.TracekitMiddleware(Forgets(), registry=registry, service_name="shop")
        route = "_unmatched"
    else:
        app = Starlette(routes=[Route("/forgets", Forgets())])
        app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="shop")
        route = "/forgets"
    response = requests.get(serve_asgi(app) + "/forgets", timeout=10)

    assert response.status_code == 500
    (span,) = wait_for_spans(1)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    sample = {"http_request_method": "GET", "http_route": route, "error_type": "500",
              "http_response_status_code": "500", "service_name": "shop",
              "service_version": ""}  # fmt: skip
    assert registry.get_sample_value("http_server_request_duration_seconds_count", sample) == 1


def test_wsgiref_still_frames_a_one_chunk_body_with_content_length(wait_for_spans: Any) -> None:
    """PEP 3333 lets a server count a body of one chunk (``len(app_iter) == 1``) and send its
    Content-Length, as wsgiref (and Django's runserver, built on it) does; tracekit's response
    wrapper had no length, so the answer lost its Content-Length."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello, world"]

    server = make_server("127.0.0.1", 0, wsgi.TracekitMiddleware(app), handler_class=Quiet)
    stop = serve_in_thread(server)
    try:
        response = requests.get(f"http://127.0.0.1:{server.server_port}/hello", timeout=10)
    finally:
        stop()
    assert response.headers.get("Content-Length") == "12" and response.text == "hello, world"
    (span,) = wait_for_spans(1)
    assert span.attributes["http.response.status_code"] == 200


def test_excluded_urls_match_the_path_below_the_root_path(wait_for_spans: Any) -> None:
    """Behind a proxy that strips ``/api`` (uvicorn ``--root-path /api``), ASGI's ``path`` still
    starts with the root path, where WSGI's ``PATH_INFO`` leaves ``SCRIPT_NAME`` out:
    ``^/health$`` excluded the health check under gunicorn and not under uvicorn."""
    from loopback import start_uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def answer(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/health", answer), Route("/orders", answer)])
    url, stop = start_uvicorn(
        asgi.TracekitMiddleware(app, excluded_urls=["^/health$"]), root_path="/api"
    )
    try:
        assert requests.get(url + "/health", timeout=10).text == "ok"
        assert requests.get(url + "/orders", timeout=10).text == "ok"
    finally:
        stop()
    (span,) = wait_for_spans(1)
    assert (span.name, span.attributes["url.path"]) == ("GET /orders", "/api/orders")


def test_server_spans_name_the_client_and_its_user_agent(
    serve_asgi: Any, serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """OpenTelemetry's HTTP server conventions recommend ``client.address`` (the peer the server
    accepted) and ``user_agent.original``; an over-long User-Agent is cut to 512 characters."""

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    asgi_url = serve_asgi(asgi.TracekitMiddleware(Starlette(routes=[Route("/a", hello)])))
    wsgi_url = serve_wsgi(wsgi.TracekitMiddleware(plain))
    agent = "probe/1.0 " + "x" * 600
    for url in (asgi_url + "/a", wsgi_url + "/w"):
        assert requests.get(url, headers={"User-Agent": agent}, timeout=10).text == "ok"

    by_path = {span.attributes["url.path"]: span.attributes for span in wait_for_spans(2)}
    for path in ("/a", "/w"):
        assert by_path[path]["client.address"] == "127.0.0.1"
        assert by_path[path]["user_agent.original"] == agent[:512]


def test_a_huge_path_is_cut_in_the_span(serve_asgi: Any, wait_for_spans: Any) -> None:
    """The client chooses the path: 12,000 characters went whole into ``url.path`` (a few such
    requests, and an export batch a collector refuses whole); it is cut at 8,192."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    url = serve_asgi(asgi.TracekitMiddleware(app))
    assert requests.get(url + "/" + "p" * 12_000, timeout=10).status_code == 404

    (span,) = wait_for_spans(1)
    assert span.attributes["url.path"] == "/" + "p" * 8191
