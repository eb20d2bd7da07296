"""A Starlette service run by test_log_export.py: tracekit.init(), JSON logs on stdout, uvicorn.

argv: port exporter store-path. The lifespan shutdown calls tracekit.shutdown(), so SIGINT flushes
every batched span and log record before the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware
from tracekit.logs import json_stdout_handler

port, exporter, store = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tracekit.init("logsvc", exporter=exporter, store=store, metrics_port=0)
logging.getLogger().setLevel(logging.INFO)
logging.getLogger().addHandler(json_stdout_handler())
log = logging.getLogger("orders")


async def charge(request: Request) -> PlainTextResponse:
    log.info("charging order %s", request.path_params["order_id"], extra={"amount": 12.5})
    return PlainTextResponse("charged")


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    tracekit.shutdown()


app = TracekitMiddleware(Starlette(routes=[Route("/orders/{order_id}", charge)], lifespan=lifespan))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
