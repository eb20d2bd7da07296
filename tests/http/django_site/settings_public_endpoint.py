"""The test site as a public endpoint, set in its ``TRACEKIT`` setting: a caller's trace is
linked, not continued."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are

TRACEKIT = {"public_endpoint": True}
