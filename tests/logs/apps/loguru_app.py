"""A FastAPI app that logs with loguru, as docs/logs.md ("loguru") sets it up, for uvicorn.

loguru's records get the correlation fields from a patcher; uvicorn's stdlib records are
handed to loguru with the fields tracekit stamped on them.
``app.add_middleware`` puts tracekit's middleware inside Starlette's error middleware, so the
handler for ``Exception`` runs after the request's context was put back.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from loguru import logger

import tracekit
from tracekit.asgi import TracekitMiddleware
from tracekit.logs import EMPTY, STAMPED_FIELDS, current_fields

tracekit.init("loguru-shop", metrics_port=0)


def add_tracekit_fields(record: Any) -> None:
    """The patcher docs/logs.md shows."""
    for name, value in current_fields().items():
        record["extra"].setdefault(name, value)


logger.remove()
logger.configure(patcher=add_tracekit_fields)
logger.add(
    sys.stdout,
    format="loguru {level} [{extra[correlation_id]} {extra[trace_id]}] {message}",
    backtrace=False,
    diagnose=False,
)


class ToLoguru(logging.Handler):
    """Hands stdlib records (uvicorn's) to loguru, with the fields tracekit stamped on them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        fields = {name: getattr(record, name, EMPTY) for name in STAMPED_FIELDS}
        logged = logger.bind(**fields).opt(exception=record.exc_info)
        logged.log(level, record.getMessage())


logging.basicConfig(handlers=[ToLoguru()], level=logging.INFO, force=True)
for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
    logging.getLogger(name).handlers = []
    logging.getLogger(name).propagate = True

app = FastAPI()
app.add_middleware(TracekitMiddleware)


@app.get("/order")
def order() -> PlainTextResponse:
    """Log one line inside the request."""
    logger.info("loguru view: order page")
    return PlainTextResponse("ok")


@app.get("/fail")
def fail() -> PlainTextResponse:
    """Raise: the handler below logs it, outside the request's context."""
    raise RuntimeError("the failing page failed")


@app.exception_handler(Exception)
async def unexpected(request: Request, error: Exception) -> PlainTextResponse:
    """Log what a request raised, as FastAPI users do."""
    logger.exception("loguru handler: unexpected error")
    return PlainTextResponse("sorry", status_code=500)
