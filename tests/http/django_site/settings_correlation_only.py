"""The test site in correlation-only mode, set in its ``TRACEKIT`` setting: IDs, no spans."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are

TRACEKIT = {"mode": "correlation"}
