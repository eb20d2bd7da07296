"""Never break the host application, and never trace tracekit: the one home for guarding.

- ``report_once``: log tracekit's own failure once per place, then stay quiet (its traceback
  with each exception's message escaped and bounded: one can quote a header, a broker's reply
  or a stored string, whose line breaks and escape sequences would forge log lines or reach
  the terminal that shows the log);
- ``guarded`` (a hook that must not raise) and ``safe`` (one step of tracekit's own work inside
  the user's call): both report once and give a default, so the user's work goes on;
- ``mark_failed``, ``mark_failed_status``: the one way to mark a span failed, by an exception or
  by an HTTP status; ``error_type``: what ``error.type`` (and the metrics' ``error_type``) says
  of an exception; ``without_url_secrets``: text without the URL queries and credentials it
  quotes;
- ``instrumentation_suppressed``, ``suppressing_instrumentation``: OpenTelemetry's flag that an
  exporter's own work is not to be traced; ``http_call_suppressed``, ``suppress_nested_http_in``:
  for HTTP clients, that another layer already traces this very call.

An exception's status is ``Type: message`` (what OpenTelemetry's SDK writes for an exception
leaving a span's ``with`` block): the exception's own words, on one printable line (control
characters and line breaks become spaces, so a message cannot forge lines or terminal escapes
where it is shown) and at most ``MAX_MESSAGE`` characters. The exception event carries the same
bounded message next to the type and stack trace.
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from tracekit import semconv
from tracekit._utf8 import escaped

MAX_MESSAGE = 512
# librdkafka's error names are short words of capitals and underscores (``_MSG_TIMED_OUT``):
# any other is not its.
_ERROR_CODE_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")

_log = logging.getLogger("tracekit")
_reported: set[str] = set()
_CHAIN_LIMIT = 8  # exceptions of one chain shown
_SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # the SDK's own "do not trace me" flag
_SUPPRESS_HTTP = otel_context._SUPPRESS_HTTP_INSTRUMENTATION_KEY

_T = TypeVar("_T")


def report_once(where: str, error: BaseException) -> None:
    """Log tracekit's own failure at ``where`` the first time it happens, then stay quiet.

    The traceback is part of the message, escaped, and the record has no ``exc_info``: a
    formatter that renders an exception itself (structlog's, a JSON one) would print its
    messages raw, and they can quote what tracekit read from outside."""
    if where in _reported:
        return
    _reported.add(where)
    _log.warning(
        "tracekit: %s failed (%s); continuing without it\n%s",
        where,
        type(error).__name__,
        _traceback_text(error),
    )


def guarded(default: _T) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Decorate a tracekit hook so that any exception it raises returns ``default`` instead."""

    def decorate(function: Callable[..., _T]) -> Callable[..., _T]:
        where = f"{function.__module__}.{function.__qualname__}"

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> _T:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                report_once(where, error)
                return default

        return wrapper

    return decorate


def _traceback_text(error: BaseException) -> str:
    try:
        return escaped_traceback(error)
    except Exception:  # never out of the caller; never the raw text
        return type(error).__qualname__


def escaped_traceback(error: BaseException) -> str:
    """Python's traceback of ``error``: the exceptions it was raised from or while handling
    (at most ``_CHAIN_LIMIT`` deep), those of a group, their first notes; each message and
    note on one escaped line of at most ``MAX_MESSAGE`` characters."""
    report = traceback.TracebackException(type(error), error, error.__traceback__)
    pending, seen = [(report, 1)], set()
    while pending:
        one, depth = pending.pop()
        if id(one) in seen:
            continue
        seen.add(id(one))
        _escape_texts(one)
        if depth >= _CHAIN_LIMIT:
            one.__cause__ = one.__context__ = None
        inner = [one.__cause__, one.__context__, *(one.exceptions or ())]
        pending.extend((nested, depth + 1) for nested in inner if nested is not None)
    return "".join(report.format()).rstrip("\n")


def _escape_texts(report: traceback.TracebackException) -> None:
    """One exception's message (a SyntaxError's, its line and file name) and notes, escaped.
    The message is the private ``_str`` of CPython's ``TracebackException``: a
    Python without it raises here, and the record shows the exception's type alone."""
    if not isinstance(getattr(report, "_str", None), str):
        raise TypeError("no message to escape")
    for name in ("_str", "msg", "text", "filename"):
        text = getattr(report, name, None)
        if isinstance(text, str):
            setattr(report, name, _one_line(text.rstrip("\n") if name == "text" else text))
    notes = report.__notes__
    if notes is not None:
        notes = notes if isinstance(notes, list | tuple) else [notes]
        report.__notes__ = [_one_line(_text(note)) for note in notes[:_CHAIN_LIMIT]]


def _text(value: object) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__
        return "<str() failed>"


def _one_line(text: str) -> str:
    return escaped(text[:MAX_MESSAGE] + "…" if len(text) > MAX_MESSAGE else text)


def safe(where: str, action: Callable[[], _T]) -> _T | None:
    """Run one step of tracekit's own work; a failure is reported once and gives None."""
    try:
        return action()
    except Exception as error:
        report_once(where, error)
        return None


def mark_failed(
    span: trace.Span, error: BaseException, redact: Callable[[str], str] | None = None
) -> None:
    """Record ``error`` on ``span``: exception event, ``error.type`` and ERROR status.

    ``redact`` rewrites the message and the stack trace first (an HTTP client's errors quote
    the URL, query tokens and all).
    """
    kind = type(error).__qualname__
    message = error_message(error)
    attributes = {"exception.message": message}
    if redact is not None:
        message = attributes["exception.message"] = redact(message)
        attributes["exception.stacktrace"] = redact(_stacktrace(error))
    try:
        span.record_exception(error, attributes=attributes)
    except Exception:  # the SDK's own str(error) raised: a broken __str__
        attributes.setdefault("exception.stacktrace", _stacktrace(error))
        span.add_event("exception", {"exception.type": kind, **attributes})
    span.set_attribute(semconv.ERROR_TYPE, error_type(error))
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}" if message else kind))


