"""wsgi_stacked.py with Django's application behind a function, as a project's own wrapper may
hide it: tracekit's WSGI middleware cannot read the ``TRACEKIT`` setting, which only the Django
middleware inside applies."""

import os
from typing import Any

from django.core.wsgi import get_wsgi_application

import tracekit
from tracekit.wsgi import TracekitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
django_application = get_wsgi_application()


def hidden(environ: Any, start_response: Any) -> Any:
    return django_application(environ, start_response)


application = TracekitMiddleware(hidden)
