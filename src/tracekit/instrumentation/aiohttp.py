"""aiohttp client: CLIENT spans through aiohttp's own ``TraceConfig`` extension point.

Every ``ClientSession`` created while instrumented gets tracekit's ``TraceConfig`` appended to its
``trace_configs``, and a session made before (at import, by a library) gets it at its next request.
The hooks open the span and inject context into the request headers on
``on_request_start`` and close it on ``on_request_end``/``on_request_exception``; sessions created
before ``uninstrument()`` keep the hooks but they do nothing until tracekit is instrumented again.
"""

from __future__ import annotations

from collections.abc import Callable
from time import time_ns
from types import ModuleType, SimpleNamespace
from typing import Any, ClassVar

from tracekit._http.client import (
    ClientCall,
    end_answered,
    end_call,
    keep_within_called_origin,
    keep_within_origin,
    note_protocol,
    resend,
    start_call,
)
from tracekit._runtime.guard import report_once
from tracekit.instrumentation._base import Instrumentor

__all__ = ["AiohttpInstrumentor"]


class AiohttpInstrumentor(Instrumentor):
    """Adds tracekit's ``TraceConfig`` to every new aiohttp ``ClientSession``."""

    target = "aiohttp.client"
    # One TraceConfig for every instrumentor, its hooks live while the latest one is: a session
    # made before tracekit.shutdown() and init() again is traced again, as requests' and httpx's
    # clients made then are, rather than staying silent for good.
    _shared: ClassVar[tuple[ModuleType, Any] | None] = None

    def patch(self, module: ModuleType) -> None:
        trace_config = _shared_config(module)
        self.wrap(module.ClientSession, "__init__", _with_trace_config(trace_config))
        # A session made before tracekit (at import, by a library) gets it at its next request.
        self.wrap(module.ClientSession, "_request", _adopting(trace_config))


def _shared_config(module: ModuleType) -> Any:
    """The ``TraceConfig`` of this aiohttp module, made on first use."""
    shared = AiohttpInstrumentor._shared
    if shared is None or shared[0] is not module:
        trace_config = _trace_config(module, AiohttpInstrumentor.latest_active)
        shared = AiohttpInstrumentor._shared = (module, trace_config)
    return shared[1]


