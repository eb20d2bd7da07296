"""asgi_stacked.py with Django's application behind a function, as a project's own wrapper may
hide it: tracekit's ASGI middleware cannot read the ``TRACEKIT`` setting, which only the Django
middleware inside applies."""

import os
from typing import Any

from django.core.asgi import get_asgi_application

import tracekit
from tracekit.asgi import TracekitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
django_application = get_asgi_application()


async def hidden(scope: Any, receive: Any, send: Any) -> None:
    await django_application(scope, receive, send)


application = TracekitMiddleware(hidden)
