"""The response headers an application hands its server reach the client as they would without
tracekit, with the correlation ID added, whatever container the application hands them in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import requests

from tracekit import asgi, wsgi

SHARED_HEADERS = [("Content-Type", "text/plain")]


def _shared_list_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", SHARED_HEADERS)  # one module-level list for every response
    return [b"ok"]


def _tuple_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    # PEP 3333 asks for a list; werkzeug and gunicorn serve a tuple all the same
    start_response("200 OK", (("Content-Type", "text/plain"), ("X-App", "tuple")))
    return [b"ok"]


async def _generator_headers_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    def headers() -> Iterator[tuple[bytes, bytes]]:  # ASGI allows any iterable
        yield b"content-type", b"text/plain"
        yield b"x-app", b"generated"

    await send({"type": "http.response.start", "status": 200, "headers": headers()})
    await send({"type": "http.response.body", "body": b"ok"})


def test_wsgi_headers_shared_between_responses_carry_each_request_its_own_id(
    serve_wsgi: Any,
) -> None:
    url = serve_wsgi(wsgi.TracekitMiddleware(_shared_list_app))

    echoed = [
        requests.get(url, headers={"X-Correlation-ID": cid}, timeout=10).headers["X-Correlation-ID"]
        for cid in ("request-a", "request-b", "request-c")
    ]

    assert echoed == ["request-a", "request-b", "request-c"]
    assert SHARED_HEADERS == [("Content-Type", "text/plain")]  # the application's list as it was


def test_wsgi_headers_given_as_a_tuple_are_answered(serve_wsgi: Any) -> None:
    url = serve_wsgi(wsgi.TracekitMiddleware(_tuple_app))

    response = requests.get(url, timeout=10)

    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["X-App"] == "tuple"
    assert response.headers["X-Correlation-ID"]


def test_asgi_headers_from_a_generator_all_reach_the_client(serve_asgi: Any) -> None:
    url = serve_asgi(asgi.TracekitMiddleware(_generator_headers_app))

    response = requests.get(url, timeout=10)

    assert response.headers["Content-Type"] == "text/plain"
    assert response.headers["X-App"] == "generated"
    assert response.headers["X-Correlation-ID"]
