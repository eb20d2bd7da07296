"""Settings of a small Django site whose LOGGING replaces the root logger's handlers.

``django_wsgi`` and ``django_asgi`` call ``tracekit.init`` first; ``django.setup()`` applies
LOGGING afterwards.
"""

from __future__ import annotations

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
    server logs after the request's context was put back."""

    def body() -> Iterator[bytes]:
        if "first" not in request.GET:
            yield b"part of the report\n"
        raise RuntimeError("the report's source went away")

    async def async_body() -> AsyncIterator[bytes]:  # the body an ASGI server streams
        for part in body():
            yield part

    return StreamingHttpResponse(async_body() if hasattr(request, "scope") else body())


urlpatterns = [path("order", order), path("stream-failing", stream_failing)]
