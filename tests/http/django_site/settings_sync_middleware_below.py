"""The test site with a synchronous-only middleware below tracekit's: under ASGI Django then runs
tracekit's middleware synchronously too (in a worker thread), as it adapts each middleware to
the one below it."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are
from django_site.settings import MIDDLEWARE

MIDDLEWARE = [*MIDDLEWARE, "django_site.sync_only.sync_only"]
