"""Flask helper: ``tracekit.flask.init_app(app)`` wraps ``app.wsgi_app`` once.

Spans are named by Flask's url rule (``GET /orders/{id}``) and a view's exception is recorded on
its SERVER span: the WSGI middleware does both for a Flask app (``tracekit._http.flask_hooks``).
"""

from __future__ import annotations

from typing import Any

from tracekit.wsgi import TracekitMiddleware

__all__ = ["init_app"]


def init_app(app: Any, **options: Any) -> Any:
    """Trace and correlate every request of Flask ``app``; calling it twice is harmless.

    ``options`` are those of ``tracekit.wsgi.TracekitMiddleware`` (``tracer_provider``,
    ``registry`` and the options of ``tracekit.init`` that concern one app's requests, such as
    ``excluded_urls``). Returns ``app``.
    """
    if not isinstance(app.wsgi_app, TracekitMiddleware):
        # ``app`` itself: its wsgi_app may already be wrapped (ProxyFix, DispatcherMiddleware)
        app.wsgi_app = TracekitMiddleware(app.wsgi_app, flask_app=app, **options)
    return app
