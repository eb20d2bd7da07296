"""``tracekit.init()`` called after the middleware was built: in a FastAPI/Starlette lifespan
(Starlette builds its middleware stack before the lifespan starts), or after a WSGI app factory
wrapped the app. The middleware read its options when it was built: the metrics were labelled
``unknown_service:python`` and ``excluded_urls`` given to ``init`` were not excluded.

A fresh interpreter (init and the global registry are the process's) serves both apps on
loopback and scrapes tracekit's own metrics port.
"""

from __future__ import annotations

from scripted_metrics import metrics_printed_by

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
