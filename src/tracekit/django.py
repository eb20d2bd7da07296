"""Django middleware that needs nothing but a settings line::

    MIDDLEWARE = ["tracekit.django.TracekitMiddleware", ...]   # first, so it sees everything

It works under WSGI and ASGI (sync and async capable), names spans by the resolver's route
template (``GET /orders/{order_id}``, also for ``re_path``, ``include`` and ``i18n_patterns``:
``tracekit._http.django_routes``), records the exception Django answers with a 500, the view's
or a middleware's below this one (``Http404`` and the other exceptions Django answers with a
4xx are the client's error) and,
for ``StreamingHttpResponse``, ends the span when the server closes the response. The request's
context stays current until then, so Django's own "Not Found: /x" line carries its IDs. A view
Django cancels because the client disconnected (ASGI) is a 499, not a server error. Optional
settings: ``TRACEKIT = {"excluded_urls": [...]}`` takes the ``tracekit.init`` options that concern
one app's requests; the others (``exporter``, ``metrics_port``…) are ignored with one warning.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from types import ModuleType
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from opentelemetry import context as otel_context

from tracekit import correlation, semconv
from tracekit._http.django_routes import route_of
from tracekit._http.server import (
    CLIENT_CLOSED_REQUEST,
    OUTER_REQUEST_KEY,
    ActiveRequest,
    CurrentTokens,
    OptionsReadLate,
    ServerRequests,
    exclude_enclosing,
    forget_answered_request,
    make_current,
    restore_current,
)
from tracekit._http.wsgi_environ import ServerAttributes, header_keys, headers_of, server_answer
from tracekit._runtime.guard import guarded, report_once
from tracekit.instrumentation._base import Instrumentor

__all__ = ["TracekitMiddleware"]

_ERROR_ATTRIBUTE = "_tracekit_error"
_ROUTE_ATTRIBUTE = "_tracekit_route"
# Listed above tracekit's, as Django's docs list it, it answers no request itself: it caches.
_FIRST_BY_ITS_DOCS = frozenset({"django.middleware.cache.UpdateCacheMiddleware"})
_log = logging.getLogger("tracekit")
_NONE_ABOVE: tuple[str, ...] = ()
_warned_above: set[tuple[str, ...]] = set()
# On a response whose correlation header tracekit set: a copy Django's per-site cache (listed
# above this middleware) kept and serves again names an earlier request, and gets this one's.
_HEADER_ATTRIBUTE = "_tracekit_set_header"


class TracekitMiddleware(OptionsReadLate):
    """Correlates and traces every request Django handles, in sync or async mode."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings
        from django.core.signals import got_request_exception

        self.get_response = get_response
        self._attributes = ServerAttributes()
        self._listed_above = _listed_above(type(self), getattr(settings, "MIDDLEWARE", None))
        # An invalid option stops the project now, as it starts; the rest, metrics included,
        # waits for the first request (a project's wsgi.py ends with get_wsgi_application(),
        # which builds this middleware, and tracekit.init is often appended after it).
        super().__init__(None, None, dict(getattr(settings, "TRACEKIT", {}) or {}))
        got_request_exception.connect(_remember_answered_exception, dispatch_uid=__name__)
        _async_test_client_requests.instrument()  # (on its import: never, outside tests)
        # On the import of Django's ASGI handler (never under WSGI). Not only where Django calls
        # this middleware asynchronously: under ASGI it calls it synchronously too, in a worker
        # thread, when the middleware below it runs only so (a function-style middleware).
        _fresh_context_per_request.instrument()
        if iscoroutinefunction(get_response):  # under ASGI
            markcoroutinefunction(self)

    def _configure(self, requests: ServerRequests) -> None:
        self._environ_keys = header_keys(requests.wanted_headers)

    def __call__(self, request: Any) -> Any:
        if iscoroutinefunction(self):
            return self.__acall__(request)
        active = self._start(request)
        if active is None:
            try:
                return self.get_response(request)
            finally:
                _leave_excluded(request)
        try:
            response = self.get_response(request)
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError) and hasattr(request, "scope"):
                # Under ASGI, run in a worker thread (a sync-only middleware below this one):
                # the view Django cancelled, below, raises it here.
                self._client_left(active, request)
                raise
            # Django let the view's exception out (DEBUG_PROPAGATE_EXCEPTIONS): the server answers
            active.status_code = _server_answer(error, request)
            _finish(self._requests, active, request, error)
            raise
        return self._respond(active, request, response)

    async def __acall__(self, request: Any) -> Any:
        """The async path, used when Django runs this middleware chain under ASGI."""
        active = self._start(request)
        if active is None:
            try:
                return await self.get_response(request)
            finally:
                _leave_excluded(request)
        try:
            response = await self.get_response(request)
        except asyncio.CancelledError:
            self._client_left(active, request)
            raise
        except BaseException as error:
            # Django let the view's exception out (DEBUG_PROPAGATE_EXCEPTIONS): the server answers
            active.status_code = _server_answer(error, request)
            _finish(self._requests, active, request, error)
            raise
        return self._respond(active, request, response)

    def _client_left(self, active: ActiveRequest, request: Any) -> None:
        """Django cancels the view's task when the client disconnects: the client's doing,
        counted as nginx counts it ("499 client closed request"), not as a server error."""
        active.status_code = CLIENT_CLOSED_REQUEST
        _note_cancelled(active)
        _finish(self._requests, active, request, None)

    def process_exception(self, request: Any, exception: BaseException) -> None:
        """Remember the view's exception for the span; Django goes on to build its 500 page."""
        setattr(request, _ERROR_ATTRIBUTE, exception)

    def _start(self, request: Any) -> ActiveRequest | None:
        self._read_options()  # (two first requests at once both read them: the same options)
        if self._listed_above:  # said at the first request, where an outer layer shows
            self._listed_above = _warn_listed_above(self._listed_above, request)
        # A request answered in this thread or task and never closed (Django's test client
        # closes a streamed response only once its body is read) has no part in this one.
        forget_answered_request()
        # Below SCRIPT_NAME (a proxy's /api prefix), as the WSGI and ASGI middleware match it.
        if self._requests.is_excluded(request.path_info):
            # an outer layer's span and metrics too
            setattr(request, _EXCLUDED_ATTRIBUTE, exclude_enclosing(_outer(request)))
            return None
        try:
            headers = headers_of(request.META, self._environ_keys)
            attributes = self._attributes(request.META)
            _add_asgi_protocol(attributes, request)
            return self._requests.start(
                request.method, request.path, headers, attributes, enclosing=_outer(request),
                route_of=lambda: route_of(request),  # resolved before the view runs
            )  # fmt: skip
        except Exception as error:
            report_once("django request start", error)
            return None

    def _respond(self, active: ActiveRequest, request: Any, response: Any) -> Any:
        try:
            active.status_code = response.status_code
            header = self._requests.response_header
            if header not in response or getattr(response, _HEADER_ATTRIBUTE, False):
                response[header] = active.correlation_id
                setattr(response, _HEADER_ATTRIBUTE, True)
        except Exception as error:
            report_once("django response header", error)
        _keep_route(request)
        if not getattr(response, "streaming", False):
            _complete(self._requests, active, request)
        else:
            _tell_outer_the_route(self._requests, active, request)
            _watch_stream(self._requests, active, request, response)
        _finish_on_close(self._requests, active, request, response)
        return response


