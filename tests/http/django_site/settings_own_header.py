"""The test site with its tracekit configuration in the ``TRACEKIT`` setting alone: its own
correlation header, read and echoed, its own service name, and paths left out (health checks,
and ``/in-flight``, which shows what is in flight while it runs)."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are

TRACEKIT = {
    "correlation_headers": ["X-Request-ID"],
    "response_header": "X-Request-ID",
    "service_name": "shop",
    "excluded_urls": ["^/health", "^/in-flight$"],
}
