"""Flask helper: ``tracekit.flask.init_app(app)`` wraps ``app.wsgi_app`` once.

Spans are named by Flask's url rule (``GET /orders/{id}``): Flask clears the request object from
the environ when its request context ends, before the server closes the response and the span
ends, so ``init_app`` copies the rule into the environ on Flask's ``request_started`` signal. Flask
also turns a view's exception into a 500 response before the WSGI middleware sees it, so the
``got_request_exception`` signal records the exception on the request's SERVER span.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from tracekit import semconv
from tracekit._guard import guarded
from tracekit.wsgi import ROUTE_KEY, TracekitMiddleware

__all__ = ["init_app"]

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def init_app(app: Any, **options: Any) -> Any:
    """Trace and correlate every request of Flask ``app``; calling it twice is harmless.

    ``options`` are those of ``tracekit.wsgi.TracekitMiddleware`` (``tracer_provider``,
    ``registry`` and any ``tracekit.init`` option such as ``excluded_urls``). Returns ``app``.
    """
    if not isinstance(app.wsgi_app, TracekitMiddleware):
        app.wsgi_app = TracekitMiddleware(app.wsgi_app, **options)  # connects the signals
    return app


def connect_signals(app: Any) -> None:
    """Name spans by ``app``'s url rules and record its views' exceptions (idempotent)."""
    import flask

    flask.request_started.connect(_remember_route, app, weak=False)
    flask.got_request_exception.connect(_record_exception, app, weak=False)


@guarded(None)
def _remember_route(sender: Any, **extra: Any) -> None:
    import flask

    rule = flask.request.url_rule
    if rule is not None:
        flask.request.environ[ROUTE_KEY] = _CONVERTER.sub(r"{\1}", rule.rule)


@guarded(None)
def _record_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.record_exception(exception)
    span.set_attribute(semconv.ERROR_TYPE, type(exception).__qualname__)
    span.set_status(Status(StatusCode.ERROR, type(exception).__qualname__))