_EXCLUDED_ATTRIBUTE = "_tracekit_excluded"


@guarded(None)
def _leave_excluded(request: Any) -> None:
    """Make the outer layer's span current again, once an excluded request's view has run."""
    token = getattr(request, _EXCLUDED_ATTRIBUTE, None)
    if token is not None:
        delattr(request, _EXCLUDED_ATTRIBUTE)
        otel_context.detach(token)


@guarded(_NONE_ABOVE)
def _listed_above(middleware: type, listed: object) -> tuple[str, ...]:
    """The entries of ``MIDDLEWARE`` above this middleware's, which Django runs before it."""
    if not isinstance(listed, list | tuple):
        return ()
    name = f"{middleware.__module__}.{middleware.__qualname__}"
    above = listed[: listed.index(name)] if name in listed else []
    return tuple(
        str(entry)[:200]
        for entry in above
        if entry not in _FIRST_BY_ITS_DOCS and not str(entry).startswith("opentelemetry.")
    )


@guarded(_NONE_ABOVE)
def _warn_listed_above(above: tuple[str, ...], request: Any) -> tuple[str, ...]:
    """Say once that what a middleware above answers itself goes unseen (OpenTelemetry's Django
    instrumentation puts its own first; tracekit leaves ``MIDDLEWARE`` as the user wrote it),
    unless tracekit's WSGI or ASGI middleware around Django sees every request. Once in the
    process: a test suite's every client builds the middleware anew."""
    if _outer(request) is None and above not in _warned_above:
        _warned_above.add(above)
        _log.warning(
            "tracekit: MIDDLEWARE lists %s above tracekit.django.TracekitMiddleware: a response"
            " one of them makes itself (an HTTPS or APPEND_SLASH redirect, an early answer) is"
            " not traced or counted and has no correlation header; list tracekit's first",
            ", ".join(above[:5]) + (", ..." if len(above) > 5 else ""),
        )
    return ()


