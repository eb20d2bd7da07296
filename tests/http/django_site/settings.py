"""Settings of the test site: tracekit's middleware first, then Django's locale middleware."""

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_I18N = True
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "French")]
MIDDLEWARE = [
    "tracekit.django.TracekitMiddleware",
    "django.middleware.locale.LocaleMiddleware",
]
