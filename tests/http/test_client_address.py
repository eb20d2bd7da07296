"""``client.address`` on SERVER spans, as OpenTelemetry's HTTP server conventions recommend: the
peer's address, or the one a proxy named where the server is told to trust that proxy
(uvicorn's ``forwarded_allow_ips``, werkzeug's ``ProxyFix``). tracekit reads no
X-Forwarded-For itself: a client can send any. Real uvicorn and werkzeug on loopback.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from loopback import start_uvicorn
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.middleware.proxy_fix import ProxyFix

from tracekit import asgi, wsgi

FORWARDED = {"X-Forwarded-For": "203.0.113.9"}


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def hello_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def _client_address(url: str, wait_for_spans: Any) -> object:
    assert requests.get(url + "/hello", headers=FORWARDED, timeout=10).status_code == 200
    (span,) = [s for s in wait_for_spans(1) if s.kind is SpanKind.SERVER]
    return span.attributes.get("client.address")


@pytest.mark.parametrize(("trusted", "expected"), [("", "127.0.0.1"), ("127.0.0.1", "203.0.113.9")])
def test_asgi_spans_name_the_client_as_uvicorn_does(
    trusted: str, expected: str, wait_for_spans: Any
) -> None:
    """Before, no SERVER span had a ``client.address``."""
    app = asgi.TracekitMiddleware(
        Starlette(routes=[Route("/hello", hello)]), registry=CollectorRegistry()
    )
    url, stop = start_uvicorn(app, forwarded_allow_ips=trusted)
    try:
        assert _client_address(url, wait_for_spans) == expected
    finally:
        stop()


@pytest.mark.parametrize("behind_proxy_fix", [False, True])
def test_wsgi_spans_name_the_client_as_the_app_trusts_it(
    behind_proxy_fix: bool, serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """``REMOTE_ADDR``: werkzeug's peer, or what ``ProxyFix`` read from the trusted proxy."""
    app: Any = ProxyFix(hello_wsgi) if behind_proxy_fix else hello_wsgi
    url = serve_wsgi(wsgi.TracekitMiddleware(app, registry=CollectorRegistry()))
    expected = "203.0.113.9" if behind_proxy_fix else "127.0.0.1"
    assert _client_address(url, wait_for_spans) == expected