@guarded(None)
def _remember_answered_exception(sender: object, request: Any = None, **kwargs: Any) -> None:
    """``got_request_exception``: Django answers with its 500 page an exception that a middleware
    below tracekit's raised too (never passed to ``process_exception``, which sees the view's
    alone, also one Django answered with a 4xx before); it is the one being handled as Django
    sends this signal."""
    error = sys.exc_info()[1]
    if request is not None and error is not None:
        setattr(request, _ERROR_ATTRIBUTE, error)


class _FreshContextPerRequest(Instrumentor):
    """Each request Django's ASGI handler serves starts without the one answered before it.

    uvicorn starts a connection's next pipelined request from inside the previous response's
    last send, which Django makes in that request's context, and the new request's task copies
    it. Django sends ``request_started`` before any middleware runs: its receivers (a project's
    log line, a database tag) saw the previous request's correlation ID and span.
    """

    target = "django.core.handlers.asgi"

    def patch(self, module: ModuleType) -> None:
        # Not ``__call__``: servers tell an ASGI 3 app by inspecting it (uvicorn took a wrapped
        # one for ASGI 2). ``handle`` runs in the request's task, before the signal.
        self.wrap(module.ASGIHandler, "handle", _forgetting_answered_request)
        # A cancelled view's ``request_finished`` is sent from ``handle`` itself, not by a
        # response's close: its receivers get the request's context from here.
        signal = type(module.signals.request_finished)
        if "asend" in signal.__dict__:  # Django 5: the one that cancels views
            self.wrap(signal, "asend", _sent_in_cancelled_context)


_fresh_context_per_request = _FreshContextPerRequest()


class _AsyncTestClientRequests(Instrumentor):
    """Each request Django's ``AsyncClient`` makes leaves the test's context as it was.

    The client runs the request in the test's own task, where a server gives each request a
    task of its own, and closes the response from another thread: what the request made current
    (kept until the response closes, so that Django's own log line for it carries its IDs)
    stayed current in the test, and, through ``async_to_sync``, which copies a context back, in
    the tests that ran after it. Not ``__call__``: the first request of a process builds this
    middleware, hence this patch, inside it; the handler looks ``get_response_async`` up after
    that, so the first request is covered too (it was left current for the whole test run).
    """

    target = "django.test.client"

    def patch(self, module: ModuleType) -> None:
        # BaseHandler's (AsyncClientHandler has no own): the wrapper passes a server's through.
        self.wrap(module.BaseHandler, "get_response_async", _in_a_context_of_its_own)


_async_test_client_requests = _AsyncTestClientRequests()


