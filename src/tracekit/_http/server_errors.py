"""The correlation header on the 500 that Starlette sends for an unhandled exception.

Starlette (and FastAPI) answer an unhandled exception in ``ServerErrorMiddleware``, the outermost
layer of every app, through the server's own ``send``: a middleware added with
``app.add_middleware`` sits inside it and never sees that response. tracekit's ASGI middleware
leaves the header it echoes in the request's scope (``ECHO_KEY``), and a wrapper around
``ServerErrorMiddleware.__call__`` adds it to the response that middleware starts, when it is not
there already. The wrapper is installed (lazily, once) by the first tracekit ASGI middleware and
does nothing for requests tracekit did not see.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from types import ModuleType
from typing import Any

from tracekit._http.asgi_types import Message, Send
from tracekit.instrumentation._base import Instrumentor

ECHO_KEY = "tracekit.echo"


class _ServerErrorPages(Instrumentor):
    target = "starlette.middleware.errors"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.ServerErrorMiddleware, "__call__", _echoing_call)


_server_error_pages = _ServerErrorPages()


def echo_on_server_error_pages() -> None:
    """Make Starlette's 500 pages carry the correlation header (idempotent, lazy)."""
    _server_error_pages.instrument()


def with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    """``message`` (an ``http.response.start``) with ``header`` added unless it has that name."""
    headers = message.get("headers") or ()
    if not isinstance(headers, list | tuple):  # any iterable: read it once
        headers = list(headers)
    for name, _ in headers:
        if name.lower() == header[0]:
            return message
    return {**message, "headers": [*headers, header]}


def _echoing_call(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if len(args) != 3 or kwargs or args[0].get("type") != "http":
        return wrapped(*args, **kwargs)
    scope, receive, send = args
    return wrapped(scope, receive, _echoing_send(scope, send))


def _echoing_send(scope: MutableMapping[str, Any], send: Send) -> Send:
    async def send_with_correlation(message: Message) -> None:
        if message["type"] == "http.response.start":
            echo = scope.get(ECHO_KEY)
            if echo is not None:
                message = with_header(message, echo)
        await send(message)

    return send_with_correlation
