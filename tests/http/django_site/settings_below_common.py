"""The test site with tracekit's middleware below Django's CommonMiddleware, not first: for a
path without its trailing slash CommonMiddleware answers with a redirect of its own, in place of
the 404 response tracekit's middleware saw (which is never closed)."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are
from django_site.settings import MIDDLEWARE

MIDDLEWARE = ["django.middleware.common.CommonMiddleware", *MIDDLEWARE]
