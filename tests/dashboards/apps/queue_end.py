"""One end of a queue hop as a process of its own, scraped by a real Prometheus in
test_backlog_panel.py.

argv: app-port metrics-port service-version role. ``role`` is ``publisher`` or ``consumer``;
``GET /message`` publishes one message to the destination ``orders.created`` (a publisher) or
handles one from it (a consumer), through ``tracekit.messaging``: the two ends' metrics are
those of a queue whose consumers run apart from its publishers, and can stop while those go on.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit import messaging

app_port, metrics_port, version, role = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
tracekit.init(role, service_version=version, exporter="none", metrics_port=metrics_port)
SYSTEM, DESTINATION = "inproc", "orders.created"


async def message(request: Request) -> PlainTextResponse:
    if role == "publisher":
        with messaging.publish({}, system=SYSTEM, destination=DESTINATION):
            pass
    else:
        with messaging.consume({}, system=SYSTEM, destination=DESTINATION):
            pass
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
