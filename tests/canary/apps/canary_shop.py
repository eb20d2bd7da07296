"""One version of the "shop" service for the canary tests: scraped by a real Prometheus, spans in
the store, so both of ``tracekit canary``'s sources see the same requests.

argv: app-port metrics-port version store-path slow-seconds fail-every. Routes:

- ``/fast/{n}``: answers at once.
- ``/slow/{n}``: sleeps slow-seconds (the canary is given a longer sleep).
- ``/pay/{n}``: HTTP 500 when n is a multiple of fail-every (0: never).
- ``/checkout/{n}``: sleeps slow-seconds and answers 200, but for the same n as /pay it answers
  503 at once (a dependency refused it before any work was done).
- ``/export/{n}``: streams its body in two chunks; for the same n as /pay it raises after the
  first (the 200 has gone out, the client gets a cut body).
- ``/publish/{n}``: queues n in-process (``inproc_queue``); a consumer thread handles it inside
  ``tracekit.messaging.consume`` (destination ``orders.paid``), raising for the same n as /pay.
- ``/health``: for the readiness probe, not part of the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from inproc_queue import InProcessQueue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

app_port, metrics_port, version, store = (
    int(sys.argv[1]),
    int(sys.argv[2]),
    sys.argv[3],
    sys.argv[4],
)
slow_seconds, fail_every = float(sys.argv[5]), int(sys.argv[6])
tracekit.init("shop", service_version=version, exporter="store", store=store,
              metrics_port=metrics_port)  # fmt: skip


def failing(n: int) -> bool:
    return fail_every > 0 and n % fail_every == 0


async def fast(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(slow_seconds)
    return PlainTextResponse("ok")


async def pay(request: Request) -> PlainTextResponse:
    failed = failing(int(request.path_params["n"]))
    return PlainTextResponse("declined" if failed else "paid", status_code=500 if failed else 200)


async def checkout(request: Request) -> PlainTextResponse:
    if failing(int(request.path_params["n"])):
        return PlainTextResponse("payments unavailable", status_code=503)
    await asyncio.sleep(slow_seconds)
    return PlainTextResponse("ordered")


async def export(request: Request) -> StreamingResponse:
    failed = failing(int(request.path_params["n"]))

    async def rows() -> AsyncIterator[bytes]:
        yield b"first rows\n"
        if failed:
            raise ConnectionResetError("the database went away mid-export")
        yield b"last rows\n"

    return StreamingResponse(rows(), media_type="text/plain")


async def publish(request: Request) -> PlainTextResponse:
    paid.publish(int(request.path_params["n"]))
    return PlainTextResponse("queued")


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def handle(n: int) -> None:
    time.sleep(0.002)
    if failing(n):
        raise ValueError("payment record missing")


paid = InProcessQueue("orders.paid", handle)


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    with paid.consuming():
        yield
    tracekit.shutdown()


routes = [
    Route("/fast/{n}", fast), Route("/slow/{n}", slow), Route("/pay/{n:int}", pay),
    Route("/checkout/{n:int}", checkout), Route("/export/{n:int}", export),
    Route("/publish/{n:int}", publish),
    Route("/health", health),
]  # fmt: skip
app = TracekitMiddleware(Starlette(routes=routes, lifespan=lifespan))
uvicorn.run(app, host="127.0.0.1", port=app_port, log_level="warning")
