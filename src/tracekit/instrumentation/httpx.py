"""httpx: a CLIENT span and injected context for every ``Client.send`` and ``AsyncClient.send``.

Every httpx call (``httpx.get``, ``client.post``, streaming, redirects handled by the client)
goes through ``send``, so one patch per client class covers them all; the redirects it follows
inside get their headers from ``_redirect_headers``, which tracekit wraps too (what it wrote of
``baggage`` and the correlation header stays within the origin the caller called), and each is
sent by ``_send_single_request``, where it gets a span of its own (``http.request.resend_count``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from tracekit._http.client import (
    ClientCall,
    call_resending,
    current_call,
    keep_within_called_origin,
    keep_within_origin,
    note_answer,
    resend,
    run_traced,
    run_traced_async,
)
from tracekit._runtime.guard import report_once
from tracekit.instrumentation._base import Instrumentor

__all__ = ["HttpxInstrumentor"]


class HttpxInstrumentor(Instrumentor):
    """Traces httpx's sync and async clients."""

    target = "httpx"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.Client, "send", _traced_send)
        self.wrap(module.AsyncClient, "send", _traced_send_async)
        # httpx follows redirects inside ``send``, and makes each redirect's headers in this
        # private method of its clients' base: wrapped where it is, the rest works without.
        base = getattr(getattr(module, "_client", None), "BaseClient", None)
        if base is not None and callable(base.__dict__.get("_redirect_headers")):
            self.wrap(base, "_redirect_headers", _redirect_headers)
        # Correlation-only mode keeps no record of the call: the redirect's request is built
        # here, from the response, whose history names the request first sent.
        if base is not None and callable(base.__dict__.get("_build_redirect_request")):
            self.wrap(base, "_build_redirect_request", _build_redirect_request)
        # Each request ``send`` puts on the wire (the first, each redirect followed, each
        # resend of an auth flow) goes through this private method: every one after the first
        # gets a span of its own. If it is gone, the call's one span covers them all, as before.
        if callable(module.Client.__dict__.get("_send_single_request")):
            self.wrap(module.Client, "_send_single_request", _sending)
        if callable(module.AsyncClient.__dict__.get("_send_single_request")):
            self.wrap(module.AsyncClient, "_send_single_request", _sending_async)


def _request_sent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The ``httpx.Request`` the call sends; None when it names none (missing, or something
    else: a URL, a dict), for httpx to refuse in its own words, as without tracekit."""
    import httpx

    request = args[0] if args else kwargs.get("request")
    return request if isinstance(request, httpx.Request) else None


def _with_a_copy(
    request: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """A copy of ``request`` and the call's arguments with it in place, so one the caller
    sends again never carries the headers of an earlier call: a correlation ID of another
    request, or a trace header the next call would take for the caller's own, and join that
    call's trace."""
    import httpx

    # of the same class (an application's subclass keeps its own methods), body and
    # extensions, with headers of its own; not ``copy.copy``: httpx's pickling support
    # leaves a copy's body and extensions behind
    copy = object.__new__(type(request))
    copy.__dict__.update(vars(request))
    copy.headers = httpx.Headers(request.headers)
    if args:
        return copy, (copy, *args[1:]), kwargs
    return copy, args, {**kwargs, "request": copy}


def _redirect_headers(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The headers of a redirect (``_redirect_headers(request, url, method)``), without what
    tracekit wrote that stays within the origin the caller called."""
    headers = wrapped(*args, **kwargs)
    url = args[1] if len(args) > 1 else kwargs.get("url")
    keep_within_origin(str(url), headers)
    return headers


def _build_redirect_request(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The next request of a redirect (``_build_redirect_request(request, response)``); in
    correlation-only mode, without what tracekit wrote when it leaves the origin called."""
    hop = wrapped(*args, **kwargs)
    try:
        response = args[1] if len(args) > 1 else kwargs["response"]
        first = response.history[0] if response.history else response
        keep_within_called_origin(str(first.request.url), str(hop.url), hop.headers)
    except Exception as error:
        report_once("httpx redirect", error)
    return hop


def _traced_send(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request = _request_sent(args, kwargs)
    if request is None:
        return wrapped(*args, **kwargs)  # httpx refuses it in its own words
    request, args, kwargs = _with_a_copy(request, args, kwargs)
    return run_traced(
        request.method,
        str(request.url),
        request.headers,
        lambda: wrapped(*args, **kwargs),
        lambda response: response.status_code,
        lambda response: response.http_version,
    )


async def _traced_send_async(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request = _request_sent(args, kwargs)
    if request is None:
        return await wrapped(*args, **kwargs)  # httpx refuses it in its own words
    request, args, kwargs = _with_a_copy(request, args, kwargs)
    return await run_traced_async(
        request.method,
        str(request.url),
        request.headers,
        lambda: wrapped(*args, **kwargs),
        lambda response: response.status_code,
        lambda response: response.http_version,
    )


def _sending(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _resent(args, kwargs)
    response = wrapped(*args, **kwargs)
    _answered(call, response)
    return response


async def _sending_async(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    call = _resent(args, kwargs)
    response = await wrapped(*args, **kwargs)
    _answered(call, response)
    return response


def _answered(call: ClientCall | None, response: Any) -> None:
    """Note the answer to the request of ``call`` sent last, for its span and the next's."""
    if call is not None:
        note_answer(call, response.status_code, response.http_version)


def _resent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ClientCall | None:
    """The call this request (``_send_single_request(request)``) is of; a request of it sent
    after another was answered is a resend, with a span of its own. (The first costs one
    look-up: nothing is compared before an answer came.)"""
    try:
        call = current_call()
        if call is not None and call.answer:
            request = args[0] if args else kwargs["request"]
            if call_resending(request.headers) is call:
                resend(call, request.method, str(request.url), request.headers, call.answer)
        return call
    except Exception as error:
        report_once("httpx resend", error)
        return None
