"""WSGI middleware: one correlation ID and one SERVER span per request.

Works for Flask and any WSGI app::

    from tracekit.wsgi import TracekitMiddleware
    app.wsgi_app = TracekitMiddleware(app.wsgi_app)   # Flask (or tracekit.flask.init_app(app))

Django: ``tracekit.django.TracekitMiddleware`` in ``MIDDLEWARE`` (this layer around Django's
application alone sees no URL pattern: every request would be named by its method only).

The span ends when the last chunk of the body has been handed to the server (at the latest when
the server closes the response), so streamed responses are covered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import correlation, semconv
from tracekit._http import flask_hooks
from tracekit._http.django_settings import django_options
from tracekit._http.server import (
    CLIENT_CLOSED_REQUEST,
    OUTER_REQUEST_KEY,
    ActiveRequest,
    OptionsReadLate,
    ServerRequests,
    address_or_none,
)
from tracekit._http.wsgi_environ import (
    CACHE_LIMIT,
    CONTEXT_KEY,
    ERROR_KEY,
    HANDLED_ERROR_KEY,
    ROOT_KEY,
    ROUTE_KEY,
    Environ,
    ExcInfo,
    ServerAttributes,
    StartResponse,
    WSGIApp,
    client_left,
    header_keys,
    headers_of,
    request_path,
    server_answer,
    url_path,
)
from tracekit._runtime.guard import report_once

__all__ = ["ROUTE_KEY", "TracekitMiddleware"]

_STATUS_CODES: dict[str, int] = {}


class TracekitMiddleware(OptionsReadLate):
    """Correlates and traces every request of a WSGI app.

    ``tracer_provider`` and ``registry`` default to the global ones; keyword ``options`` override
    those given to ``tracekit.init()`` (for example ``mode="correlation"``). ``flask_app`` is the
    Flask app below ``app`` when wrappers (``ProxyFix``, ``DispatcherMiddleware``) hide it, for
    its route names and view exceptions (``tracekit.flask.init_app`` passes it).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        flask_app: object | None = None,
        **options: Any,
    ) -> None:
        super().__init__(tracer_provider, registry, options)
        self.app = app
        self._flask_app = flask_app or app
        self._attributes = ServerAttributes()

    def _options_below(self) -> dict[str, Any]:
        return django_options(self.app)

    def _configure(self, requests: ServerRequests) -> None:
        # Correlation-only mode needs no route names, so no Flask hooks either.
        self._flask = requests.records and flask_hooks.connect(self._flask_app)
        self._echo_lower = requests.response_header.lower()
        self._environ_keys = header_keys(requests.wanted_headers)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        self._read_options()
        path = request_path(environ)
        excluded = self._requests.excluded_search
        if excluded is not None and excluded(path) is not None:
            return self.app(environ, start_response)
        untraced = self.untraced_search  # paths a Django project's TRACEKIT setting excludes
        traced = untraced is None or untraced(path) is None
        request = self._start(environ, url_path(environ, path), traced)
        if request is None:
            return self.app(environ, start_response)
        environ[CONTEXT_KEY] = correlation._request_context()
        echo = (self._requests.response_header, request.correlation_id)
        echo_lower, flask = self._echo_lower, self._flask
        if flask:  # where a Flask app mounted below (DispatcherMiddleware) is found
            environ.setdefault(ROOT_KEY, self.app)

        def start_with_correlation(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if flask and ROUTE_KEY not in environ:
                flask_hooks.remember_route(environ)
            for name, _ in headers:
                if name.lower() == echo_lower:
                    break
            else:  # a new list: the application's may be shared between requests, or a tuple
                headers = [*headers, echo]
            write = start_response(status, headers, exc_info)
            # Only a status the server took: it refuses a second one (PEP 3333), and raises
            # exc_info again once the first has gone out, which the client then got.
            request.status_code = _STATUS_CODES.get(status) or _status_code(status)
            if exc_info is not None:  # the app answers an exception (Bottle's error pages)
                _remember_handled(environ, exc_info)
            return write

        try:
            body = self.app(environ, start_with_correlation)
        except BaseException as error:
            # A response the app started has not gone out (PEP 3333: not before its first
            # chunk); the server answers instead, without the correlation header.
            request.status_code = server_answer(error, environ)
            _finish(self._requests, request, environ, error)
            raise
        sized = hasattr(body, "__len__")
        response = (_SizedResponse if sized else _Response)(body, self._requests, request, environ)
        return _file_or(response, body, environ)

    def _start(self, environ: Environ, path: str, traced: bool) -> ActiveRequest | None:
        try:
            headers = headers_of(environ, self._environ_keys)
            attributes = self._attributes(environ) if self._requests.records and traced else {}
            request = self._requests.start(
                environ.get("REQUEST_METHOD", "GET"), path, headers, attributes,
                enclosing=environ.get(OUTER_REQUEST_KEY), traced=traced,
                route_of=(lambda: flask_hooks.matched_route(environ)) if self._flask else None,
            )  # fmt: skip
            if request.outer is None:  # for a layer inside (Django's middleware)
                environ[OUTER_REQUEST_KEY] = request
            return request
        except Exception as error:
            report_once("wsgi request start", error)
            return None


class _Response:
    """The app's response iterable; finishing the request when the body is done.

    That is when the last chunk has been handed to the server or, at the latest, when the server
    closes the response. Not only on close: werkzeug's server skips ``close()`` when the client
    resets the connection after reading the answer, which would lose the span.
    """

    __slots__ = (
        "_body", "_close", "_closed", "_environ", "_error", "_held", "_request", "_requests",
    )  # fmt: skip

    def __init__(
        self,
        body: Iterable[bytes],
        requests: ServerRequests,
        request: ActiveRequest,
        environ: Environ,
    ) -> None:
        self._body = body
        self._close = getattr(body, "close", None)
        self._requests = requests
        self._request = request
        self._environ = environ
        self._error: BaseException | None = None
        self._held: Exception | None = None  # what the body's close raised, for the server's
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        answered = False  # a chunk has gone to the server, and the status line with it
        try:
            for chunk in self._body:
                yield chunk
                answered = True
        except GeneratorExit:  # the server stopped reading (a client gone mid-stream)
            self._close_for_server()
            raise
        except BaseException as error:
            self._error = error
            if not answered:  # the server answers instead
                self._request.status_code = server_answer(error, self._environ)
            self.close()
            raise
        self._close_for_server()

    def _close_for_server(self) -> None:
        """Close inside the server's loop over the body, keeping what the close raises for the
        server's own ``close()``, as without tracekit. Raised here, it would cut the response
        the server has yet to end (gunicorn's and werkzeug's last chunk of a chunked one), or,
        where the server let go of the loop (a client gone mid-stream), reach no one: Python
        prints it as ignored."""
        try:
            self.close()
        except Exception as error:
            self._held = error

    def close(self) -> None:
        """Close the app's body (once) and finish the request."""
        if self._closed:
            held, self._held = self._held, None
            if held is not None:
                raise held
            return
        self._closed = True
        try:
            if self._close is not None:
                self._close()
        except BaseException as error:
            # Servers close the response once its last chunk has gone (Django's
            # request_finished receivers run here): the request answered, then this failed.
            _finish(self._requests, self._request, self._environ, self._error, after=error)
            raise
        _finish(self._requests, self._request, self._environ, self._error)


class _SizedResponse(_Response):
    """A response whose body has a length (a list of chunks): the server may count it (PEP 3333:
    one chunk lets a server such as wsgiref send Content-Length itself)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._body)  # type: ignore[arg-type]


def _file_or(response: _Response, body: Iterable[bytes], environ: Environ) -> Iterable[bytes]:
    """The server's own ``wsgi.file_wrapper`` answer, finishing the request when the server
    closes it; else ``response``.

    A server sends a file wrapper its own way (gunicorn with ``sendfile``) only when it gets its
    wrapper back: the request then ends at ``close()``, which PEP 3333 servers always call.
    """
    wrapper = environ.get("wsgi.file_wrapper")
    if not isinstance(wrapper, type) or not isinstance(body, wrapper):
        return response
    try:
        body.close = response.close  # type: ignore[attr-defined]  # (gunicorn's does the same)
    except AttributeError:  # a wrapper with __slots__: iterated through the response instead
        return response
    return body


def _finish(
    requests: ServerRequests,
    request: ActiveRequest,
    environ: Environ,
    error: BaseException | None,
    after: BaseException | None = None,
) -> None:
    """Complete the request with ``error`` and restore the caller's context; ``after``: what
    failed once the response had gone, recorded after it (``ServerRequests.finish``)."""
    try:
        _client_named_below(request, environ)
        route = environ.get(ROUTE_KEY) if requests.records else None
        if error is None:
            error = _answered_error(environ, request.status_code)
        if client_left(error):  # the client's doing (nginx's 499), whatever answered it
            request.status_code, error = CLIENT_CLOSED_REQUEST, None
        route = route if isinstance(route, str) else None
        if after is not None:
            requests.complete(request, route, error)
            error = after
        requests.finish(request, route, error)
    except Exception as exc:
        report_once("wsgi request finish", exc)


def _answered_error(environ: Environ, status_code: int) -> BaseException | None:
    """The view's exception a framework answered with its 500 page, else one the application's
    own error handler answered with a 5xx (with a 4xx, it was the client's error)."""
    found = environ.get(ERROR_KEY)
    if found is None and status_code >= 500:
        found = environ.get(HANDLED_ERROR_KEY)
    return found if isinstance(found, BaseException) else None


def _remember_handled(environ: Environ, exc_info: object) -> None:
    """The exception of the ``exc_info`` an app gave ``start_response``, recorded as the
    request's where its answer is a 5xx (``_answered_error``)."""
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[1] is not None:
        environ.setdefault(HANDLED_ERROR_KEY, exc_info[1])


def _client_named_below(request: ActiveRequest, environ: Environ) -> None:
    """The client's address a middleware below this one put in ``REMOTE_ADDR`` (werkzeug's
    ``ProxyFix``, which ``init_app`` wraps: the address a trusted proxy named) replaces the
    peer's the span started with."""
    span = request.span
    if span is None or not request.owns_span or not span.is_recording():
        return
    address = address_or_none(environ.get("REMOTE_ADDR"))
    if address is not None and address != getattr(span, "attributes", {}).get(
        semconv.CLIENT_ADDRESS
    ):
        span.set_attribute(semconv.CLIENT_ADDRESS, address)


def _status_code(status: str) -> int:
    """The code of a status line (``"404 Not Found"``), remembered for the next response."""
    try:
        code = int(status[:3])
    except ValueError:
        return 0
    if len(_STATUS_CODES) < CACHE_LIMIT:
        _STATUS_CODES[status] = code
    return code
