"""WSGI middleware: one correlation ID and one SERVER span per request.

Works for Flask, Django and any WSGI app::

    from tracekit.wsgi import TracekitMiddleware
    app.wsgi_app = TracekitMiddleware(app.wsgi_app)   # Flask (or tracekit.flask.init_app(app))
    application = TracekitMiddleware(get_wsgi_application())   # Django's wsgi.py

The span ends when the server closes the response iterable, so streamed responses are covered.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import _state, semconv
from tracekit._guard import report_once
from tracekit._http_server import ActiveRequest, ServerRequests

__all__ = ["TracekitMiddleware"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

ROUTE_KEY = "tracekit.route"  # frameworks' adapters leave the matched route template here
_FLASK_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
_CACHE_LIMIT = 256  # entries per cache below: bounded whatever clients send
_FLASK_TEMPLATES: dict[str, str] = {}
_STATUS_CODES: dict[str, int] = {}


class TracekitMiddleware:
    """Correlates and traces every request of a WSGI app.

    ``tracer_provider`` and ``registry`` default to the global ones; keyword ``options`` override
    those given to ``tracekit.init()`` (for example ``mode="correlation"``).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self._requests = _state.server_requests(tracer_provider, registry, options)
        # Correlation-only mode needs no route names, so no Flask hooks either.
        self._flask = self._requests.records and _connect_flask(app)
        self._echo_lower = self._requests.response_header.lower()
        self._environ_keys = tuple(
            ("HTTP_" + name.upper().replace("-", "_"), name)
            for name in sorted(self._requests.wanted_headers)
        )
        self._attributes = _ServerAttributes()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        excluded = self._requests.excluded_search
        if excluded is not None and excluded(path) is not None:
            return self.app(environ, start_response)
        request = self._start(environ, path)
        if request is None:
            return self.app(environ, start_response)
        echo = (self._requests.response_header, request.correlation_id)
        echo_lower, flask = self._echo_lower, self._flask

        def start_with_correlation(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            request.status_code = _STATUS_CODES.get(status) or _status_code(status)
            if flask and ROUTE_KEY not in environ:
                remember_flask_route(environ)
            for name, _ in headers:
                if name.lower() == echo_lower:
                    break
            else:
                headers.append(echo)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_with_correlation)
        except BaseException as error:
            _finish(self._requests, request, environ, error)
            raise
        return _Response(body, self._requests, request, environ)

    def _start(self, environ: Environ, path: str) -> ActiveRequest | None:
        try:
            headers = {name: [environ[key]] for key, name in self._environ_keys if key in environ}
            attributes = self._attributes(environ) if self._requests.records else {}
            return self._requests.start(
                environ.get("REQUEST_METHOD", "GET"), path, headers, attributes
            )
        except Exception as error:
            report_once("wsgi request start", error)
            return None


class _Response:
    """The app's response iterable; finishing the request when the server closes it."""

    __slots__ = ("_body", "_environ", "_error", "_request", "_requests")

    def __init__(
        self,
        body: Iterable[bytes],
        requests: ServerRequests,
        request: ActiveRequest,
        environ: Environ,
    ) -> None:
        self._body = body
        self._requests = requests
        self._request = request
        self._environ = environ
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except BaseException as error:
            self._error = error
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            _finish(self._requests, self._request, self._environ, self._error)


def _finish(
    requests: ServerRequests, request: ActiveRequest, environ: Environ, error: BaseException | None
) -> None:
    try:
        route = environ.get(ROUTE_KEY) if requests.records else None
        requests.finish(request, route if isinstance(route, str) else None, error)
    except Exception as exc:
        report_once("wsgi request finish", exc)


def route_of(environ: Environ) -> str | None:
    """The matched route template that a framework adapter left in the environ."""
    route = environ.get(ROUTE_KEY)
    return route if isinstance(route, str) else None


def _connect_flask(app: WSGIApp) -> bool:
    """``TracekitMiddleware(flask_app.wsgi_app)`` gets the same route names as ``init_app``."""
    flask = sys.modules.get("flask")
    owner = getattr(app, "__self__", None)
    if flask is not None and isinstance(owner, flask.Flask):
        from tracekit.flask import connect_signals

        connect_signals(owner)
        return True
    return False


def remember_flask_route(environ: Environ) -> None:
    """Keep Flask's matched url rule as the route template, unless an adapter already did.

    Flask calls ``start_response`` inside its request context, while ``werkzeug.request`` in
    the environ is still the request; reading it there costs far less than a signal receiver.
    ``tracekit.flask`` calls it too when a view's exception is about to propagate.
    """
    try:
        if ROUTE_KEY not in environ:
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            template = getattr(rule, "rule", None)
            if isinstance(template, str):
                environ[ROUTE_KEY] = _flask_template(template)
    except Exception as error:
        report_once("wsgi flask route", error)


def _flask_template(rule: str) -> str:
    """``/orders/<int:order_id>`` -> ``/orders/{order_id}`` (an app has few rules: kept)."""
    template = _FLASK_TEMPLATES.get(rule)
    if template is None:
        template = _FLASK_CONVERTER.sub(r"{\1}", rule)
        if len(_FLASK_TEMPLATES) < _CACHE_LIMIT:
            _FLASK_TEMPLATES[rule] = template
    return template


def _status_code(status: str) -> int:
    """The code of a status line (``"404 Not Found"``), remembered for the next response."""
    try:
        code = int(status[:3])
    except ValueError:
        return 0
    if len(_STATUS_CODES) < _CACHE_LIMIT:
        _STATUS_CODES[status] = code
    return code


class _ServerAttributes:
    """The span attributes describing the server, built once per distinct server environ.

    They repeat on every request of a server. Some servers fill ``SERVER_NAME`` from the Host
    header, so the cache is bounded; past the bound each request builds its own.
    """

    def __init__(self) -> None:
        self._built: dict[tuple[object, ...], dict[str, Any]] = {}

    def __call__(self, environ: Environ) -> dict[str, Any]:
        key = (
            environ.get("wsgi.url_scheme"), environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"), environ.get("SERVER_PROTOCOL"),
        )  # fmt: skip
        attributes = self._built.get(key)
        if attributes is None:
            attributes = _attributes(environ)
            if len(self._built) < _CACHE_LIMIT:
                self._built[key] = attributes
        return attributes.copy()  # the span start adds per-request attributes to the copy


def _attributes(environ: Environ) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.URL_SCHEME: environ.get("wsgi.url_scheme", "http")}
    host = environ.get("SERVER_NAME")
    if host:
        attributes[semconv.SERVER_ADDRESS] = host
    port = environ.get("SERVER_PORT")
    if port and port.isdigit():
        attributes[semconv.SERVER_PORT] = int(port)
    protocol = environ.get("SERVER_PROTOCOL", "")
    if protocol.startswith("HTTP/"):
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = protocol[5:]
    return attributes