async def _in_a_context_of_its_own(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not _is_async_test_client(instance):
        return await wrapped(*args, **kwargs)
    tokens = _keep_current()
    forget_answered_request()  # one an earlier test left open (a streamed body never read)
    response = None
    try:
        response = await wrapped(*args, **kwargs)
        return response
    finally:
        # A streamed body is produced as the test reads it, in the request's context, which
        # its close puts back (as Django's Client does): it stays current until then.
        if not getattr(response, "streaming", False):
            _leave_request_context(tokens)


def _is_async_test_client(handler: object) -> bool:
    from django.test.client import AsyncClientHandler

    return isinstance(handler, AsyncClientHandler)


def _keep_current() -> CurrentTokens | None:
    """Tokens that put back what is current now, whatever is made current after them."""
    try:
        kept = correlation._set_checked(correlation.correlation_id())
        return kept, otel_context.attach(otel_context.get_current())
    except Exception as error:
        report_once("django async test client", error)
        return None


async def _forgetting_answered_request(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # ASGIHandler.__call__ awaits handle() as it calls it: this runs in the request's own task,
    # and what it attaches ends with that task.
    forget_answered_request()
    box = _FromRequestTasks()
    _from_request_tasks.set(box)  # this request's, in its handler's task
    try:
        return await wrapped(*args, **kwargs)
    except Exception as error:
        _keep_escaped_context(box, error)
        raise


class _FromRequestTasks:
    """What the handler's task learns from the tasks Django runs its request in (the view's,
    the response's), whose contexts end with them: the request whose view Django cancelled,
    and its context, for the ``request_finished`` the handler then sends; what a streamed body
    raised, and the request's context, for the server's line about it ("Exception in ASGI
    application"), logged in the handler's task."""

    cancelled: tuple[ActiveRequest, otel_context.Context] | None = None
    escaped: tuple[BaseException, contextvars.Context] | None = None


_from_request_tasks: contextvars.ContextVar[_FromRequestTasks | None] = contextvars.ContextVar(
    "tracekit_django_from_request_tasks", default=None
)


@guarded(None)
def _note_cancelled(active: ActiveRequest) -> None:
    """Run in the view's task, whose context is a copy of the handler's: the box is shared."""
    box = _from_request_tasks.get()
    if box is not None:
        box.cancelled = (active, otel_context.get_current())


@guarded(None)
def _note_escaped(error: BaseException) -> None:
    """Run in the response's task, in the request's context: the box is the handler's."""
    box = _from_request_tasks.get()
    if box is not None:
        box.escaped = (error, contextvars.copy_context())


@guarded(None)
def _keep_escaped_context(box: _FromRequestTasks, error: BaseException) -> None:
    """Where the server logs it: in this task, the request's own, concurrent requests each find
    theirs (the thread's last one is another request's as soon as two fail together)."""
    if box.escaped is not None and box.escaped[0] is error:
        correlation._remember_context_here(error, box.escaped[1])


def _sent_in_cancelled_context(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Signal.asend``: ``request_finished`` for a cancelled view goes to its receivers in the
    request's context, as it does when the response closes; every other send as it is."""
    box = _from_request_tasks.get()
    if box is None or box.cancelled is None or instance is not _request_finished():
        return wrapped(*args, **kwargs)
    cancelled, box.cancelled = box.cancelled, None
    return _in_context_of(cancelled, wrapped(*args, **kwargs))


def _request_finished() -> object:
    from django.core.signals import request_finished

    return request_finished


async def _in_context_of(
    cancelled: tuple[ActiveRequest, otel_context.Context], sending: Awaitable[Any]
) -> Any:
    tokens = _enter_request_context(*cancelled)
    try:
        return await sending
    finally:
        _leave_request_context(tokens)


@guarded(None)
def _tell_outer_the_route(requests: ServerRequests, active: ActiveRequest, request: Any) -> None:
    requests.routed(active, _route_of(request))


def _watch_stream(
    requests: ServerRequests, active: ActiveRequest, request: Any, response: Any
) -> None:
    """Record on the request an exception the streamed body raises part-way (the client got a
    cut body), as the WSGI and ASGI middleware do. A file response is left as it is: servers
    send its file their own way (``wsgi.file_wrapper``, sendfile)."""
    if getattr(response, "file_to_stream", None) is not None:
        return

    is_async = bool(getattr(response, "is_async", False))

    def failed(error: BaseException, answered: bool) -> None:
        # The server logs what the body raised once the response is closed and the request's
        # context put back ("Error handling request", "Exception in ASGI application"): kept
        # beside the exception, as the WSGI and ASGI middleware keep it, that line names it.
        correlation._remember_context(error)
        _note_escaped(error)  # under ASGI, for the handler's task, where the server logs it
        try:
            if not hasattr(request, "scope") and (is_async or not answered):
                # Under WSGI nothing goes out before the first chunk, and Django reads an async
                # body whole before sending any: the server answers instead (gunicorn and
                # werkzeug with their own 500). Under ASGI Django has sent the status already.
                active.status_code = server_answer(error, request.META)
            requests.complete(active, _route_of(request), error)
        except Exception as exc:
            report_once("django request finish", exc)

    try:
        content = response.streaming_content
        watch = _watched_async if is_async else _watched
        response.streaming_content = watch(content, failed)
    except Exception as error:
        report_once("django streamed response", error)


# Called with the exception a streamed body raised, and whether a chunk had gone out before.
_Failed = Callable[[BaseException, bool], None]


def _watched(content: Iterable[bytes], failed: _Failed) -> Iterator[bytes]:
    answered = False
    try:
        for part in content:
            yield part
            answered = True
    except Exception as error:  # not GeneratorExit: a server that stopped reading
        failed(error, answered)
        raise


async def _watched_async(content: AsyncIterable[bytes], failed: _Failed) -> AsyncIterator[bytes]:
    answered = False
    try:
        async for part in content:
            yield part
            answered = True
    except Exception as error:  # not CancelledError: a client that went away
        failed(error, answered)
        raise


def _finish_on_close(
    requests: ServerRequests, active: ActiveRequest, request: Any, response: Any
) -> None:
    """Finish the request when the server closes the response (when Django sends
    ``request_finished``): a streamed body is still being produced after the view returns, and
    Django logs a 4xx or 5xx ("Not Found: /x") after the middleware chain has returned, which
    should carry the request's IDs. Under ASGI Django closes the response in another context,
    where nothing is restored: the request's own task context ends with it. The request's
    context is made current there for the close, so ``request_finished``'s receivers see its
    correlation ID and span, as under WSGI.

    Django also closes the request with the response it sends: where a middleware listed
    above tracekit's sends one of its own instead (CommonMiddleware's APPEND_SLASH redirect in
    place of a 404), the server never closes this response, and the request ends then."""
    close = _own_close(response)
    close_request = getattr(request, "close", None)  # (a test's stand-in request may have none)
    carried = otel_context.get_current()  # the request's: its span and correlation ID
    closing = finished = False

    def finish(after: BaseException | None = None) -> None:
        nonlocal finished
        if not finished:
            finished = True
            _complete(requests, active, request)  # a streamed response's span ends here
            # Complete by now: restores the context; ``after``, what the close raised (a
            # request_finished receiver), failed after the response.
            _finish(requests, active, request, after)

    def close_and_finish() -> None:
        nonlocal closing
        closing = True  # this response's close closes the request too: finished after it
        tokens = _enter_request_context(active, carried)
        failed = None
        try:
            close()
        except BaseException as error:
            failed = error
            raise
        finally:
            finish(failed)
            _leave_request_context(tokens)

    def close_request_and_finish() -> None:
        # Not this response's close: left current, the request's context was the next
        # request's in a WSGI server's thread, until tracekit's middleware started it.
        if not closing:
            finish()
        if close_request is not None:
            close_request()

    try:
        response.close = _ClosingHook(response, close, close_and_finish)
        if close_request is not None:
            request.close = close_request_and_finish
    except Exception as error:  # a class that refuses the attribute: finish now
        report_once("django response close", error)
        finish()


class _ClosingHook:
    """``response.close`` until the server closes the response. Django's cache middleware
    pickles the response it caches (``UpdateCacheMiddleware``, listed above this middleware, as
    Django's docs list it, first): a function here made every cacheable page a 500 ("Can't
    pickle local object"). A cached copy has no part in this request: it gets its own close."""

    def __init__(
        self, response: Any, own_close: Callable[[], None], close_and_finish: Callable[[], None]
    ) -> None:
        self._response = response
        self.own_close = own_close
        self._close_and_finish = close_and_finish

    def __call__(self) -> None:
        self._close_and_finish()

    def __reduce__(self) -> tuple[Callable[[Any, str], Any], tuple[Any, str]]:
        # Unpickled before the copy's attributes are: its class's close, bound to the copy.
        return getattr, (self._response, "close")


def _own_close(response: Any) -> Callable[[], None]:
    """``response.close`` without the hook of an earlier request that the same response object
    answered (a view that returns one module-level response): each request's hook called the one
    before it, and after some hundred requests closing it overflowed the stack."""
    close: Callable[[], None] = response.close
    return close.own_close if isinstance(close, _ClosingHook) else close


def _enter_request_context(
    active: ActiveRequest, carried: otel_context.Context
) -> CurrentTokens | None:
    """Make the request's context current where it is not: Django's ASGI handler closes the
    response from its own task. None where it is current already (WSGI)."""
    try:
        if correlation.correlation_id() == active.correlation_id:
            return None
        return make_current(active.correlation_id, carried)
    except Exception as error:
        report_once("django response close context", error)
        return None


@guarded(None)
def _leave_request_context(tokens: CurrentTokens | None) -> None:
    if tokens is not None:
        restore_current(tokens)


def _server_answer(error: BaseException, request: Any) -> int:
    """The status the server answers ``error`` with, which Django let out of the view: an ASGI
    server answers any exception with its 500 (uvicorn's), an OSError too, however Django ran
    this middleware (synchronously, in a worker thread, above a sync-only middleware); a WSGI
    server as ``server_answer`` tells."""
    if hasattr(request, "scope"):
        return 500 if isinstance(error, Exception) else 0
    return server_answer(error, request.META)


def _outer(request: Any) -> object:
    """The request tracekit's WSGI or ASGI middleware around Django traces, from the environ or
    scope it left it in: found also where OpenTelemetry's Django middleware made its own span
    current in between, which hides it from the context."""
    scope = getattr(request, "scope", None)  # under ASGI; under WSGI, META is the environ
    return (scope if isinstance(scope, dict) else request.META).get(OUTER_REQUEST_KEY)


@guarded(None)
def _keep_route(request: Any) -> None:
    """Read the route as the response comes through the middleware, for a streamed one's span,
    which ends when the response is closed: under ASGI Django closes it outside the request's
    task, where the language ``i18n_patterns`` matched is no longer active, and a language
    prefix read as the default language's none (``/fr/export`` named ``/export``)."""
    setattr(request, _ROUTE_ATTRIBUTE, route_of(request))


def _route_of(request: Any) -> str | None:
    """The route ``_keep_route`` read, else the resolver's now (a view that raised)."""
    kept: str | None = getattr(request, _ROUTE_ATTRIBUTE, None)
    return kept if kept is not None else route_of(request)


def _server_error(request: Any, active: ActiveRequest) -> BaseException | None:
    """The view's exception if Django answered it with a server error. ``Http404``,
    ``PermissionDenied``, ``SuspiciousOperation``, ``BadRequest``... become 4xx responses: the
    client's error, recorded by its status code alone."""
    error: BaseException | None = getattr(request, _ERROR_ATTRIBUTE, None)
    return error if active.status_code >= 500 or not active.status_code else None


def _complete(requests: ServerRequests, active: ActiveRequest, request: Any) -> None:
    """End the span and record the metrics: the response is ready, its context stays current."""
    try:
        requests.complete(active, _route_of(request), _server_error(request, active))
    except Exception as exc:
        report_once("django request finish", exc)


def _finish(
    requests: ServerRequests, active: ActiveRequest, request: Any, error: BaseException | None
) -> None:
    try:
        requests.finish(active, _route_of(request), error)
    except Exception as exc:
        report_once("django request finish", exc)


def _add_asgi_protocol(attributes: dict[str, Any], request: Any) -> None:
    """Under ASGI, Django's META has no ``SERVER_PROTOCOL``: the scope has the HTTP version."""
    if semconv.NETWORK_PROTOCOL_VERSION not in attributes:
        version = getattr(request, "scope", {}).get("http_version")
        if isinstance(version, str) and version:
            attributes[semconv.NETWORK_PROTOCOL_VERSION] = version[:16]
