"""A wsgi.py as Django writes it (``application = get_wsgi_application()`` last), with
``tracekit.init`` appended after it: Django has built its middleware before ``init`` runs."""

import os

from django.core.wsgi import get_wsgi_application

import tracekit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
application = get_wsgi_application()
tracekit.init("django-site", response_header="X-Site-Correlation")
