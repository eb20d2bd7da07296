"""A wsgi.py that also wraps Django in tracekit's WSGI middleware, as tracekit.wsgi's docstring
shows, while settings.py lists tracekit's Django middleware: two tracekit layers, one request."""

import os

from django.core.wsgi import get_wsgi_application

import tracekit
from tracekit.wsgi import TracekitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
if os.environ.get("STACKED_DJANGO_CONTRIB"):
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    # Its middleware goes first in MIDDLEWARE: between the two tracekit layers.
    DjangoInstrumentor().instrument()
application = TracekitMiddleware(get_wsgi_application())
if os.environ.get("STACKED_CONTRIB_OUTSIDE"):
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    application = OpenTelemetryMiddleware(application)
