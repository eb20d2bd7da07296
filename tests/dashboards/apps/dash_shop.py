"""One version of the "shop" service, scraped by a real Prometheus in test_dashboard_queries.py.

argv: app-port metrics-port service-version [service-name, default ``shop``].
``tracekit.init()`` serves metrics on the metrics port; spans are made (exemplars need sampled
spans) but not exported. Every metric family the dashboards read gets traffic:

- ``/orders/{order_id}``: HTTP server; ids starting with ``slow`` sleep 0.3 s, ids starting
  with ``fail`` answer 500.
- ``/fail``: HTTP 500.
- ``/crash``: raises; the app's own exception handler answers 500 (tracekit records that status
  beside the exception, from its wrapper of the handler).
- ``/checkout/{cart_id}``: calls ``/orders/{cart_id}`` on this service through httpx (HTTP client
  metrics, exemplars) and publishes the cart to the in-process queue ``orders.created``
  (``tracekit.messaging.publish``, ``inproc_queue``). A consumer thread handles each message inside
  ``tracekit.messaging.consume`` after a short wait; carts starting with ``poison`` make the
  handler raise (failed messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from inproc_queue import InProcessQueue
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

app_port, metrics_port, version = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
service = sys.argv[4] if len(sys.argv) > 4 else "shop"
tracekit.init(service, service_version=version, exporter="none", metrics_port=metrics_port)
client: httpx.AsyncClient  # one client: building one per request costs an SSL context each time


async def order(request: Request) -> PlainTextResponse:
    if request.path_params["order_id"].startswith("slow"):
        await asyncio.sleep(0.3)
    if request.path_params["order_id"].startswith("fail"):
        return PlainTextResponse("no such order", status_code=500)
    return PlainTextResponse("ok")


async def fail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("boom", status_code=500)


async def crash(request: Request) -> PlainTextResponse:
    raise RuntimeError("an exception the app's own handler answers with a 500")


async def checkout(request: Request) -> PlainTextResponse:
    cart = request.path_params["cart_id"]
    reply = await client.get(f"http://127.0.0.1:{app_port}/orders/{cart}")
    created.publish(cart)
    return PlainTextResponse(reply.text)


def handle(cart: str) -> None:
    if cart.startswith("poison"):
        raise ValueError("cannot handle this cart")


created = InProcessQueue("orders.created", handle, wait_s=0.02)  # a measurable queue wait


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    global client
    client = httpx.AsyncClient()
    with created.consuming():
        yield
    await client.aclose()
    tracekit.shutdown()


routes = [
    Route("/orders/{order_id}", order),
    Route("/fail", fail),
    Route("/crash", crash),
    Route("/checkout/{cart_id}", checkout),
]


async def crashed(request: Request, error: Exception) -> PlainTextResponse:
    return PlainTextResponse("crashed", status_code=500)


# add_middleware's place: inside Starlette's ServerErrorMiddleware, which answers /crash with
# the app's own handler's page, after the exception has left tracekit's middleware
app = Starlette(
    routes=routes,
    lifespan=lifespan,
    middleware=[Middleware(TracekitMiddleware)],
    exception_handlers={Exception: crashed},
)
uvicorn.run(app, host="127.0.0.1", port=app_port, log_level="warning")
