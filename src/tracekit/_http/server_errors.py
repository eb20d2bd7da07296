"""The correlation header on the 500 that Starlette sends for an unhandled exception.

Starlette (and FastAPI) answer an unhandled exception in ``ServerErrorMiddleware``, the outermost
layer of every app, through the server's own ``send``: a middleware added with
``app.add_middleware`` sits inside it and never sees that response. tracekit's ASGI middleware
leaves the header it echoes in the request's scope (``ECHO_KEY``), and the page that middleware
makes (its own, its debug page, or the app's 500 handler's) gets it, when it has not that header
already. Only the error path is wrapped, so requests that succeed pay nothing for it; the
wrappers are installed (lazily, once) by the first tracekit ASGI middleware. An app's own 500
handler is wrapped when its ``ServerErrorMiddleware`` is built, which Starlette does at the app's
first request; that wrapper also tells the middleware, which has let the exception go by then,
the status of the handler's page (``AWAITED_KEY``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context

from tracekit._http.asgi_types import Message
from tracekit._http.server import CurrentTokens, make_current, restore_current
from tracekit._runtime.guard import guarded, safe
from tracekit.instrumentation._base import Instrumentor

ECHO_KEY = "tracekit.echo"
# In the scope, where the app's own 500 handler answers the exception of a request tracekit has
# let go: an ``AwaitedPage``.
AWAITED_KEY = "tracekit.awaited_page"


@dataclass(slots=True)
class AwaitedPage:
    """The request whose exception the app's own 500 handler answers: its correlation ID and
    context, current again while the handler runs (its page may quote the ID), and those told
    the status of the handler's page (500, uvicorn's, when the handler raises)."""

    correlation_id: str
    context: otel_context.Context
    answered: list[Callable[[int], None]] = field(default_factory=list)


def await_page(
    scope: MutableMapping[str, Any],
    correlation_id: str,
    context: otel_context.Context,
    answered: Callable[[int], None] | None = None,
) -> None:
    """Leave a request for the app's own 500 handler to answer. A layer further in (a traced
    app mounted in a correlation-only one) may have left its own already: the handler runs in
    that one's context, whose ID its header carries, and tells every layer its status, so
    none stays open for ever."""
    page = scope.get(AWAITED_KEY)
    if not isinstance(page, AwaitedPage):
        page = scope[AWAITED_KEY] = AwaitedPage(correlation_id, context)
    if answered is not None:
        page.answered.append(answered)


class _ServerErrorPages(Instrumentor):
    target = "starlette.middleware.errors"

    def patch(self, module: ModuleType) -> None:
        pages = module.ServerErrorMiddleware
        self.wrap(pages, "error_response", _echoing_page)
        self.wrap(pages, "debug_response", _echoing_page)
        self.wrap(pages, "__init__", _echoing_handler)


_server_error_pages = _ServerErrorPages()


def echo_on_server_error_pages() -> None:
    """Make Starlette's 500 pages carry the correlation header (idempotent, lazy)."""
    _server_error_pages.instrument()


def with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    """``message`` (an ``http.response.start``) with ``header`` added unless it has that name."""
    headers = message.get("headers") or ()
    if not isinstance(headers, list | tuple):  # any iterable: read it once
        headers = list(headers)
    if _has(headers, header[0]):
        return message
    return {**message, "headers": [*headers, header]}


def _has(headers: list[Any] | tuple[Any, ...], wanted: bytes) -> bool:
    # a loop, not any() over a generator, which costs more: this runs for every response
    for name, _ in headers:  # noqa: SIM110
        # the length first: most names differ in it, and are not lower-cased for nothing
        if len(name) == len(wanted) and name.lower() == wanted:
            return True
    return False


def _echoing_page(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    page = wrapped(*args, **kwargs)
    request = args[0] if args else kwargs.get("request")
    _echo_on(page, getattr(request, "scope", None))
    return page


def _echoing_handler(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """After ``ServerErrorMiddleware.__init__``: the app's own 500 handler, if any, echoing."""
    wrapped(*args, **kwargs)
    handler = getattr(instance, "handler", None)
    if handler is not None:
        instance.handler = _echoing(handler)


def _echoing(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` whose page gets the header. Always a coroutine function, which Starlette
    awaits; a plain function runs in the thread pool, as Starlette would run it."""
    from starlette.concurrency import run_in_threadpool

    async def echoing_handler(request: Any, exc: Exception) -> Any:
        scope = getattr(request, "scope", None)
        awaited = scope.pop(AWAITED_KEY, None) if isinstance(scope, dict) else None
        if not isinstance(awaited, AwaitedPage):
            awaited = None
        status = 500  # the server's answer, should the handler raise
        tokens = _made_current(awaited) if awaited else None
        try:
            if _is_coroutine_function(handler):
                page = handler(request, exc)
            else:
                page = await run_in_threadpool(handler, request, exc)
            if inspect.isawaitable(page):
                page = await page
            status = _status_of(page)
        finally:
            if tokens is not None:
                _restored(tokens)
            if awaited is not None:
                for answered in awaited.answered:
                    answered(status)
        _echo_on(page, scope)
        return page

    echoing_handler.tracekit_echoing = True  # type: ignore[attr-defined]
    return echoing_handler


def _made_current(awaited: AwaitedPage) -> CurrentTokens | None:
    """The request's ID and context made current for its handler (None if that failed)."""
    return safe("asgi 500 handler", lambda: make_current(awaited.correlation_id, awaited.context))


@guarded(None)
def _restored(tokens: CurrentTokens) -> None:
    restore_current(tokens)


def answers_through_tracekit(errors_middleware: object) -> bool:
    """Whether a Starlette ``ServerErrorMiddleware`` answers an exception with the app's own 500
    handler, wrapped here (so an ``AWAITED_KEY`` is read): not in debug mode, which answers with
    the debug page instead."""
    handler = getattr(errors_middleware, "handler", None)
    return getattr(handler, "tracekit_echoing", False) and not getattr(
        errors_middleware, "debug", True
    )


def _status_of(page: object) -> int:
    """The status of the handler's page: 500, the server's, for what is no page at all (a
    dict, which Starlette fails to send); 0, unknown, for an ASGI app without ``status_code``."""
    status = getattr(page, "status_code", None)
    if type(status) is int:
        return status
    return 0 if callable(page) else 500


def _is_coroutine_function(handler: Callable[..., Any]) -> bool:
    while isinstance(handler, functools.partial):
        handler = handler.func
    call = getattr(handler, "__call__", None)  # noqa: B004 (an instance with an async __call__)
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _echo_on(page: object, scope: object) -> None:
    """Add the header tracekit's middleware left in ``scope`` to ``page`` (a Starlette
    ``Response``), unless the page has one of that name: the app's own choice stands."""
    echo = scope.get(ECHO_KEY) if isinstance(scope, Mapping) else None
    headers = getattr(page, "raw_headers", None)
    if echo is None or not isinstance(headers, list):
        return
    if not _has(headers, echo[0]):
        headers.append(echo)