def _with_trace_config(trace_config: Any) -> Callable[..., Any]:
    def init(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        configs = list(kwargs.get("trace_configs") or ())
        if trace_config not in configs:
            kwargs = {**kwargs, "trace_configs": [*configs, trace_config]}
        return wrapped(*args, **kwargs)

    return init


def _adopting(trace_config: Any) -> Callable[..., Any]:
    def request(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            configs = instance.trace_configs
            if trace_config not in configs:
                trace_config.freeze()  # as the session's own constructor freezes its configs
                # a new list: the one the session holds may be the caller's, shared
                instance._trace_configs = [*configs, trace_config]
        except Exception as error:
            report_once("aiohttp session", error)
        return wrapped(*args, **kwargs)

    return request


# What aiohttp raises as it refuses to follow a redirect it has told of: that request is never sent.
_REDIRECT_REFUSALS = (
    "TooManyRedirects",
    "InvalidUrlRedirectClientError",
    "NonHttpUrlRedirectClientError",
)


def _trace_config(module: ModuleType, enabled: Callable[[], bool]) -> Any:
    """A ``TraceConfig`` whose hooks run only while ``enabled()``."""
    refusals = tuple(getattr(module, name) for name in _REDIRECT_REFUSALS if hasattr(module, name))

    async def on_start(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        ctx.tracekit_call = None
        if enabled():
            ctx.tracekit_call = _start(params.method, str(params.url), params.headers)

    async def on_end(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        _end_answered(ctx)
        _note_protocol(ctx, params.response)
        _end(ctx, params.response.status, None)

    async def on_exception(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        error = params.exception
        status = _status_raised(error, module.ClientResponseError)
        answer = _unsent(ctx) if isinstance(error, refusals) else None
        if answer is not None:  # the request before, answered, is the last one sent
            _end(ctx, answer, error)
            return
        _end_answered(ctx)
        if status is not None:
            # ``raise_for_status``: the server answered; the span says so, as without it
            _end(ctx, status, None)
        else:
            _end(ctx, None, error)

    async def on_redirect(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        # aiohttp sends every redirect with the headers given at the start: what tracekit wrote
        # there stays within the origin the caller called (aiohttp drops Authorization too).
        call = getattr(ctx, "tracekit_call", None)
        if call is not None and call.owned:
            _keep_within_origin(params)
            _note_protocol(ctx, params.response)
            _end_answered(ctx)  # this redirect answers its resend: that one was sent
            _resend(ctx, call, params)
        elif enabled():  # correlation-only mode, maybe: the first redirect names the URL called
            ctx.tracekit_called = getattr(ctx, "tracekit_called", None) or str(params.url)
            _keep_within_called_origin(ctx.tracekit_called, params)

    trace_config = module.TraceConfig()
    trace_config.on_request_redirect.append(on_redirect)
    trace_config.on_request_start.append(on_start)
    trace_config.on_request_end.append(on_end)
    trace_config.on_request_exception.append(on_exception)
    return trace_config


def _status_raised(error: BaseException, response_error: type[BaseException]) -> int | None:
    """The status a ``ClientResponseError`` (``response_error``) names when the server answered
    with it (``raise_for_status``); None for any other error, and for the 400 aiohttp raises,
    the same way, for a response it could not parse (an HTTP parser error behind it): that
    server did not answer 400, and a span or metric saying so would blame the request."""
    from aiohttp.http_exceptions import HttpProcessingError

    status = getattr(error, "status", None)
    if not isinstance(error, response_error) or not isinstance(status, int) or not status:
        return None
    return None if isinstance(error.__cause__, HttpProcessingError) else status


def _location(response: Any) -> Any:
    """Where a redirect leads, as aiohttp reads it: ``Location``, else ``URI`` (which a server
    may send alone, and aiohttp follows too)."""
    return response.headers.get("Location") or response.headers.get("URI")


def _keep_within_origin(params: Any) -> None:
    """Where the redirect in ``params`` (its response's ``Location``) leads, as aiohttp joins it."""
    try:
        location = _location(params.response)
        if location is not None:
            keep_within_origin(str(params.url.join(type(params.url)(location))), params.headers)
    except Exception as error:
        report_once("aiohttp redirect", error)


def _note_protocol(ctx: SimpleNamespace, response: Any) -> None:
    call = getattr(ctx, "tracekit_call", None)
    if call is not None:
        note_protocol(call, getattr(response, "version", None))


def _resend(ctx: SimpleNamespace, call: ClientCall, params: Any) -> None:
    """The redirect in ``params`` is sent next with its ``headers``: a span of its own. (Its
    method is the one aiohttp keeps for it: GET after a 303, and after a 301 or 302 of a POST.)

    aiohttp tells of a redirect before it checks ``max_redirects`` (and the ``Location``): the
    answered request's span is kept open, with its answer and when it came, until the resend is
    known to be sent (``_end_answered``) or refused (``_unsent``)."""
    try:
        response = params.response
        location = _location(response)
        if location is None:  # aiohttp returns this answer: its span ends with it
            return
        hop = params.url.join(type(params.url)(location))
        method = params.method
        if (response.status == 303 and method != "HEAD") or (
            response.status in (301, 302) and method == "POST"
        ):
            method = "GET"
        answered = (call.span, response.status, time_ns())
        resend(call, method, str(hop), params.headers, response.status, end_before=False)
        if call.span is not answered[0]:
            ctx.tracekit_answered = answered
    except Exception as error:
        report_once("aiohttp resend", error)


def _end_answered(ctx: SimpleNamespace) -> None:
    """End the span of the request a redirect answered, now that its resend was sent."""
    answered = getattr(ctx, "tracekit_answered", None)
    ctx.tracekit_answered = None
    if answered is not None:
        span, answer, end_time = answered
        end_answered(span, answer, end_time=end_time)


def _unsent(ctx: SimpleNamespace) -> int | None:
    """The answer of the request a redirect answered, whose resend aiohttp refused: that
    request's span becomes the call's last again, and the resend's is dropped unended (never
    exported: it was never sent). None when no redirect is pending."""
    answered = getattr(ctx, "tracekit_answered", None)
    call = getattr(ctx, "tracekit_call", None)
    ctx.tracekit_answered = None
    if answered is None or call is None:
        return None
    call.span = answered[0]
    return int(answered[1])


def _keep_within_called_origin(called: str, params: Any) -> None:
    try:
        location = _location(params.response)
        if location is not None:
            hop = params.url.join(type(params.url)(location))
            keep_within_called_origin(called, str(hop), params.headers)
    except Exception as error:
        report_once("aiohttp redirect", error)


def _start(method: str, url: str, headers: Any) -> ClientCall | None:
    try:
        return start_call(method, url, headers)
    except Exception as error:
        report_once("aiohttp span start", error)
        return None


def _end(ctx: SimpleNamespace, status: int | None, error: BaseException | None) -> None:
    call = getattr(ctx, "tracekit_call", None)
    if call is None:
        return
    ctx.tracekit_call = None
    try:
        end_call(call, status, error)
    except Exception as exc:
        report_once("aiohttp span end", exc)
