"""Settings of the test site: tracekit's middleware first, then Django's locale middleware and
one that fails on ``/middleware-crash``; ``/health`` is excluded from tracing."""

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "French")]
TRACEKIT = {"excluded_urls": ["^/health$"]}
MIDDLEWARE = [
    "tracekit.django.TracekitMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django_site.failing.FailingMiddleware",
]
