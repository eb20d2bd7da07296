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

import contextlib
import re
import sys
import weakref
from collections.abc import Callable
from contextvars import Token
from types import FrameType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import correlation, semconv
from tracekit._http.asgi_types import ASGIApp, Message, Receive, Scope, Send
from tracekit._http.django_settings import django_options
from tracekit._http.server import (
    CLIENT_CLOSED_REQUEST,
    OUTER_REQUEST_KEY,
    ActiveRequest,
    CurrentTokens,
    OptionsReadLate,
    ServerRequests,
    address_or_none,
    make_current,
    restore_current,
)
from tracekit._http.server_errors import (
    ECHO_KEY,
    answers_through_tracekit,
    await_page,
    echo_on_server_error_pages,
    with_header,
)
from tracekit._runtime import lifecycle
from tracekit._runtime.guard import report_once

__all__ = ["TracekitMiddleware"]

_TRACED_SCOPES = frozenset(("http", "websocket"))
_REQUEST_KEY = OUTER_REQUEST_KEY  # in the scope: the request the outermost layer traces
# In the scope too: its id, by which a layer inside tells a copy (a middleware between the
# layers that passes ``dict(scope)`` on) from the scope the outermost layer reads.
_SCOPE_ID_KEY = "tracekit.scope"
# Messages that start a response: its status and headers (a WebSocket's accept is a 101; its
# denial, an HTTP response of the ASGI denial extension).
_RESPONSE_STARTS = frozenset(("http.response.start", "websocket.accept",
                              "websocket.http.response.start"))  # fmt: skip
# A server offering it lets the application answer a WebSocket handshake with an HTTP response
# (ASGI's WebSocket denial response extension): how a 500 can carry the correlation header.
_DENIAL_RESPONSE = "websocket.http.response"
_PLAIN = (b"content-type", b"text/plain; charset=utf-8")
_CONTENT_TOO_LARGE = 413


