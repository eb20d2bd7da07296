"""The ASGI entry point, as a project's asgi.py: tracekit.init, then Django's application."""

import os

from django.core.asgi import get_asgi_application

import tracekit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
application = get_asgi_application()
