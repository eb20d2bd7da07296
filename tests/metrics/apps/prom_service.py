"""A Starlette service scraped by a real Prometheus in test_prometheus_scrape.py.

argv: app-port metrics-port store-path. tracekit.init() serves metrics on the metrics port and
exports spans into the store, so the test can match exemplars to spans. Routes:
``/orders/{order_id}`` (order ids starting with ``slow`` sleep 0.3 s) and ``/fail`` (HTTP 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

app_port, metrics_port, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tracekit.init(
    "promsvc", service_version="1.2.3", exporter="store", store=store, metrics_port=metrics_port
)
SLOW_SECONDS = 0.3


async def order(request: Request) -> PlainTextResponse:
    if request.path_params["order_id"].startswith("slow"):
        await asyncio.sleep(SLOW_SECONDS)
    return PlainTextResponse("ok")


async def fail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("boom", status_code=500)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    tracekit.shutdown()


routes = [Route("/orders/{order_id}", order), Route("/fail", fail)]
app = TracekitMiddleware(Starlette(routes=routes, lifespan=lifespan))
uvicorn.run(app, host="127.0.0.1", port=app_port, log_level="warning")
