"""A Starlette app that logs inside a request (and one that fails), for uvicorn with a logging
config.

As a module (``uvicorn asgi_logging:app --log-config FILE``) uvicorn applies the file before it
imports the app; run as a script (``python asgi_logging.py PORT FILE``) the app calls
``uvicorn.run(app, log_config=FILE)`` after ``tracekit.init``, so the file is applied after it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import Future

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
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


# A shared lookup two requests await at once, failing once both wait for it.
_lookup_awaited: list[asyncio.Future[str]] = []


async def shared_failure_together(request: Request) -> PlainTextResponse:
    """Await the lookup the other request awaits too; the second to come fails it, and both
    raise its one exception together."""
    if not _lookup_awaited:
        _lookup_awaited.append(asyncio.get_running_loop().create_future())
        return PlainTextResponse(await _lookup_awaited[0])
    lookup = _lookup_awaited.pop()
    lookup.set_exception(RuntimeError("the shared lookup failed"))
    return PlainTextResponse(await lookup)


routes = [
    Route("/order", order),
    Route("/fail", fail),
    Route("/shared-failure", shared_failure),
    Route("/shared-failure-together", shared_failure_together),
]
app = TracekitMiddleware(Starlette(routes=routes))


async def timed(request: Request, call_next: RequestResponseEndpoint) -> Response:
    """An ``@app.middleware("http")`` function: Starlette runs what is below it in a task of
    its own, and raises what that raised again in the request's task."""
    return await call_next(request)


# tracekit's middleware below a function middleware (``python asgi_logging.py PORT FILE below``)
below_function_middleware = Starlette(
    routes=routes,
    middleware=[Middleware(BaseHTTPMiddleware, dispatch=timed), Middleware(TracekitMiddleware)],
)

# tracekit's middleware below GZip, which holds a response's start back until its body comes
# (``python asgi_logging.py PORT FILE gzip``): Starlette's order for ``add_middleware(Tracekit…)``
# followed by ``add_middleware(GZipMiddleware)``.
below_gzip = Starlette(
    routes=routes, middleware=[Middleware(GZipMiddleware), Middleware(TracekitMiddleware)]
)
SERVED = {"below": below_function_middleware, "gzip": below_gzip}

if __name__ == "__main__":
    import uvicorn

    served = SERVED.get(sys.argv[3], app) if len(sys.argv) > 3 else app
    uvicorn.run(served, host="127.0.0.1", port=int(sys.argv[1]), log_config=sys.argv[2])
