"""The test site with Django's per-site cache as Django's docs list it: ``UpdateCacheMiddleware``
first, above tracekit's (it pickles each response it caches), ``FetchFromCacheMiddleware``
last."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are
from django_site.settings import MIDDLEWARE

MIDDLEWARE = [
    "django.middleware.cache.UpdateCacheMiddleware",
    *MIDDLEWARE,
    "django.middleware.cache.FetchFromCacheMiddleware",
]
