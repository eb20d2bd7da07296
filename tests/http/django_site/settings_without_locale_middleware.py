"""The test site with its default language's pages at no language prefix, and no
``LocaleMiddleware``: English is the language of every request, whatever its path."""

from django_site.settings_default_language_unprefixed import *  # noqa: F403 - as they are

MIDDLEWARE = ["tracekit.django.TracekitMiddleware"]
