"""httpx: a CLIENT span and injected context for every ``Client.send`` and ``AsyncClient.send``.

Every httpx call (``httpx.get``, ``client.post``, streaming, redirects handled by the client)
goes through ``send``, so one patch per client class covers them all.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from tracekit._http.client import run_traced, run_traced_async
from tracekit.instrumentation._base import Instrumentor

__all__ = ["HttpxInstrumentor"]


class HttpxInstrumentor(Instrumentor):
    """Traces httpx's sync and async clients."""

    target = "httpx"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.Client, "send", _traced_send)
        self.wrap(module.AsyncClient, "send", _traced_send_async)


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs["request"]


def _traced_send(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request = _request_of(args, kwargs)
    return run_traced(
        request.method,
        str(request.url),
        request.headers,
        lambda: wrapped(*args, **kwargs),
        lambda response: response.status_code,
    )


async def _traced_send_async(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request = _request_of(args, kwargs)
    return await run_traced_async(
        request.method,
        str(request.url),
        request.headers,
        lambda: wrapped(*args, **kwargs),
        lambda response: response.status_code,
    )
