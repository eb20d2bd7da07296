"""The ASGI entry of the Django site: tracekit first, then Django (which applies LOGGING)."""

import os

import tracekit

tracekit.init("django-site", metrics_port=0)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")

from django.core.asgi import get_asgi_application  # noqa: E402 - after init, as documented

application = get_asgi_application()
