"""A wsgi.py for a project traced by OpenTelemetry's WSGI middleware and Django instrumentation,
with tracekit's Django middleware in settings.py: contrib's Django middleware, first in
MIDDLEWARE, opens its span inside contrib's WSGI span, before tracekit's middleware runs."""

import os

from django.core.wsgi import get_wsgi_application
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

import tracekit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
DjangoInstrumentor().instrument()
application = OpenTelemetryMiddleware(get_wsgi_application())
