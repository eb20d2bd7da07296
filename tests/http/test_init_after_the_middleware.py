"""``tracekit.init()`` called after the middleware was built: in a FastAPI/Starlette lifespan
(Starlette builds its middleware stack before the lifespan starts), or after a WSGI app factory
wrapped the app. The middleware read its options when it was built: the metrics were labelled
``unknown_service:python`` and ``excluded_urls`` given to ``init`` were not excluded.

A fresh interpreter (init and the global registry are the process's) serves both apps on
loopback and scrapes tracekit's own metrics port.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from scripted_metrics import metrics_printed_by

from tracekit import wsgi

SCRIPT = """
import sys
from contextlib import asynccontextmanager

import httpx
from loopback import start_uvicorn, start_werkzeug
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import wsgi
from tracekit.asgi import TracekitMiddleware

metrics_port = int(sys.argv[1])


async def answer(request):
    return PlainTextResponse("ok")


@asynccontextmanager
async def lifespan(app):
    tracekit.init("gateway", exporter="none", metrics_port=metrics_port,
                  excluded_urls=["^/health$"])
    yield


def plain(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]


asgi_app = Starlette(routes=[Route("/health", answer), Route("/orders/{id}", answer)],
                     lifespan=lifespan)
asgi_app.add_middleware(TracekitMiddleware)
wsgi_app = wsgi.TracekitMiddleware(plain)  # built before init, as an app factory does
url, stop = start_uvicorn(asgi_app)
wsgi_url, wsgi_stop = start_werkzeug(wsgi_app)
for path in ("/health", "/orders/1"):
    httpx.get(url + path).raise_for_status()
    httpx.get(wsgi_url + path).raise_for_status()
print(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
stop()
wsgi_stop()
tracekit.shutdown()
"""


def test_options_given_to_init_after_the_middleware_was_built_apply() -> None:
    families = metrics_printed_by(SCRIPT)
    counted = {
        (s.labels["service_name"], s.labels["http_route"]): s.value
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    # /health excluded in both; the WSGI app has no routes ("_unmatched")
    assert counted == {("gateway", "/orders/{id}"): 1.0, ("gateway", "_unmatched"): 1.0}
    in_flight = [s.labels["service_name"] for s in families["http_server_active_requests"].samples]
    assert in_flight == ["gateway"]


def test_the_first_requests_on_two_threads_both_find_the_middleware_ready(
    serve_wsgi: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Options are read at the first request. On a threaded server a second first request that
    came while the first was still reading them found them half set: tracekit failed on it
    (an AttributeError, reported once) and the request went untraced, without its correlation
    ID. The first thread is held inside that reading here."""
    import tracekit.wsgi

    reading, release = threading.Event(), threading.Event()
    real_header_keys = tracekit.wsgi.header_keys

    def slow_first_read(names: Any) -> Any:
        if not reading.is_set():
            reading.set()
            release.wait(10)
        return real_header_keys(names)

    monkeypatch.setattr(tracekit.wsgi, "header_keys", slow_first_read)

    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    url = serve_wsgi(wsgi.TracekitMiddleware(hello, registry=CollectorRegistry()))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.get, url + "/", timeout=10)
        assert reading.wait(10), "the first request reads the options"
        second = httpx.get(url + "/", timeout=10)
        release.set()
        assert (first.result().status_code, second.status_code) == (200, 200)
        assert first.result().headers["X-Correlation-ID"] and second.headers["X-Correlation-ID"]