class TracekitMiddleware(OptionsReadLate):
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
        super().__init__(tracer_provider, registry, options)
        self.app = app
        echo_on_server_error_pages()

    def _options_below(self) -> dict[str, Any]:
        return django_options(self.app)

    def _configure(self, requests: ServerRequests) -> None:
        self._echo_name = requests.response_header.lower().encode("latin-1")
        # Looked up as bytes, so only the few wanted headers are ever decoded.
        self._wanted = {n.encode("latin-1"): n for n in requests.wanted_headers}

    @property
    def routes(self) -> Any:
        """The wrapped application's routes: what Starlette's ``Mount`` of this middleware lists,
        so a route under the mount is named with the mount's template in front."""
        return getattr(self.app, "routes", [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # flush before the server stops (docs/middleware.md)
            await self.app(scope, receive, lifecycle.lifespan_send(send))
            return
        self._read_options()
        excluded = self._requests.excluded_search  # None without excluded_urls (the usual case)
        if scope["type"] not in _TRACED_SCOPES or (
            excluded is not None and excluded(_below_root(scope)) is not None
        ):
            await self.app(scope, receive, send)
            return
        untraced = self.untraced_search  # paths a Django project's TRACEKIT setting excludes
        if not self._requests.records or (
            untraced is not None and untraced(_below_root(scope)) is not None
        ):
            await self._correlate(scope, receive, send)
            return
        await self._trace(scope, receive, send)

    async def _trace(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request under its SERVER span, measured, its correlation ID echoed."""
        arrived_in = otel_context.get_current()
        request = self._start(scope)
        if request is None:
            await self.app(scope, receive, send)
            return
        # The outermost application routing this request (Starlette names itself in the scope;
        # a mounted sub-application replaces it on the way down): where its mounts are found.
        # Named already, it is the app whose middleware this layer is (``add_middleware``).
        top = scope.get("app", self.app)
        inside = top if "app" in scope else None
        watched_send = self._watching(send, request, scope, top, arrived_in)
        if scope["type"] == "http":
            receive = _receiving_as_arrived(receive, arrived_in, request.correlation_token, request)
        error: BaseException | None = None
        try:
            await self.app(scope, receive, watched_send)
        except BaseException as exc:
            error = exc
            if not request.status_code:
                await _refuse_on_error(watched_send, scope, exc)
            raise
        finally:
            self._finish(request, scope, top, error, inside)

    def _watching(
        self,
        send: Send,
        request: ActiveRequest,
        scope: Scope,
        top: object,
        arrived_in: otel_context.Context,
    ) -> Send:
        """``send`` noting the response's status and end, and echoing the correlation ID."""
        echo = (self._echo_name, request.correlation_id.encode("ascii"))
        scope[ECHO_KEY] = echo
        trailers = False  # the response ends with its trailers (ASGI HTTP trailers extension)

        async def send_with_correlation(message: Message) -> None:
            nonlocal trailers
            kind = message["type"]
            if kind in _RESPONSE_STARTS:
                request.status_code = message.get("status", 101)
                if request.status_code >= 500:
                    self._answering_handled_error(request)
                trailers = bool(message.get("trailers", False))
                message = with_header(message, echo)
            elif kind == "websocket.close" and not request.status_code:
                # Closed before accepting: the server answers 403 (ASGI), without the header.
                # Not sent as a denial response, which could carry it: an in-process client
                # (Starlette's TestClient) would raise another exception than the app's tests
                # expect (WebSocketDenialResponse, not WebSocketDisconnect with its close code).
                request.status_code = 403
            if not _ends_response(kind, message, trailers):
                await send(message)
                return
            nested = request.outer is not None
            if nested:
                # Before the outer layer, which ends the request as this message passes it:
                # the route only this layer sees (its scope a copy) must have reached it.
                self._responded(request, scope, top)
            await _send_as_arrived(send, message, arrived_in, request.correlation_token)
            # The response has gone: work the application does after it (Starlette's
            # BackgroundTasks) is not the request's duration, nor is it still in flight.
            if not nested:
                self._responded(request, scope, top)

        return send_with_correlation

    async def _correlate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Correlation-only mode: the ID in context and on the response, and nothing else.

        Its own short path: no span, no metrics, so none of the request bookkeeping either.
        """
        arrived_in = otel_context.get_current()
        try:
            cid = self._requests.correlation_id_within(
                self._headers(scope), scope.get(_REQUEST_KEY)
            )
            # In correlation-only mode no span carries the ID in OpenTelemetry's context: it
            # rides there alone, for what carries only that context into a pool thread
            # (OpenTelemetry's threading instrumentation) or saves it for later sends.
            carried = otel_context.Context({**arrived_in, correlation.CONTEXT_KEY: cid})
            tokens = make_current(cid, carried)
        except Exception as error:
            report_once("asgi request start", error)
            await self.app(scope, receive, send)
            return
        echo = (self._echo_name, cid.encode("ascii"))
        scope[ECHO_KEY] = echo
        if _REQUEST_KEY not in scope:  # for a layer below, which keeps this ID
            method = scope.get("method", "GET")
            scope[_REQUEST_KEY] = ActiveRequest(cid, method, None, None, tokens[0], 0.0)

        trailers = False  # the response ends with its trailers (ASGI HTTP trailers extension)
        answered = False  # a response started, or a WebSocket closed (the server answers it)

        async def send_with_correlation(message: Message) -> None:
            nonlocal trailers, answered
            kind = message["type"]
            answered = answered or kind in _RESPONSE_STARTS or kind == "websocket.close"
            if kind in _RESPONSE_STARTS:
                trailers = bool(message.get("trailers", False))
                message = with_header(message, echo)
            elif _ends_response(kind, message, trailers):
                # Not by resetting ``tokens``: Starlette may send from a task of its own (a
                # streamed body), whose context did not make them.
                await _send_as_arrived(send, message, arrived_in, tokens[0])
                return
            await send(message)

        if scope["type"] == "http":
            receive = _receiving_as_arrived(receive, arrived_in, tokens[0])
        try:
            await self.app(scope, receive, send_with_correlation)
        except BaseException as exc:
            if not answered:
                await _refuse_on_error(send_with_correlation, scope, exc)
                if _handler_answers(scope.get("app"), scope, exc):  # with the ID current
                    await_page(scope, cid, carried)
            raise
        finally:
            try:
                restore_current(tokens)
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
            request = self._requests.start(
                method, scope["path"], self._headers(scope), attributes,
                measured=scope["type"] == "http",  # a WebSocket's lifetime is no request's
                enclosing=scope.get(_REQUEST_KEY),
            )  # fmt: skip
            if request.outer is None:
                # For a layer below (a mounted app's own middleware), whatever context the
                # framework between attaches: FastAPI's SERVER span starts from the headers.
                scope[_REQUEST_KEY] = request
                scope[_SCOPE_ID_KEY] = id(scope)
            return request
        except Exception as error:
            report_once("asgi request start", error)
            return None

    def _finish(
        self,
        request: ActiveRequest,
        scope: Scope,
        top: object,
        error: BaseException | None,
        inside: object = None,
    ) -> None:
        try:
            if error is not None and _client_went_away(error):
                # the client's doing, as Django's cancelled view is: no server error; the
                # status sent, if any (a response streamed while its upload was read)
                request.status_code, error = request.status_code or CLIENT_CLOSED_REQUEST, None
            elif error is not None and _over_body_limit(error, request.status_code):
                request.status_code, error = _CONTENT_TOO_LARGE, None  # the client's error too
            elif error is not None and _client_closed_websocket(error):
                error = None  # how a WebSocket connection ends: no server error either
            elif error is not None and not request.status_code:
                request.status_code = _error_page_status(inside, scope, error)
            elif error is None and not request.status_code:
                request.status_code = _unanswered_status(scope, request)
            # a response that has gone was routed already (complete): no second lookup
            route = None if request.completed else _route_named(request, scope, top)
            if (
                error is not None
                and not request.status_code
                and _handler_answers(inside, scope, error)
            ):
                await_page(
                    scope,
                    request.correlation_id,
                    otel_context.get_current(),
                    lambda status: self._handler_answered(request, route, error, status),
                )
                self._requests.set_aside(request, error)
                return
            self._requests.finish(request, route, error)
        except Exception as exc:
            report_once("asgi request finish", exc)

    def _handler_answered(
        self, request: ActiveRequest, route: str | None, error: BaseException, status: int
    ) -> None:
        """The app's own 500 handler made its page (of ``status``) for the request's exception:
        the request ends with it."""
        try:
            request.status_code = status
            self._requests.complete(request, route, error)
        except Exception as exc:
            report_once("asgi request finish", exc)

    def _answering_handled_error(self, request: ActiveRequest) -> None:
        """A 5xx starts while an exception is being handled: the page of the application's
        own handler for it (Starlette's ``ExceptionMiddleware``, inside this middleware, sends
        it from its ``except`` block). An ``HTTPException`` is the app's answer, not a failure."""
        error = sys.exc_info()[1]
        if error is None or _is_http_exception(error):
            return
        try:
            self._requests.answering(request, error)
        except Exception as exc:
            report_once("asgi handled exception", exc)

    def _responded(self, request: ActiveRequest, scope: Scope, top: object) -> None:
        try:
            self._requests.responded(request, _route_named(request, scope, top))
        except Exception as exc:
            report_once("asgi request finish", exc)


def _ends_response(kind: str, message: Message, trailers: bool) -> bool:
    """True for the message that completes an HTTP response: its last body chunk (or the file
    of the ASGI path send extension, Starlette's ``FileResponse``), or its last trailers when it
    announced some."""
    if kind == "http.response.body":
        return not trailers and not message.get("more_body")
    if kind == "http.response.pathsend":  # the whole body: a file the server sends (extension)
        return not trailers
    return kind == "http.response.trailers" and not message.get("more_trailers")


async def _send_as_arrived(
    send: Send,
    message: Message,
    arrived_in: otel_context.Context,
    correlation_token: Token[str | None],
) -> None:
    """Send the response's last message in the context the request arrived in.

    The server starts the connection's next pipelined request from inside this send (uvicorn
    does, when a response completes), and that request's task copies the current context: it
    would carry this request's correlation ID and span (a health check's logs with another
    request's ID; a request after a 5xx still at work taken for part of it). The request's
    context is current again afterwards, for the work the application does after answering;
    the server's lines about the response logged during this send (uvicorn's access line, when
    a middleware outside this one held the response's start back) find it too.
    """
    answering = [correlation._request_context()]
    tokens = _as_arrived(arrived_in, correlation_token)
    answering_token = correlation._answering.set(answering)
    try:
        await send(message)
    finally:
        answering.clear()  # the connection's next request, started in this send, copied it
        correlation._answering.reset(answering_token)
        restore_current(tokens)


def _receiving_as_arrived(
    receive: Receive,
    arrived_in: otel_context.Context,
    correlation_token: Token[str | None],
    request: ActiveRequest | None = None,
) -> Receive:
    """``receive``, called in the context the request arrived in, noting on ``request`` that
    the client left (``http.disconnect``).

    The server may read on from inside it: uvicorn stops reading a connection while more than
    64 KiB of a body wait for the application, and reads on when the application asks for
    more. What it reads then runs in the context current there, and the connection's next
    requests start in it (their tasks copy it): with this request's correlation ID and span.
    """

    async def receive_as_arrived() -> Message:
        tokens = _as_arrived(arrived_in, correlation_token)
        try:
            message = await receive()
        finally:
            restore_current(tokens)
        if request is not None and message.get("type") == "http.disconnect":
            request.client_left = True
        return message

    return receive_as_arrived


def _as_arrived(
    arrived_in: otel_context.Context, correlation_token: Token[str | None]
) -> CurrentTokens:
    """Make current the context the request arrived in, and the correlation ID before it."""
    before = correlation_token.old_value
    id_token = correlation._set_checked(None if before is Token.MISSING else before)
    return id_token, otel_context.attach(arrived_in)


async def _refuse_on_error(send: Send, scope: Scope, error: BaseException) -> None:
    """Answer a WebSocket whose application raised before accepting it as its server would,
    with a 500, but through ``send``, which puts the correlation header on it: the server's own
    answer carries none. Only where the server offers ASGI's denial response extension; never
    for an HTTP request (a server error page is the framework's), a cancelled task or a client
    that left (nobody to answer). A send that fails leaves the server to answer, as without
    tracekit; the error goes on to the server either way, so an in-process client (Starlette's
    TestClient) still raises the application's exception."""
    if not _can_deny(scope) or not isinstance(error, Exception) or _client_closed_websocket(error):
        return
    try:
        await send({"type": "websocket.http.response.start", "status": 500, "headers": [_PLAIN]})
        await send({"type": "websocket.http.response.body", "body": b"Internal Server Error"})
    except Exception as failed:
        report_once("asgi websocket refusal", failed)


def _can_deny(scope: Scope) -> bool:
    """Whether the server lets the application answer this WebSocket's handshake with an HTTP
    response of its own (ASGI's denial response extension)."""
    extensions = scope.get("extensions")
    return (
        scope["type"] == "websocket"
        and isinstance(extensions, dict)
        and _DENIAL_RESPONSE in extensions
    )


def _error_page_status(app: object, scope: Scope, error: BaseException) -> int:
    """The status of the page the Starlette (or FastAPI) ``app`` whose middleware this layer is
    answers ``error`` with, out of sight: its ``ServerErrorMiddleware``, outside every
    ``add_middleware`` middleware, sends a 500 for any exception let out of an HTTP request,
    its own page or its debug page. 0 where that is not known: outside any such app, the server
    answers (uvicorn with its own 500, unseen here too); a middleware added after this one may
    answer it first, its own way (a catch-all's 503); the app's own 500 handler chooses its
    page's status, unless the app is in debug mode (``_handler_answers``).

    With no app at all (``None``: no Starlette app routed the request on its way here, which
    names itself in the scope) the exception goes on to the server, which answers an HTTP
    request with its 500 (uvicorn, hypercorn), as a WSGI server does, when this layer is
    the one the server called (``_server_called``). ``SystemExit`` or ``KeyboardInterrupt``
    raised by the application is answered by no framework (``_exit_answered``)."""
    if not isinstance(error, Exception):
        return _exit_answered(scope, error)
    if app is None:
        answered = scope["type"] == "http" and isinstance(error, Exception) and _server_called()
        return 500 if answered else 0
    applications = sys.modules.get("starlette.applications")
    errors = sys.modules.get("starlette.middleware.errors")
    if (
        applications is None
        or errors is None
        or not isinstance(app, applications.Starlette)
        or scope["type"] != "http"
        or not isinstance(error, Exception)
        or not _added_last(app)
    ):
        return 0
    # The answerer as Starlette built it at the app's first call (its lifespan's): a handler
    # added, or ``debug`` switched, after that changes what the app says, not what it answers.
    answerer = app.middleware_stack
    if not isinstance(answerer, errors.ServerErrorMiddleware):
        return 0
    return 500 if answerer.debug or answerer.handler is None else 0


def _unanswered_status(scope: Scope, request: ActiveRequest) -> int:
    """The status of an HTTP request the application returned from without answering: a
    ``499`` where the server had said the client left (Django's ASGI handler gives up so on a
    client that leaves during its upload), else uvicorn's ``500`` ("ASGI callable returned
    without starting response"), where uvicorn called this layer through layers that pass a
    return on (Starlette's, FastAPI's). 0 where that is not known (another server, a middleware
    of the application's, an in-process client)."""
    if request.client_left:
        return CLIENT_CLOSED_REQUEST
    return 500 if scope["type"] == "http" and _caller(_passes_exit_on) == "uvicorn" else 0


def _server_called() -> bool:
    """Whether the server itself called this layer, so that the exception goes to it next: not
    a generic middleware around this one, which may answer it its own way (a catch-all's 503),
    nor an in-process client (httpx's ASGITransport, Starlette's TestClient). OpenTelemetry's
    own ASGI middleware around this one raises the exception again, on to the server."""
    return _caller(_passes_on) in _SERVERS


def _exit_answered(scope: Scope, error: BaseException) -> int:
    """The status the client gets for ``SystemExit`` or ``KeyboardInterrupt`` the application
    raised (``sys.exit()`` in a view): no framework catches them (Starlette's error middleware
    catches ``Exception`` alone), and uvicorn answers them with its 500, as any exception; 0
    under another server (hypercorn lets them out of the task it runs the request in: it may
    stop), a middleware of the application's, or an in-process client."""
    if scope["type"] != "http" or not isinstance(error, SystemExit | KeyboardInterrupt):
        return 0
    return 500 if _caller(_passes_exit_on) == "uvicorn" else 0


def _caller(passes_on: Callable[[object], bool]) -> str | None:
    """The top-level package of the first caller of this layer that does not pass the
    exception on (``passes_on`` its module's name)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and passes_on(frame.f_globals.get("__name__")):
        frame = frame.f_back  # this layer's own calls, and a middleware that raises it again
    caller = frame.f_globals.get("__name__") if frame is not None else None
    return caller.partition(".")[0] if isinstance(caller, str) else None


def _passes_on(module: object) -> bool:
    return module == __name__ or module in _RAISE_AGAIN


def _passes_exit_on(module: object) -> bool:
    """Starlette's and FastAPI's own layers too, which catch no ``SystemExit``."""
    return _passes_on(module) or (
        isinstance(module, str) and module.partition(".")[0] in ("starlette", "fastapi")
    )


# The ASGI servers known to answer an HTTP request whose application raised with a 500 and to
# call the application from a module of their own (daphne starts it as a task of its own: no
# daphne frame is found, and no status recorded, as before).
_SERVERS = frozenset({"hypercorn", "uvicorn"})
# Middleware known to raise an application's exception again, unanswered.
_RAISE_AGAIN = frozenset({"opentelemetry.instrumentation.asgi"})


def _handler_answers(app: object, scope: Scope, error: BaseException) -> bool:
    """Whether the app's own 500 handler answers ``error`` next, through tracekit's wrapper,
    which tells the status of its page (``_error_page_status`` found it not known): an HTTP
    request, tracekit's the app's outermost added middleware and ``error`` the application's
    own exception. Starlette's signals (its body limit's) and groups that may hold one are left
    alone: FastAPI answers those on the way out, before any handler."""
    kind = type(error)
    return (
        scope["type"] == "http"
        and isinstance(error, Exception)
        and _added_last(app)
        and answers_through_tracekit(getattr(app, "middleware_stack", None))
        and not kind.__module__.startswith("starlette.")
        and not isinstance(error, BaseExceptionGroup)
    )


def _added_last(app: object) -> bool:
    """Whether the outermost middleware added to ``app`` (the first of its ``user_middleware``,
    where Starlette's ``add_middleware`` and FastAPI's ``@app.middleware`` put the last added)
    is tracekit's: none of the user's is between it and the app's ``ServerErrorMiddleware``."""
    added = getattr(app, "user_middleware", None)
    outermost = getattr(added[0], "cls", None) if isinstance(added, list) and added else None
    return isinstance(outermost, type) and issubclass(outermost, TracekitMiddleware)


def _client_went_away(error: BaseException) -> bool:
    """Starlette's ``ClientDisconnect``: the client left before its request body had come
    (an upload cancelled, or one whose chunks the app streams back as they come), and reading
    it raised."""
    return _is_starlettes(error, "ClientDisconnect")


def _over_body_limit(error: BaseException, status_code: int) -> bool:
    """Starlette's body limit (FastAPI's ``max_body_size``) answering a request whose body is
    over it with its own 413, outside this middleware: it stops the app with this exception
    once it has sent that 413 in place of the app's answer, or answers this one that left the
    app before it answered."""
    return _is_starlettes(error, "_RequestBodyLimitResponseSent") or (
        not status_code and _is_starlettes(error, "_RequestBodyTooLarge")
    )


def _client_closed_websocket(error: BaseException) -> bool:
    """Starlette's ``WebSocketDisconnect``: the client closed the connection (or it dropped)
    while the endpoint waited for its next message, and the endpoint let it out, as FastAPI's
    documented echo loop does."""
    return _is_starlettes(error, "WebSocketDisconnect")


def _is_http_exception(error: BaseException) -> bool:
    """Whether ``error`` is Starlette's ``HTTPException`` or a subclass (FastAPI's)."""
    return any(
        kind.__name__ == "HTTPException" and kind.__module__.startswith("starlette.")
        for kind in type(error).__mro__
    )


def _is_starlettes(error: BaseException, name: str) -> bool:
    """Whether ``error`` is Starlette's exception ``name``, told by name: importing Starlette
    to compare classes would load it into applications that do not use it."""
    kind = type(error)
    return kind.__name__ == name and kind.__module__.startswith("starlette.")


def _attributes(scope: Scope) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.URL_SCHEME: scope.get("scheme", "http")}
    server = scope.get("server")
    if server:
        attributes[semconv.SERVER_ADDRESS] = server[0]
        if server[1] is not None:
            attributes[semconv.SERVER_PORT] = server[1]
    if "http_version" in scope:
        attributes[semconv.NETWORK_PROTOCOL_VERSION] = scope["http_version"]
    # The peer's address, or the one a proxy named where the server trusts it (uvicorn's
    # --forwarded-allow-ips): the server's choice, X-Forwarded-For is not read here.
    client = scope.get("client")
    address = address_or_none(client[0]) if client else None
    if address is not None:
        attributes[semconv.CLIENT_ADDRESS] = address
    return attributes


def _below_root(scope: Scope) -> str:
    """The request's path without the root path a proxy stripped (``/api``), as WSGI's
    ``PATH_INFO`` leaves out ``SCRIPT_NAME``: what ``excluded_urls`` are matched against."""
    path: str = scope["path"]
    root = scope.get("root_path")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def _route_named(request: ActiveRequest, scope: Scope, top: object) -> str | None:
    """The request's route as this layer names it for its span and metrics; None from a layer
    inside another tracekit layer's request (a mounted sub-application's own middleware): the
    outer layer reads the same scope and names the route under all the mounts, and follows a
    mount of an application Starlette does not route with the route an inner layer reports,
    which only one inside that application (Flask's, Django's) can tell. This layer's name
    (``/ws``, the mount inside the sub-application) went after the mount: ``/shop/ws/ws``.
    Where a middleware between the layers passed a copy of the scope on, the routing below
    wrote into the copy, which the outer layer never sees: this layer names the route then."""
    if request.outer is not None and scope.get(_SCOPE_ID_KEY) == id(scope):
        return None
    return _route(scope, top, request.route)


def _route(scope: Scope, top: object, inner: str | None = None) -> str | None:
    """The matched route template that Starlette/FastAPI routing left in the scope, under the
    templates of the mounts it was found through, without parameter convertors. A mount of an
    application Starlette does not route (a Flask app in ``WSGIMiddleware``) is followed by
    ``inner``, the route a tracekit layer inside that application reported.

    The scope names only the innermost route; its ``root_path`` holds what the mounts matched
    in the request's own path (``/tenants/acme``), which a client chooses: never used as is.
    """
    route = scope.get("route")
    looked_up = route is None or _routes_further(route)
    if looked_up:
        # FastAPI's router names no plain route, so under Starlette's Mount of a FastAPI app
        # that Mount is still named: the endpoint below it tells whether anything matched
        route = _route_of_endpoint(scope) or route
    template = _included_template(scope, route)
    if not isinstance(template, str):
        return None
    mounted = scope.get("root_path", "") != scope.get("app_root_path", "")
    if mounted:
        if _routes_further(route):
            return None  # a 404 below the mount: no route matched, as at the top level
        prefix = _mount_prefix(route, scope, top, scope.get("app"))
        template = template if prefix is None else prefix + template
    if looked_up and not _path_fits(template, route, scope):
        return None  # found by an endpoint another route shares: not the route the request took
    at_root = template == ""  # a mount of the whole path: Mount("/", app=StaticFiles(...))
    if (mounted or at_root) and inner is not None and inner.startswith("/") and _is_mount(route):
        template = template.rstrip("/") + inner
    elif at_root:  # the mount is the route, as /static is; "/" as Starlette's telemetry names it
        return None if _routes_further(route) else "/"
    return template if ":" not in template else _without_convertors(template)


def _path_fits(template: str, route: object, scope: Scope) -> bool:
    """Whether the request's path below the server's root is one ``template`` matches (a
    mount's: the start of it). A route found by its endpoint may be another route to that
    endpoint: Starlette before 1.7 names no route in the scope, so under ``Mount("/tenants/
    {tenant}")`` ``/files/{name:path}`` was found as the top-level ``/items/{item_id}``."""
    path = _mounted_path(scope) + _below_root(scope)
    pattern = _cached_pattern(template)
    if not _is_mount(route):
        return pattern.fullmatch(path) is not None
    found = pattern.match(path)
    return found is not None and path[found.end() :][:1] in ("", "/")


def _included_template(scope: Scope, route: object) -> object:
    """``route``'s template within its application: FastAPI's router (0.16x) names a router's
    own ``APIRoute`` in the scope, without the prefix the router was included with
    (``include_router(api, prefix="/api")``), and keeps the route as included, prefix and all,
    beside it; the route's own template everywhere else."""
    included = _effective_route_context(scope)
    if included is not None and getattr(included, "original_route", None) is route:
        template = getattr(included, "path_format", None)
        if isinstance(template, str) and template:
            return template
    return getattr(route, "path", None)


def _route_of_endpoint(scope: Scope) -> object:
    """The route to the endpoint the scope names, for a router that routes without naming the
    route (FastAPI's names none but its ``APIRoute``: not its ``/docs``, an ``add_route`` or a
    mount such as ``StaticFiles``): the one an included router holds, where FastAPI took one,
    else the application's own. None for a 404, whose scope names no endpoint, or only the
    application it was mounted as."""
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return None
    included = _included_route(scope, endpoint)
    if included is not None:
        return included
    found = _routes_of_endpoint(scope.get("app"), endpoint)
    if len(found) > 1:  # one endpoint under several paths: the one the request took
        return max(found, key=lambda route: _taken(route, scope))
    return found[0] if found else None


def _included_route(scope: Scope, endpoint: object) -> object:
    """The route to ``endpoint`` FastAPI's router took in an included router, with the prefix
    it was included with (``add_route`` or ``mount`` on an ``APIRouter``): no list of routes
    shows it, and the application's own route to the same endpoint is another path."""
    route = getattr(_effective_route_context(scope), "starlette_route", None)
    return route if route is not None and _leads_to(route, endpoint) else None


def _effective_route_context(scope: Scope) -> object:
    """What FastAPI's router (0.16x) keeps in the scope of the route it took, as included."""
    fastapi = scope.get("fastapi")
    return fastapi.get("effective_route_context") if isinstance(fastapi, dict) else None


def _routes_of_endpoint(app: object, endpoint: object) -> tuple[object, ...]:
    """The routes of ``app`` to ``endpoint``, found once (a walk through every route)."""

    def find() -> tuple[object, ...]:
        routes = _routes_of(app)
        routes = routes if isinstance(routes, list) else []
        return tuple(route for route in routes if _leads_to(route, endpoint))

    routes: tuple[object, ...] = _known(_endpoint_routes, app, endpoint, find)
    return routes


def _leads_to(route: object, endpoint: object) -> bool:
    """A route by its endpoint; a mount (``StaticFiles``) by the app it mounts."""
    return endpoint is getattr(route, "endpoint", None) or endpoint is getattr(route, "app", None)


def _taken(route: object, scope: Scope) -> int:
    """How surely the request took ``route`` (0: it did not): a route by the request's path
    below the root path; a mount by the root path, which ends with what the mount matched (the
    path below it is the mounted application's), the more of it the surer: ``/v2/static`` ends
    with what mounts at ``/static`` and ``/v2/static`` match, and took the second."""
    if _is_mount(route):
        return _mount_match(scope.get("root_path", ""), getattr(route, "path", None))
    pattern = getattr(route, "path_regex", None)
    return int(isinstance(pattern, re.Pattern) and pattern.match(_below_root(scope)) is not None)


def _mount_match(root_path: str, template: object) -> int:
    """1 + the length of the end of ``root_path`` the mount ``template`` matches (0: none)."""
    if not isinstance(template, str):
        return 0
    pattern = _template_pattern(template).pattern
    found = re.search(f"(?:{pattern})\\Z", root_path)
    return 0 if found is None else 1 + len(found.group())


def _is_mount(route: object) -> bool:
    """Whether ``route`` is a mount (of an application Starlette routes no further, as
    ``_routes_further`` told), rather than a route of its own."""
    return isinstance(getattr(route, "routes", None), list)


def _routes_further(route: object) -> bool:
    """Whether ``route`` is a mount (or host) of an application Starlette routes further.

    Starlette's router names the route it matches in the scope, so a mount still there is one
    whose router below matched nothing: no route of the request's (OpenTelemetry sets
    ``http.route`` only for one the framework matched). A mount of an app without Starlette's
    routes (``StaticFiles``, another framework's app) is the request's route.
    """
    routing = sys.modules.get("starlette.routing")
    if routing is None or not isinstance(getattr(route, "routes", None), list):
        return False  # a route that matched (the usual case)
    routes = _routes_of(route)
    return isinstance(routes, list) and bool(routes) and isinstance(routes[0], routing.BaseRoute)


def _without_convertors(template: str) -> str:
    """``/items/{item_id:int}`` -> ``/items/{item_id}``: a convertor is no part of a route's
    name, as in Flask's and Django's routes and in Starlette's own telemetry (a route has few
    templates: kept)."""
    known = _plain_templates.get(template)
    if known is None:
        known = _CONVERTOR.sub(r"{\1}", template)
        if len(_plain_templates) < _MAX_KNOWN_ROUTES:
            _plain_templates[template] = known
    return known


def _mount_prefix(route: object, scope: Scope, *apps: object) -> str | None:
    """The mount templates leading to ``route`` from the first of ``apps`` that has it; for a
    route under several mounts (one list of routes mounted as ``/v1`` and ``/v2``), those of
    the mounts the request came through. A route no search finds (FastAPI keeps an included
    router's routes where no list shows them) is under the mounts of the application routing
    the request (the last of ``apps``)."""
    included = _included_mount_of(scope, apps[-1], apps[0])
    if included is not None:  # no list shows that mount: the route is found from its app
        below = _known_prefixes(route, apps[-1], lambda: _prefixes_of(route, apps[-1:]))
        return included + (below[0] if below else "")
    # By the app searched from too: a layer inside a mounted sub-application searches from it
    # and finds no mount above the route, which the outer layer's search must not take.
    prefixes = _known_prefixes(route, apps[0], lambda: _prefixes_of(route, apps))
    if not prefixes and apps[-1] is not None and apps[-1] is not apps[0]:
        app = apps[-1]
        prefixes = _known_prefixes(app, apps[0], lambda: _prefixes_of_app(app, apps[0]))
    if not prefixes:
        return None
    return prefixes[0] if len(prefixes) == 1 else _prefix_taken(prefixes, _mounted_path(scope))


def _included_mount_of(scope: Scope, app: object, top: object) -> str | None:
    """The templates of the mounts leading from ``top`` to the mount of ``app`` that FastAPI's
    router took in an included router (``router.mount("/sub", app)``), which no list of routes
    shows: ``/v1`` + ``/api/sub``, the prefix the router was included with and all."""
    context = _effective_route_context(scope)
    mount = getattr(context, "starlette_route", None)
    if app is None or not _mounts(mount, app):
        return None
    template = getattr(mount, "path", None)
    if not isinstance(template, str):
        return None
    original = getattr(context, "original_route", None)
    above = _known_prefixes(original, top, lambda: _prefixes_of_includer(original, top))
    if not above:
        return template
    if len(above) == 1:
        return above[0] + template
    return _prefix_taken(above, _mounted_above(scope, template)) + template


def _mounted_above(scope: Scope, template: str) -> str:
    """What the mounts above the one of ``template`` matched in the request's path."""
    mounted = _mounted_path(scope)
    found = re.search(f"(?:{_template_pattern(template).pattern})\\Z", mounted)
    return mounted if found is None else mounted[: found.start()]


def _prefixes_of_includer(original: object, top: object) -> tuple[str, ...]:
    """The mount templates leading from ``top`` to the application whose included router
    holds ``original``: ``("",)`` for ``top`` itself."""
    if _includes(top, original):
        return ("",)
    found: list[str] = []
    _find_mount(_routes_of(top), lambda mounted: _includes(mounted, original), "", 0, found)
    return tuple(found)


def _includes(app: object, original: object) -> bool:
    """Whether ``app`` has included a FastAPI router that holds the route ``original``."""
    routes = _routes_of(app)
    return isinstance(routes, list) and any(
        any(held is original for held in getattr(route.original_router, "routes", ()))
        for route in routes
        if hasattr(route, "original_router")
    )


def _known_prefixes(
    target: object, origin: object, find: Callable[[], tuple[str, ...]]
) -> tuple[str, ...]:
    """The mount templates leading from ``origin`` to ``target``, found once by ``find``;
    none found is kept too (a route of a router FastAPI included, which no search shows)."""
    prefixes: tuple[str, ...] = _known(_mount_prefixes, target, origin, find)
    return prefixes


def _known(cache: _ByPair, first: object, second: object, find: Callable[[], Any]) -> Any:
    """``find()``, kept in ``cache`` by the ids of ``first`` and ``second`` with weak references
    to both (to tell a reused id): an app no longer served (one an app factory made per test)
    is freed, and its entries go with it. Objects that cannot be weakly referenced are looked
    up each time."""
    key = (id(first), id(second))
    known = cache.get(key)
    if known is not None and known[0]() is first and known[1]() is second:
        return known[2]
    found = find()
    if len(cache) >= _MAX_KNOWN_ROUTES:
        cache.clear()

    def forget(_: object) -> None:  # (called as one of the two is freed: before its id is reused)
        cache.pop(key, None)

    with contextlib.suppress(TypeError):
        cache[key] = (weakref.ref(first, forget), weakref.ref(second, forget), found)
    return found


def _prefixes_of(route: object, apps: tuple[object, ...]) -> tuple[str, ...]:
    for app in apps:
        found: list[str] = []
        _find_route(_routes_of(app), route, "", 0, found)
        if found:
            return tuple(found)
    return ()


def _find_route(routes: object, route: object, prefix: str, depth: int, found: list[str]) -> None:
    """Add to ``found`` the mount templates under which ``routes`` hold ``route``."""
    if not isinstance(routes, list) or depth > _MAX_MOUNT_DEPTH:
        return
    for candidate in routes:
        if len(found) >= _MAX_MOUNTS_OF_A_ROUTE:
            return
        if candidate is route:
            found.append(prefix)
            continue
        inner = _routes_of(candidate)  # a Mount (or Host) and what it routes to
        if inner:
            path = getattr(candidate, "path", "")  # a Host has none
            below = prefix + path if isinstance(path, str) else prefix
            _find_route(inner, route, below, depth + 1, found)


def _prefixes_of_app(app: object, top: object) -> tuple[str, ...]:
    found: list[str] = []
    _find_mount(_routes_of(top), lambda mounted: _mounts(mounted, app), "", 0, found)
    return tuple(found)


def _find_mount(
    routes: object, wanted: Callable[[object], bool], prefix: str, depth: int, found: list[str]
) -> None:
    """Add to ``found`` the templates of the mounts in ``routes`` that are ``wanted`` (of an
    app, through the middleware around it), under the mounts that hold them."""
    if not isinstance(routes, list) or depth > _MAX_MOUNT_DEPTH:
        return
    for candidate in routes:
        if len(found) >= _MAX_MOUNTS_OF_A_ROUTE:
            return
        path = getattr(candidate, "path", "")  # a Host has none
        below = prefix + path if isinstance(path, str) else prefix
        if wanted(candidate):
            found.append(below)
            continue
        inner = _routes_of(candidate)
        if inner:
            _find_mount(inner, wanted, below, depth + 1, found)


def _mounts(route: object, app: object) -> bool:
    """Whether ``route`` is a mount of ``app``, directly or through middleware around it."""
    mounted = getattr(route, "app", None)
    for _ in range(_MAX_WRAPPERS):
        if mounted is None:
            return False
        if mounted is app:
            return True
        mounted = getattr(mounted, "app", None)
    return False


def _mounted_path(scope: Scope) -> str:
    """What the mounts matched in the request's path: the scope's ``root_path`` past the root
    the server gave (``app_root_path``, which Starlette's first mount sets)."""
    if "app_root_path" not in scope:
        return ""
    root_path: str = scope.get("root_path", "")
    return root_path[len(scope["app_root_path"]) :]


def _prefix_taken(prefixes: tuple[str, ...], mounted: str) -> str:
    """The prefix template matching the path the mounts matched (else the first): the client's
    path only chooses among the application's own templates."""
    for prefix in prefixes:
        if _cached_pattern(prefix).fullmatch(mounted):
            return prefix
    return prefixes[0]


def _cached_pattern(template: str) -> re.Pattern[str]:
    """``_template_pattern`` of ``template``, kept (an application has few templates)."""
    pattern = _template_patterns.get(template)
    if pattern is None:
        pattern = _template_pattern(template)
        if len(_template_patterns) < _MAX_KNOWN_ROUTES:
            _template_patterns[template] = pattern
    return pattern


def _template_pattern(template: str) -> re.Pattern[str]:
    """``/tenants/{tenant}`` -> a pattern of the paths it matches (a ``:path`` parameter
    spans segments, as in Starlette)."""
    pieces, last = [], 0
    for parameter in _PARAMETER.finditer(template):
        pieces.append(re.escape(template[last : parameter.start()]))
        pieces.append(".+" if parameter.group().endswith(":path}") else "[^/]+")
        last = parameter.end()
    pieces.append(re.escape(template[last:]))
    return re.compile("".join(pieces))


def _routes_of(app: object) -> object:
    """The routes of ``app`` (a Starlette app, a Router, a Mount or Host), or of the app it
    wraps: ``Mount("/v1", app=CORSMiddleware(v1))`` routes through middleware, which keeps
    the app it wraps as ``app`` (Starlette's do) and has no routes of its own."""
    for _ in range(_MAX_WRAPPERS):
        routes = getattr(app, "routes", None)
        if routes:
            return routes
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


# A parameter with its convertor, as Starlette writes it: {item_id:int}.
_CONVERTOR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[A-Za-z_][A-Za-z0-9_]*\}")
# Template as written -> without convertors.
_plain_templates: dict[str, str] = {}
# A parameter in a template, with or without its convertor: {tenant}, {name:path}.
_PARAMETER = re.compile(r"\{[^{}]*\}")
# Found once for a pair of objects, by their ids, with weak references to both (see _known).
_ByPair = dict[tuple[int, int], tuple[weakref.ref[Any], weakref.ref[Any], Any]]
# (route, or an application mounted, and app searched from) -> the templates of the mounts above.
_mount_prefixes: _ByPair = {}
# (application, endpoint) -> its routes to it.
_endpoint_routes: _ByPair = {}
# Template -> a pattern of the paths it matches (mounts' and routes' found by their endpoint).
_template_patterns: dict[str, re.Pattern[str]] = {}
_MAX_MOUNTS_OF_A_ROUTE = 16
_MAX_KNOWN_ROUTES = 4096
_MAX_MOUNT_DEPTH = 16
_MAX_WRAPPERS = 16  # middleware around one mounted application
