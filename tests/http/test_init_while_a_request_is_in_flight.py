"""``tracekit.init()`` naming the service while a request is in flight (a FastAPI lifespan that
calls init, a worker that serves before its app factory's init ran): the request was counted in
flight under the service the middleware knew when it started, and must leave that series when it
ends. It left the new service's instead: ``http_server_active_requests`` stayed at 1 for the old
name and went to -1 for the new one, for ever.

A fresh interpreter (init and the global registry are the process's) serves an ASGI and a WSGI
app on loopback and scrapes tracekit's own metrics port.
"""

from __future__ import annotations

from scripted_metrics import metrics_printed_by

SCRIPT = """
import asyncio, sys, threading

import httpx
from loopback import start_uvicorn, start_werkzeug
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import asgi, wsgi

metrics_port = int(sys.argv[1])
entered, release = threading.Semaphore(0), threading.Event()


async def slow(request):
    entered.release()
    while not release.is_set():
        await asyncio.sleep(0.01)
    return PlainTextResponse("slow")


async def fast(request):
    return PlainTextResponse("fast")


def plain(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        entered.release()
        release.wait(10)
    start_response("200 OK", [])
    return [b"ok"]


asgi_app = Starlette(routes=[Route("/slow", slow), Route("/fast", fast)])
asgi_app.add_middleware(asgi.TracekitMiddleware)
servers = [start_uvicorn(asgi_app), start_werkzeug(wsgi.TracekitMiddleware(plain))]
in_flight = [
    threading.Thread(target=httpx.get, args=(url + "/slow",), kwargs={"timeout": 10})
    for url, _ in servers
]
for thread in in_flight:
    thread.start()
assert entered.acquire(timeout=10) and entered.acquire(timeout=10)
tracekit.init("gateway", exporter="none", metrics_port=metrics_port)
for url, _ in servers:
    httpx.get(url + "/fast", timeout=10).raise_for_status()
release.set()
for thread in in_flight:
    thread.join(10)
print(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
for _, stop in servers:
    stop()
tracekit.shutdown()
"""


def test_a_request_in_flight_when_init_renames_the_service_leaves_the_series_it_entered() -> None:
    families = metrics_printed_by(SCRIPT)
    in_flight = {
        s.labels["service_name"]: s.value for s in families["http_server_active_requests"].samples
    }
    # the slow requests started under the name before init, the fast ones under init's
    assert in_flight == {"unknown_service:python": 0.0, "gateway": 0.0}
    counted = sum(
        s.value
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    )
    assert counted == 4  # the two slow requests and the two fast ones, each once
