"""The test site that also leaves ``/in-flight`` out (it shows what is in flight as it runs),
and every health check under ``/health``."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are

TRACEKIT = {"excluded_urls": ["^/health", "^/in-flight$"]}
