"""Settings of a one-view Django site whose LOGGING replaces the root logger's handlers.

``django_wsgi`` calls ``tracekit.init`` first; ``django.setup()`` applies LOGGING afterwards.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
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


urlpatterns = [path("order", order)]
