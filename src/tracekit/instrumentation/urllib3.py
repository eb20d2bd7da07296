"""urllib3: a CLIENT span and injected context for every ``PoolManager.urlopen`` and every
``HTTPConnectionPool.urlopen``.

A ``PoolManager`` follows redirects itself, above the pools: the pools' ``urlopen`` below it
carries the headers it sent, so tracekit's suppression keeps them quiet, as it keeps urllib3
under requests (or any other client span). Each request sent again (a redirect followed, a retry
re-entering a pool's ``urlopen``; its ``Retry`` tells what happened to the one before) is a span
of its own with ``http.request.resend_count``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from tracekit._http.client import (
    DEFAULT_PORTS,
    call_resending,
    current_call,
    end_answered,
    keep_within_called_origin,
    note_answer,
    resend,
    run_traced,
)
from tracekit.instrumentation._base import Instrumentor

__all__ = ["Urllib3Instrumentor"]

# A pool's urlopen(method, url, body=None, headers=None, retries=None, ...); a PoolManager's
# takes them only as keywords: urlopen(method, url, redirect=True, **kw).
_HEADERS_POSITION = 3
_RETRIES_POSITION = 4
# True while urllib3 sends a request (inside a pool's or a PoolManager's urlopen): a Retry's
# sleep there is urllib3 pausing before a retry of the call under way; one elsewhere (a
# response hook backing off with a Retry of its own) has nothing to do with the call's request.
_sending: ContextVar[bool] = ContextVar("tracekit_urllib3_sending", default=False)


class Urllib3Instrumentor(Instrumentor):
    """Traces urllib3's connection pools, which every urllib3 request goes through."""

    target = "urllib3.poolmanager"  # imports the pools' module: both are there when it is

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.PoolManager, "urlopen", _traced_urlopen)
        self.wrap(module.HTTPConnectionPool, "urlopen", _traced_urlopen)
        self.wrap(sys.modules["urllib3.util.retry"].Retry, "sleep", _pausing)
        self.wrap(sys.modules["urllib3.util.retry"].Retry, "increment", _giving_up)


