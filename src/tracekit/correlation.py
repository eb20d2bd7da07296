"""The correlation ID: one business-level identifier that follows a request everywhere.

It lives in a context variable (so asyncio tasks and threads started with ``contextvars`` see the
right value), arrives in a request header or message property, and is validated before it is
trusted: a bounded length and a character set that covers what gateways really send (UUIDs with or
without dashes, nginx's 32-hex ``$request_id``, Kong's ``uuid#counter``, ALB/X-Ray's ``Root=1-…``,
ULIDs) and nothing that could inject into a log line or a header.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterable
from contextvars import Context, ContextVar, Token, copy_context

from tracekit._runtime.ratelimit import RateLimitedWarning

__all__ = [
    "CALLERS_CONTEXT_KEY",
    "CONTEXT_KEY",
    "MAX_LENGTH",
    "correlation_id",
    "correlation_id_for",
    "first_valid",
    "is_valid",
    "new_correlation_id",
    "reset_correlation_id",
    "set_correlation_id",
    "span_correlation_id",
]

MAX_LENGTH = 128

# Letters, digits and the separators gateways use. No whitespace, quotes, angle brackets or
# control characters, so a valid ID can be written into logs and headers as it is.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:;=#@+/\-]*")

# Never set in this context: "" (never a valid ID; also set to put a context back to never set).
# Set to None: cleared.
_NEVER_SET = ""
_current: ContextVar[str | None] = ContextVar("tracekit_correlation_id")

# The request's (or message's) ID also rides in the OpenTelemetry context tracekit attaches for
# its span, so what carries only that context into another thread (OpenTelemetry's threading
# instrumentation, an executor that attaches ``context.get_current()``) carries the ID too. A
# plain key, not ``create_key``'s: this module stays free of OpenTelemetry for the CLI's start-up.
CONTEXT_KEY = "tracekit.correlation_id"
# The ID a caller's headers brought, in the Context OpenTelemetry's global ``extract`` returns
# (what contrib instrumentations start their spans under): used only where no request or message
# of tracekit's has decided one, and never stamped on a SERVER span (see ``span_correlation_id``).
CALLERS_CONTEXT_KEY = "tracekit.callers_correlation_id"


def correlation_id() -> str | None:
    """Return the correlation ID of the request being handled, or None outside a request."""
    return correlation_id_for(None)


def correlation_id_for(context: object | None) -> str | None:
    """The ID to send with ``context`` (the OpenTelemetry Context an ``inject`` was given):
    the one current here (a request's, ``set_correlation_id``'s) first, else the one
    ``context`` carries (a request's context saved for work sent later, outside it)."""
    value = _current.get(_NEVER_SET)
    if value != _NEVER_SET:
        return value
    return _carried(CONTEXT_KEY, context) or _carried(CALLERS_CONTEXT_KEY, context)


def span_correlation_id(parent_context: object | None, is_server_span: bool) -> str | None:
    """The ID to stamp on a span starting now under ``parent_context``.

    The request's or message's ID first; else the one the caller's headers brought into the
    span's parent context, except on a SERVER span: tracekit's middleware inside it decides that
    span's ID (and gives none to a span that continued the caller's trace in public-endpoint
    mode, whose caller is not trusted).
    """
    value = _current.get(_NEVER_SET)
    if value != _NEVER_SET:
        return value
    decided = _carried(CONTEXT_KEY)
    if decided is not None or is_server_span:
        return decided
    return _carried(CALLERS_CONTEXT_KEY, parent_context)


def _carried(key: str, context: object | None = None) -> str | None:
    """The ID under ``key`` in ``context`` (the attached OpenTelemetry context when None)."""
    otel_context = sys.modules.get("opentelemetry.context")  # not loaded: nothing attached
    carried = otel_context.get_value(key, context) if otel_context is not None else None
    return carried if isinstance(carried, str) else None


def set_correlation_id(value: str | None) -> Token[str | None]:
    """Make ``value`` the current correlation ID; pass the token to ``reset_correlation_id``.

    ``value`` is checked as an incoming header is: one that is not a valid ID (``is_valid``)
    would reach log lines and outgoing headers as it is, so a new ID is used instead, with a
    warning at most once a minute. None clears the ID.
    """
    if value is not None and not is_valid(value):
        _refused.warn("correlation ID", _why_invalid(value))
        value = new_correlation_id()
    return _current.set(value)


_refused = RateLimitedWarning(
    60.0,
    "tracekit: set_correlation_id() refused a %s (%s) and set a new one",
)


def _why_invalid(value: object) -> str:
    if not isinstance(value, str):
        return f"not text but {type(value).__name__}"
    if not 0 < len(value) <= MAX_LENGTH:
        return f"{len(value)} characters, not 1 to {MAX_LENGTH}"
    return "characters other than letters, digits and ._:;=#@+/-"


# ``set_correlation_id`` for tracekit's own middleware and consumers, whose value is valid
# already (chosen with ``is_valid``, made by ``new_correlation_id``) or None: not checked a second
# time per request. Private: an application's value is always checked.
_set_checked = _current.set
# ``reset_correlation_id`` minus a call, for the same per-request paths.
_reset = _current.reset


# A server logs what a request raised ("Exception in ASGI application", gunicorn's "Error
# handling request") once the middleware has put the request's context back, in the same thread
# or task: the request's context waits there beside its exception, so the record still names its
# request (``tracekit.logs``). Not kept on the exception itself: one exception object raised in
# several requests (a shared lookup's failure) would name the first of them in every later one,
# and an application keeping its exceptions (a retry list) would keep every request's context.
_escaped: ContextVar[tuple[BaseException, Context] | None] = ContextVar(
    "tracekit_escaped", default=None
)


class _LastEscaped(threading.local):
    """The last exception that escaped a request in this thread, and that request's context.

    Starlette runs what is below a function middleware (``@app.middleware("http")``) in a task
    of its own and raises what it raised again in the request's task, where the server logs it:
    the context variable set in the inner task is not seen there. One per thread, so another
    thread (retrying a kept exception) never takes the request's IDs, and the memory held stays
    one request's. No context (None) where the one exception object escaped a second request
    here before a record asked for the first's: which request it is raised again for cannot
    be told."""

    escaped: tuple[BaseException, Context | None] | None = None
    asked = False  # whether a record has asked for ``escaped`` (``_context_of``)


_last_escaped = _LastEscaped()


def _remember_context(error: BaseException) -> None:
    """Keep the current context for the server's record of ``error``, in this thread or task."""
    _escaped.set(None)  # the kept context must not hold the previous one (a chain of them)
    last, _last_escaped.escaped = _last_escaped.escaped, None
    escaped = (error, copy_context())
    _escaped.set(escaped)
    # Two requests awaiting one failed lookup raise its one exception together, before the
    # server's record of the first: that record would name the second request. Naming none is
    # better than naming the wrong one. (Raised again one request after another, each record
    # has asked for its own before the next.)
    together = last is not None and last[0] is error and not _last_escaped.asked
    _last_escaped.escaped, _last_escaped.asked = (error, None) if together else escaped, False


def _request_context() -> Context:
    """A copy of the current context for a request's own records (its access-log line), without
    the exception an earlier request in this thread left for its server's record: that
    exception's traceback holds the earlier request's environ, and so its copy, and so on
    through every request the thread served that raised."""
    context = copy_context()
    if _escaped.get() is not None:  # (most requests: none to leave out, nothing to run)
        context.run(_escaped.set, None)
    return context


def _remember_context_here(error: BaseException, context: Context) -> None:
    """Keep ``context``, the request's, for the server's record of ``error`` in this task: the
    request ran in a task of its own (Django's ASGI handler runs one per request), whose
    context ended with it, and the server logs in the task that awaited it."""
    _escaped.set((error, context))


def _context_of(error: object) -> Context | None:
    """The context ``_remember_context`` kept for ``error`` in this task (where concurrent
    requests raising one exception object each find their own), else in this thread."""
    escaped = _escaped.get()
    if escaped is not None and escaped[0] is error:
        return escaped[1]
    kept = _last_escaped.escaped
    if kept is not None and kept[0] is error:
        _last_escaped.asked = True
        return kept[1]
    return None


# The server's lines about a response come as it starts (uvicorn's access line), and a
# middleware outside tracekit's may hold that start back until the body (Starlette's
# GZipMiddleware): it then goes out within the send that ends the response, which tracekit makes
# in the context the request arrived in (the server starts the connection's next request from
# inside it). For that send alone, the request's context waits here for those lines; emptied as
# the send returns, so the next request, whose task copies this variable, finds nothing in it.
_answering: ContextVar[list[Context] | None] = ContextVar("tracekit_answering", default=None)


def _answered_context() -> Context | None:
    """The context of the request whose response is being sent here, if one is."""
    answering = _answering.get()
    return answering[0] if answering else None


def reset_correlation_id(token: Token[str | None]) -> None:
    """Restore the correlation ID that was current before ``set_correlation_id``."""
    _current.reset(token)


def new_correlation_id() -> str:
    """Generate a fresh correlation ID (32 lower-case hex characters of a random UUID4)."""
    # uuid.uuid4().hex without building a UUID object: 16 random bytes, version and variant set.
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def is_valid(value: object) -> bool:
    """True when ``value`` is a string that is safe and sensible as a correlation ID."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_LENGTH
        and _VALID.fullmatch(value) is not None
    )


def first_valid(candidates: Iterable[object]) -> str | None:
    """The first valid correlation ID among ``candidates`` (str or bytes), else None."""
    for candidate in candidates:
        if isinstance(candidate, bytes | bytearray):
            if len(candidate) > MAX_LENGTH:
                continue
            candidate = candidate.decode("latin-1")
        if is_valid(candidate):
            return candidate  # type: ignore[return-value]
    return None
