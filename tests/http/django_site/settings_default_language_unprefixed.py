"""The test site with its default language's pages at no language prefix."""

from django_site.settings import *  # noqa: F403 - the site's settings, as they are

ROOT_URLCONF = "django_site.urls_default_language_unprefixed"
