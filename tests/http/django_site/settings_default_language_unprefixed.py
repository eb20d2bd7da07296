"""The test site with its default language's pages at no language prefix."""

from django_site.settings import (  # noqa: F401 - the site's settings, as they are
    ALLOWED_HOSTS,
    DATABASES,
    DEBUG,
    INSTALLED_APPS,
    LANGUAGE_CODE,
    LANGUAGES,
    MIDDLEWARE,
    SECRET_KEY,
    TRACEKIT,
    USE_I18N,
)

ROOT_URLCONF = "django_site.urls_default_language_unprefixed"
