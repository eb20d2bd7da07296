"""The README's first service, "shop", as one version of it: what the examples of every
command's ``--help`` are run against (tests/cli/test_help_examples.py).

argv: app-port metrics-port service-version. Spans go into the store ``TRACEKIT_STORE`` names.
``/orders/{order_id}``: order 13 fails (HTTP 500), order 500 takes half a second.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

app_port, metrics_port, version = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
tracekit.init(
    "shop",
    service_version=version,
    exporter="store",
    metrics_port=metrics_port,
    excluded_urls=["^/health$"],
)


async def order(request: Request) -> JSONResponse:
    order_id = int(request.path_params["order_id"])
    if order_id == 500:
        await asyncio.sleep(0.5)
    return JSONResponse({"order": order_id}, status_code=500 if order_id == 13 else 200)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


routes = [Route("/orders/{order_id:int}", order), Route("/health", health)]
app = Starlette(routes=routes, middleware=[Middleware(TracekitMiddleware)])
uvicorn.run(app, host="127.0.0.1", port=app_port, log_level="warning")
