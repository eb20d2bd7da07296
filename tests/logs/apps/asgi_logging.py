"""A Starlette app that logs inside a request (and one that fails), for uvicorn with a logging
config.

As a module (``uvicorn asgi_logging:app --log-config FILE``) uvicorn applies the file before it
imports the app; run as a script (``python asgi_logging.py PORT FILE``) the app calls
``uvicorn.run(app, log_config=FILE)`` after ``tracekit.init``, so the file is applied after it.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import Future

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

tracekit.init("asgi-shop", metrics_port=0)


async def order(request: Request) -> PlainTextResponse:
    """Log one line inside the request."""
    logging.getLogger("shop.asgi").info("asgi view: order page")
    return PlainTextResponse("ok")


async def fail(request: Request) -> PlainTextResponse:
    """Log one line, then raise: uvicorn answers 500 and logs the exception."""
    logging.getLogger("shop.asgi").info("asgi view: failing page")
    raise RuntimeError("the failing page failed")


# A shared lookup that failed once: every request awaiting it gets its one exception raised.
_failed_lookup: Future[str] = Future()
_failed_lookup.set_exception(RuntimeError("the shared lookup failed"))


async def shared_failure(request: Request) -> PlainTextResponse:
    """Raise the exception of the shared lookup: the same object in every request."""
    return PlainTextResponse(_failed_lookup.result())


routes = [Route("/order", order), Route("/fail", fail), Route("/shared-failure", shared_failure)]
app = TracekitMiddleware(Starlette(routes=routes))

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=sys.argv[2])
