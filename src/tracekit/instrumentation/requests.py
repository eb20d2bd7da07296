"""requests: a CLIENT span and injected context for every ``Session.send``."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from tracekit._http.client import run_traced
from tracekit.instrumentation._base import Instrumentor

__all__ = ["RequestsInstrumentor"]


class RequestsInstrumentor(Instrumentor):
    """Traces requests' ``Session.send``, which every requests call goes through."""

    target = "requests.sessions"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.Session, "send", _traced_send)


def _traced_send(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    from requests import PreparedRequest

    request = args[0] if args else kwargs.pop("request")
    if not isinstance(request, PreparedRequest):  # requests refuses it in its own words
        return wrapped(request, *args[1:], **kwargs)
    # A copy is sent, so a request the caller sends again (``session.send(prepared)`` in a
    # loop) never carries the headers of an earlier call: a correlation ID of another request.
    request = request.copy()
    args = (request, *args[1:])
    return run_traced(
        request.method or "GET",
        request.url or "",
        request.headers,
        lambda: wrapped(*args, **kwargs),
        lambda response: response.status_code,
    )
