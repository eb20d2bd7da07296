"""An asgi.py that wraps Django in tracekit's ASGI middleware while settings.py lists tracekit's
Django middleware; with ``STACKED_DJANGO_CONTRIB``, OpenTelemetry's Django instrumentation on:
its middleware runs between the two tracekit layers."""

import os

from django.core.asgi import get_asgi_application

import tracekit
from tracekit.asgi import TracekitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
if os.environ.get("STACKED_DJANGO_CONTRIB"):
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument()
application = TracekitMiddleware(get_asgi_application())
