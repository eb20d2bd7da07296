"""The WSGI entry point, as a project's wsgi.py: tracekit.init, then Django's application."""

import os

from django.core.wsgi import get_wsgi_application

import tracekit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
tracekit.init("django-site")
application = get_wsgi_application()