def error_type(error: BaseException) -> str:
    """``error.type`` of ``error``: its class's name, except for confluent-kafka's one class
    for every librdkafka error, where it is the error's name (``_MSG_TIMED_OUT``,
    ``UNKNOWN_TOPIC_OR_PART``), as OpenTelemetry's Kafka conventions give it: a failed
    delivery's class alone tells no cause from another. (Matched by names: tracekit does not
    import the library to recognise its errors.)"""
    kind = type(error)
    if kind.__name__ == "KafkaException" and error.args:
        code = error.args[0]
        if type(code).__name__ == "KafkaError":
            name = _code_name(code)
            if name is not None:
                return name
    return kind.__qualname__


def _code_name(code: Any) -> str | None:
    try:
        name = code.name()
    except Exception:  # not librdkafka's KafkaError after all
        return None
    return name if isinstance(name, str) and _ERROR_CODE_NAME.fullmatch(name) else None


def mark_failed_status(span: trace.Span, status_code: int) -> None:
    """ERROR status and ``error.type`` for a failed HTTP status, unless the span was already
    marked failed by the exception behind it."""
    if getattr(getattr(span, "status", None), "status_code", None) is StatusCode.ERROR:
        return
    span.set_attribute(semconv.ERROR_TYPE, str(status_code))
    span.set_status(Status(StatusCode.ERROR))


def _stacktrace(error: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:  # a broken __str__ somewhere in the chain
        return ""


def error_message(error: BaseException) -> str:
    """``str(error)`` on one printable line, bounded; empty when the exception has no message."""
    try:
        text = str(error)
    except Exception:  # a broken __str__ must not break the host's error path
        return ""
    text = text[: MAX_MESSAGE + 1]
    if not text.isprintable():
        text = "".join(char if char.isprintable() else " " for char in text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "…"


# A URL's query (``?token=…``) and userinfo (``//user:pass@``) as client errors quote them. A
# query runs to the end of the quoted URL: commas, parentheses and brackets are legal in it and
# sent unencoded, so a token after one must not survive the cut.
_QUERY = re.compile(r"\?[^\s'\"<>]+")
# Userinfo ends at the authority's last "@": a password may hold one unencoded, and clients
# split it there.
_USERINFO = re.compile(r"//[^/\s'\"]+@")


def without_url_secrets(text: str) -> str:
    """``text`` (an error message, a stack trace, an object's repr) with URL queries and
    credentials cut out, as they are cut from ``url.full``."""
    return _USERINFO.sub("//", _QUERY.sub("?…", text))


def instrumentation_suppressed(*, context: otel_context.Context | None = None) -> bool:
    """True inside an exporter's own work.

    ``context`` saves a lookup to a caller that already holds the current context.
    """
    ctx = otel_context.get_current() if context is None else context
    return bool(ctx.get(_SUPPRESS))


def http_call_suppressed(headers: Any) -> bool:
    """True inside an exporter's own work, and for an HTTP call another layer already traces.

    That is the call below contrib's instrumentation of it (which sets OpenTelemetry's flag),
    or below tracekit's own span for it: a call whose ``headers`` carry the header that span
    sent to tell it apart, its trace header or else its correlation header (urllib3 under
    requests, a redirect or a retry of it). A call the application makes while another is
    under way (from a response hook, an event hook, a client middleware) carries no such
    header: it is a call of its own, with its own span.
    """
    ctx = otel_context.get_current()
    if ctx.get(_SUPPRESS):
        return True
    outer = ctx.get(_SUPPRESS_HTTP)
    if not outer:
        return False
    if type(outer) is not SentHeader:  # another instrumentation's flag: it traces this call
        return True
    return outer.names_this_call(headers.get(outer.name))


@dataclass(slots=True)
class SentHeader:
    """The header (``name``, ``value``) an HTTP call sent that tells its own lower layers from
    another call: its trace header, else its correlation header. The value changes when the
    call sends its request again (a redirect, a retry) under a span of its own; what it sent
    before stays its own: a client may build the next request from an earlier one (requests'
    redirect from the request it was given, after urllib3 retried it)."""

    name: str
    value: str
    earlier: tuple[str, ...] = ()

    def names_this_call(self, value: object) -> bool:
        """Whether ``value`` of this header is one the call sent."""
        return value == self.value or (bool(self.earlier) and value in self.earlier)


@contextmanager
def suppressing_instrumentation() -> Iterator[None]:
    """Nothing inside is traced or exported as telemetry (an exporter's own writes and calls)."""
    token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))
    try:
        yield
    finally:
        otel_context.detach(token)


def suppress_nested_http_in(context: otel_context.Context, sent: SentHeader | None) -> object:
    """Attach ``context`` with nested HTTP instrumentation of the same call suppressed; returns
    the token. ``sent``: the trace header (name, value) the call carries (kept current by the
    call as it resends), which tells that
    call's lower layers from another call (``http_call_suppressed``); None: every HTTP call
    below is taken for this one.

    OpenTelemetry's flag holds ``sent``: contrib instrumentation below reads any true value as
    "suppressed", as before.
    """
    return otel_context.attach(otel_context.set_value(_SUPPRESS_HTTP, sent or True, context))
