"""ASGI middleware: one correlation ID and one SERVER span per HTTP or WebSocket connection.

Pure ASGI, so it works under Starlette, FastAPI and any other ASGI framework::

    from tracekit.asgi import TracekitMiddleware
    app.add_middleware(TracekitMiddleware)      # Starlette / FastAPI
    app = TracekitMiddleware(app)               # any ASGI app

Lifespan passes through (tracekit flushes at its shutdown); other scope types pass straight through.
The correlation header is echoed on every response the app sends, and on the 500 page Starlette's
``ServerErrorMiddleware`` sends for an unhandled exception outside any ``add_middleware``
middleware (``tracekit._http.server_errors``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import correlation, semconv
from tracekit._http.asgi_types import ASGIApp, Message, Receive, Scope, Send
from tracekit._http.server import ActiveRequest, server_requests
from tracekit._http.server_errors import ECHO_KEY, echo_on_server_error_pages, with_header
from tracekit._runtime import lifecycle
from tracekit._runtime.guard import report_once

__all__ = ["TracekitMiddleware"]

_TRACED_SCOPES = frozenset(("http", "websocket"))


class TracekitMiddleware:
    """Correlates and traces every HTTP request and WebSocket connection of an ASGI app.

    ``tracer_provider`` and ``registry`` default to the global ones; keyword ``options`` override
    those given to ``tracekit.init()`` (for example ``mode="correlation"`` for IDs without spans).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self._requests = server_requests(tracer_provider, registry, options)
        self._echo_name = self._requests.response_header.lower().encode("latin-1")
        # Looked up as bytes, so only the few wanted headers are ever decoded.
        self._wanted = {n.encode("latin-1"): n for n in self._requests.wanted_headers}
        echo_on_server_error_pages()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # flush before the server stops (docs/middleware.md)
            await self.app(scope, receive, lifecycle.lifespan_send(send))
            return
        if scope["type"] not in _TRACED_SCOPES or self._requests.is_excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        if not self._requests.records:
            await self._correlate(scope, receive, send)
            return
        request = self._start(scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        echo = (self._echo_name, request.correlation_id.encode("ascii"))
        scope[ECHO_KEY] = echo

        async def send_with_correlation(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                request.status_code = message.get("status", 101)
                message = with_header(message, echo)
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_correlation)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(request, scope, error)

    async def _correlate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Correlation-only mode: the ID in context and on the response, and nothing else.

        Its own short path: no span, no metrics, so none of the request bookkeeping either.
        """
        try:
            cid = self._requests.choose_correlation_id(self._headers(scope))
            token = correlation.set_correlation_id(cid)
        except Exception as error:
            report_once("asgi request start", error)
            await self.app(scope, receive, send)
            return
        echo = (self._echo_name, cid.encode("ascii"))
        scope[ECHO_KEY] = echo

        async def send_with_correlation(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                message = with_header(message, echo)
            await send(message)

        try:
            await self.app(scope, receive, send_with_correlation)
        finally:
            try:
                correlation.reset_correlation_id(token)
            except Exception as error:
                report_once("asgi request finish", error)

    def _headers(self, scope: Scope) -> dict[str, list[str]]:
        """The request headers tracekit reads, by lower-case name, decoded."""
        wanted = self._wanted
        headers: dict[str, list[str]] = {}
        for raw_name, raw_value in scope["headers"]:
            name = wanted.get(raw_name.lower())
            if name is not None:
                values = headers.get(name)
                if values is None:
                    headers[name] = [raw_value.decode("latin-1")]
                else:
                    values.append(raw_value.decode("latin-1"))
        return headers

    def _start(self, scope: Scope) -> ActiveRequest | None:
        try:
            method = scope.get("method", "GET")
            attributes = _attributes(scope)
            return self._requests.start(method, scope["path"], self._headers(scope), attributes)
        except Exception as error:
            report_once("asgi request start", error)
            return None

    def _finish(self, request: ActiveRequest, scope: Scope, error: BaseException | None) -> None:
        try:
            self._requests.finish(request, _route(scope), error)
        except Exception as exc:
            report_once("asgi request finish", exc)


def _attributes(scope: Scope) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.URL_SCHEME: scope.get("scheme", "http")}
    server = scope.get("server")
    if server:
        attributes[semconv.SERVER_ADDRESS] = server[0]
        if server[1] is not None:
            attributes[semconv.SERVER_PORT] = server[1]
    if "http_version" in scope:
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = scope["http_version"]
    return attributes


def _route(scope: Scope) -> str | None:
    """The matched route template that Starlette/FastAPI routing left in the scope."""
    template = getattr(scope.get("route"), "path", None)
    if not isinstance(template, str):
        return None
    root_path: str = scope.get("root_path", "")
    if not root_path:
        return template
    mount_prefix = root_path[len(scope.get("app_root_path", "")) :]
    return mount_prefix + template
