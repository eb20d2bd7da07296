"""requests: a CLIENT span and injected context for every ``Session.send``."""

from __future__ import annotations

from collections.abc import Callable
from copy import copy as shallow_copy
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from tracekit._http.client import (
    RedirectStep,
    call_resending,
    current_call,
    note_answer,
    resend,
    run_traced,
)
from tracekit._runtime.guard import report_once
from tracekit._runtime.state import current_options
from tracekit.instrumentation._base import Instrumentor

__all__ = ["RequestsInstrumentor"]


class RequestsInstrumentor(Instrumentor):
    """Traces requests' ``Session.send``, which every requests call goes through."""

    target = "requests.sessions"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.Session, "send", _traced_send)
        self.wrap(module.SessionRedirectMixin, "rebuild_auth", _rebuild_auth)
        self.wrap(module, "dispatch_hook", _hooks_in_request_span)


def _traced_send(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    from requests import PreparedRequest

    if not args and "request" not in kwargs:
        return wrapped(*args, **kwargs)  # requests says the request is missing
    request = args[0] if args else kwargs.pop("request")
    if not isinstance(request, PreparedRequest):  # requests refuses it in its own words
        return wrapped(request, *args[1:], **kwargs)
    called = getattr(request, _REDIRECT_OF, None)
    if called is None:
        return _send_a_copy(request, wrapped, args[1:], kwargs)
    token = RedirectStep(called).attach()
    try:
        return _send_a_copy(request, wrapped, args[1:], kwargs)
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]


def _send_a_copy(
    request: Any, wrapped: Callable[..., Any], rest: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # A copy is sent, so a request the caller sends again (``session.send(prepared)`` in a
    # loop) never carries the headers of an earlier call: a correlation ID of another request.
    if request.headers is not None:  # the redirect's own request: the next is made from it
        _resend_if_redirected(request)
    request = _copy_of(request)
    if request.headers is None:  # prepared by hand, method and URL alone: requests sends that
        request.headers = _no_headers()
    args = (request, *rest)
    return run_traced(
        request.method or "GET",
        request.url or "",
        request.headers,
        lambda: wrapped(*args, **kwargs),
        lambda response: response.status_code,
        lambda response: response.raw.version,  # urllib3's number (11), as it read the answer
    )


def _copy_of(request: Any) -> Any:
    """``request`` of its own class, with every attribute the application gave it (its own
    adapter may read one), and requests' own copies of its headers and cookies: not
    ``request.copy()`` alone, a plain ``PreparedRequest`` of requests' attributes only."""
    copy = request.copy()
    if _copied_whole(request, copy):
        return copy  # requests' attributes alone, as nearly every call
    # A shallow copy keeps the class and every attribute, those a subclass keeps in
    # ``__slots__`` too, which ``vars()`` does not show.
    whole = shallow_copy(request)
    whole.__dict__.update(vars(copy))
    return whole


def _copied_whole(request: Any, copy: Any) -> bool:
    """Whether ``copy`` (``request.copy()``) holds every attribute ``request`` has."""
    cls = type(request)
    return (
        type(copy) is cls
        and len(vars(copy)) == len(vars(request))
        and not any("__slots__" in vars(base) for base in cls.__mro__[:-1])
    )


def _no_headers() -> Any:
    from requests.structures import CaseInsensitiveDict

    return CaseInsensitiveDict()


# Correlation-only mode keeps no record of a call, so a redirect's request carries the URL the
# call was first sent to, for its send (and urllib3 below it) to keep what tracekit wrote
# within that origin. Set only in that mode, by the step requests takes for redirects alone.
_REDIRECT_OF = "_tracekit_redirect_of"


def _resend_if_redirected(request: Any) -> None:
    """A redirect requests follows of a call under way gets a span of its own (the status
    that sent it there was noted by ``_rebuild_auth``)."""
    call = call_resending(request.headers)
    if call is not None and call.answer:
        resend(call, request.method or "GET", request.url or "", request.headers, call.answer)


def _rebuild_auth(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """requests' redirect step for credentials (``rebuild_auth(prepared_request, response)``):
    the redirect's request learns the URL called, in correlation-only mode; in full mode, the
    call notes the status that redirected it, for the span of the redirect's request (none is
    sent when requests only prepares it, as ``response.next``)."""
    result = wrapped(*args, **kwargs)
    try:
        hop = args[0] if args else kwargs["prepared_request"]
        response = args[1] if len(args) > 1 else kwargs["response"]
        if current_options().correlation_only:
            setattr(hop, _REDIRECT_OF, _url_called(response))
        elif hop.headers is not None:
            call = call_resending(hop.headers)
            if call is not None:
                note_answer(call, response.status_code, getattr(response.raw, "version", None))
    except Exception as error:
        report_once("requests redirect", error)
    return result


def _url_called(response: Any) -> str | None:
    """The URL the application called, of which ``response`` answers the request or a redirect
    of it: the mark the redirect's request was sent with, else its own URL. Not the first
    response of ``response.history``: requests before 2.34 leaves the first out, so a second
    redirect took the origin of the first for the one called."""
    sent = response.request
    called = getattr(sent, _REDIRECT_OF, None)
    return called if called is not None else getattr(sent, "url", None)


def _hooks_in_request_span(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """requests' ``dispatch_hook``, which runs the response hooks of each request sent: those
    of a request sent again (a redirect followed, the answer after urllib3's retries) run
    inside that request's span, as the first response's run inside the first's. (Before, the
    first span, ended by then, was current: a hook's log lines and calls went under it.)"""
    token = _enter_request_span()
    try:
        return wrapped(*args, **kwargs)
    finally:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]


def _enter_request_span() -> object | None:
    """Make the span of the call's request sent last current, unless it is; the token."""
    try:
        call = current_call()
        if call is None or trace.get_current_span() is call.span:
            return None
        return otel_context.attach(trace.set_span_in_context(call.span))
    except Exception as error:
        report_once("requests response hooks", error)
        return None
