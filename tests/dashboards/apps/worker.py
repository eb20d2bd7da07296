"""A service that is no HTTP server of tracekit's, as a process of its own, scraped by a real
Prometheus in test_backlog_panel.py, test_client_only_service.py and
test_messaging_variables.py.

argv: app-port metrics-port service-version role [destination, default ``orders.created``].
``GET /message`` (an unmeasured trigger: no tracekit middleware) does the role's work once; the
role names the service:

- ``publisher``: publishes one message to the destination and ``consumer`` handles one from it,
  through ``tracekit.messaging``: the two ends' metrics are those of a queue whose consumers run
  apart from its publishers, and can stop while those go on.
- ``caller``: calls ``/health`` of this process through httpx (a job that only calls out).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import messaging

app_port, metrics_port, version, role = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
tracekit.init(role, service_version=version, exporter="none", metrics_port=metrics_port)
SYSTEM, DESTINATION = "inproc", sys.argv[5] if len(sys.argv) > 5 else "orders.created"


async def message(request: Request) -> PlainTextResponse:
    if role == "publisher":
        with messaging.publish({}, system=SYSTEM, destination=DESTINATION):
            pass
    elif role == "consumer":
        with messaging.consume({}, system=SYSTEM, destination=DESTINATION):
            pass
    else:
        async with httpx.AsyncClient() as client:
            (await client.get(f"http://127.0.0.1:{app_port}/health")).raise_for_status()
    return PlainTextResponse(role)


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    yield
    tracekit.shutdown()


routes = [Route("/message", message), Route("/health", health)]
app = Starlette(routes=routes, lifespan=lifespan)
uvicorn.run(app, host="127.0.0.1", port=app_port, log_level="warning")
