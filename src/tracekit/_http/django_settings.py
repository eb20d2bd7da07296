"""The ``TRACEKIT`` setting of a Django project that tracekit's WSGI or ASGI middleware wraps.

A project that lists ``tracekit.django.TracekitMiddleware`` and also wraps its application in
``wsgi.py`` or ``asgi.py`` (for ``request_started`` receivers) configures tracekit once, in that
setting: the outer layer reads it too, or the two layers read different correlation headers,
echo different ones and name different services for one request. Django is never imported
here: an application is Django's handler only where Django is imported already.
"""

from __future__ import annotations

import sys
from typing import Any

from tracekit._http.server import PER_APP_OPTIONS, ServerRequests
from tracekit._runtime import state
from tracekit._runtime.guard import report_once

# Where wrappers keep the application they wrap (most as ``app``; WhiteNoise as ``application``).
_WRAPPED = ("app", "application")
_MAX_WRAPPERS = 8


def django_options(app: object) -> dict[str, Any]:
    """The options of the ``TRACEKIT`` setting that concern one app's requests, when ``app`` is
    Django's WSGI or ASGI handler or wraps one; else (or for a setting that is not valid,
    which the Django middleware refuses as the project starts) none."""
    try:
        if not _is_django(app):
            return {}
        from django.conf import settings

        setting = getattr(settings, "TRACEKIT", None)
        if not isinstance(setting, dict):
            return {}
        options = {name: value for name, value in setting.items() if name in PER_APP_OPTIONS}
        resolved = state.current_options(**options)
        ServerRequests(resolved)  # valid, as the Django middleware checks it
        if "excluded_urls" in options:  # one expression may be given as a string
            options["excluded_urls"] = resolved.excluded_urls
        return options
    except Exception as error:
        report_once("django TRACEKIT setting", error)
        return {}


def _is_django(app: object) -> bool:
    handlers = sys.modules.get("django.core.handlers.base")
    if handlers is None:
        return False
    for _ in range(_MAX_WRAPPERS):
        if isinstance(app, handlers.BaseHandler):
            return True
        app = next((getattr(app, name) for name in _WRAPPED if hasattr(app, name)), None)
    return False
