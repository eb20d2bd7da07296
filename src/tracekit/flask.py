"""Flask helper: ``tracekit.flask.init_app(app)`` wraps ``app.wsgi_app`` once.

Spans are named by Flask's url rule (``GET /orders/{id}``). The WSGI middleware reads the rule
while Flask calls ``start_response`` inside its request context (Flask clears the request from
the environ when that context ends, before the server closes the response and the span ends).
Flask also turns a view's exception into a 500 response before the WSGI middleware sees it, so
the ``got_request_exception`` signal records the exception on the request's SERVER span, and keeps
the route for the one case where no response starts in the request context: an exception Flask
propagates (``PROPAGATE_EXCEPTIONS``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from tracekit._runtime.guard import guarded, mark_failed
from tracekit.wsgi import TracekitMiddleware, _remember_flask_route

__all__ = ["init_app"]


def init_app(app: Any, **options: Any) -> Any:
    """Trace and correlate every request of Flask ``app``; calling it twice is harmless.

    ``options`` are those of ``tracekit.wsgi.TracekitMiddleware`` (``tracer_provider``,
    ``registry`` and any ``tracekit.init`` option such as ``excluded_urls``). Returns ``app``.
    """
    if not isinstance(app.wsgi_app, TracekitMiddleware):
        app.wsgi_app = TracekitMiddleware(app.wsgi_app, **options)  # connects the signals
    return app


def _connect_signals(app: Any) -> None:
    """Record the exceptions of ``app``'s views on their SERVER spans (idempotent).

    Route names need no signal: a receiver of ``request_started`` would run on every request,
    while the middleware reads the url rule for free when the response starts.
    """
    import flask

    flask.got_request_exception.connect(_record_exception, app, weak=False)


@guarded(None)
def _record_exception(sender: Any, exception: BaseException, **extra: Any) -> None:
    import flask

    _remember_flask_route(flask.request.environ)
    span = trace.get_current_span()
    if span.is_recording():
        mark_failed(span, exception)