def _traced_urlopen(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not isinstance(_headers_given(args, kwargs), Mapping | None):
        return wrapped(*args, **kwargs)  # urllib3 refuses them in its own words
    method = args[0] if args else kwargs.get("method", "GET")
    url = args[1] if len(args) > 1 else kwargs.get("url", "/")
    args, kwargs, headers = _with_own_headers(instance, args, kwargs)
    retries = args[_RETRIES_POSITION] if len(args) > _RETRIES_POSITION else kwargs.get("retries")
    if getattr(retries, "history", None) and _redirect_hop(instance, retries, str(url), headers):
        return _send(wrapped, args, kwargs)
    _resend_if_sent_again(instance, retries, str(method), str(url), headers)
    return run_traced(
        str(method),
        _as_sent(_full_url(instance, str(url))),
        headers,
        lambda: _answered(_send(wrapped, args, kwargs)),
        lambda response: response.status,
    )


def _send(wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    token = _sending.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _sending.reset(token)


def _redirect_hop(pool: Any, retries: Any, url: str, headers: Any) -> bool:
    """For a redirect urllib3 follows (its ``Retry`` holds the hops so far, the first sent to
    the URL called), in correlation-only mode: what tracekit wrote stays within the origin
    called. False in full mode, where the call's own record does it."""
    if not any(hop.redirect_location for hop in retries.history):
        return False  # retried after an error, never redirected: a call as any other
    called = _full_url(pool, str(retries.history[0].url))
    return keep_within_called_origin(called, _full_url(pool, url), headers)


def _answered(response: Any) -> Any:
    """``response``, noted on the span of the request it answers (its status, for a request of
    the same call sent after it; its HTTP version): this call's, or a redirect's a
    ``PoolManager`` follows above this pool. (Those urllib3 retries after a status drain and
    drop their answers inside: their spans go without a version.)"""
    call = current_call()
    if call is not None:
        note_answer(call, getattr(response, "status", 0), getattr(response, "version", None))
    return response


def _resend_if_sent_again(pool: Any, retries: Any, method: str, url: str, headers: Any) -> None:
    """A request of a call under way sent again gets a span of its own: a retry, or a redirect
    it follows (its ``Retry`` holds what happened to the one before; a ``PoolManager`` passes
    the same ``Retry`` to the pool below it: one resend, one span), or a request sent after an
    answer (requests' digest auth sends its second request from a response hook)."""
    call = current_call()
    if call is None:
        return  # a call of its own, not yet started: the cost of nearly every call
    history = getattr(retries, "history", None)
    if history and call.seen is not retries:
        call.seen = retries
        answer, error = _last_outcome(history)
    elif call.answer:
        error, answer = None, call.answer
    else:
        return
    if call_resending(headers) is call:
        resend(call, method, _as_sent(_full_url(pool, url)), headers, answer, error)


def _pausing(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Retry.sleep``, between a request answered or failed (the last of the ``Retry``'s
    history, as urllib3 just recorded it) and its retry: that request's span ends first, so its
    duration is the server's answer, not the backoff too."""
    call = current_call() if _sending.get() else None
    history = getattr(instance, "history", None) if call is not None else None
    if call is not None and history:
        end_answered(call.span, *_last_outcome(history))
    return wrapped(*args, **kwargs)


def _giving_up(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Retry.increment(method, url, response, ...)``, which raises ``MaxRetryError`` when a
    request answered with a status to retry was the last the ``Retry`` allows: urllib3 drains
    and drops that answer, and the call ends with the error; its span keeps the status too."""
    try:
        return wrapped(*args, **kwargs)
    except Exception:
        response = args[2] if len(args) > 2 else kwargs.get("response")
        if response is not None and _sending.get():
            _answered(response)
        raise


def _last_outcome(history: Any) -> tuple[int | None, BaseException | None]:
    """The status and the error of the request a ``Retry``'s ``history`` recorded last."""
    last = history[-1]
    return last.status, last.error if isinstance(last.error, BaseException) else None


def _with_own_headers(
    pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """A copy of the call's headers (the caller may reuse its dict) put back into the call.

    Case-insensitive, as requests' and httpx's are: a caller's ``Traceparent`` is replaced by
    tracekit's ``traceparent``, not sent beside it (two of them read as no parent at all).
    """
    from urllib3._collections import HTTPHeaderDict

    given = _headers_given(args, kwargs)
    headers = HTTPHeaderDict(given if given is not None else pool.headers)
    if len(args) > _HEADERS_POSITION:
        args = (*args[:_HEADERS_POSITION], headers, *args[_HEADERS_POSITION + 1 :])
    else:
        kwargs = {**kwargs, "headers": headers}
    return args, kwargs, headers


def _headers_given(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The headers the caller passed to ``urlopen``; None when it passed none."""
    return args[_HEADERS_POSITION] if len(args) > _HEADERS_POSITION else kwargs.get("headers")


def _as_sent(url: str) -> str:
    """``url`` as urllib3 sends it, as requests, httpx and aiohttp name theirs: a non-ASCII host
    IDNA-encoded (``xn--…``, the name it resolves) and a non-ASCII path percent-encoded; else
    two clients calling one host would name it two ways (in ``server.address`` and the metric's
    labels). An ASCII URL is left as it is: parsing every URL again would cost more than the
    span; one urllib3 cannot parse is too, for urllib3 to refuse in its own words."""
    if url.isascii():
        return url
    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    try:
        return str(parse_url(url).url)
    except LocationParseError:
        return url


def _full_url(pool: Any, url: str) -> str:
    """The call's URL: a pool's path under its origin; a ``PoolManager``'s as given."""
    if "://" in url or not hasattr(pool, "scheme"):
        return url
    # A default port is left out, as the URL a PoolManager is given shows it: botocore's pools
    # (``connection_from_url``) hold 443 where one built by hand holds None.
    default = DEFAULT_PORTS.get(pool.scheme)
    port = f":{pool.port}" if pool.port and pool.port != default else ""
    host = f"[{pool.host}]" if ":" in pool.host else pool.host  # urllib3 keeps IPv6 unbracketed
    return f"{pool.scheme}://{host}{port}{url}"
