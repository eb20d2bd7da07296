"""Settings of a small Django site whose LOGGING replaces the root logger's handlers.

``django_wsgi`` and ``django_asgi`` call ``tracekit.init`` first; ``django.setup()`` applies
LOGGING afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

SECRET_KEY = "test-only"  # a throw-away site on loopback
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = __name__
MIDDLEWARE = ["tracekit.django.TracekitMiddleware"]
INSTALLED_APPS: list[str] = []
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,  # as Django's docs advise: django.request logs 4xx/5xx
    "formatters": {
        "site": {"format": "django-site %(levelname)s [%(correlation_id)s] %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "site"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}


def order(request: HttpRequest) -> HttpResponse:
    """Log one line inside the request."""
    logging.getLogger("shop.views").info("django view: order page")
    return HttpResponse("ok")


def stream_failing(request: HttpRequest) -> StreamingHttpResponse:
    """A streamed body that raises after its first chunk (``?first``: before it), which the
    server logs after the request's context was put back. Under ASGI an async body, unless
    ``?sync`` (Django reads a sync one whole in a thread of its own)."""

    def body() -> Iterator[bytes]:
        if "first" not in request.GET:
            yield b"part of the report\n"
        raise RuntimeError("the report's source went away")

    async def async_body() -> AsyncIterator[bytes]:  # the body an ASGI server streams
        for part in body():
            yield part

    asgi = hasattr(request, "scope") and "sync" not in request.GET
    return StreamingHttpResponse(async_body() if asgi else body())


# The bodies of ``stream_failing_together`` waiting for the others (ASGI: one event loop).
_together: list[asyncio.Future[None]] = []


def stream_failing_together(request: HttpRequest) -> StreamingHttpResponse:
    """An async streamed body that raises once ``?of=N`` such bodies have sent a chunk, all of
    them at once, before the server logs the first; its message names ``?order=``."""
    order, count = request.GET["order"], int(request.GET["of"])

    async def body() -> AsyncIterator[bytes]:
        yield b"part of the report\n"
        _together.append(waiting := asyncio.get_running_loop().create_future())
        if len(_together) == count:
            for other in _together:
                other.set_result(None)
            _together.clear()
        await waiting
        raise RuntimeError(f"the source of order {order}'s report went away")

    return StreamingHttpResponse(body())


urlpatterns = [
    path("order", order),
    path("stream-failing", stream_failing),
    path("stream-failing-together", stream_failing_together),
]
