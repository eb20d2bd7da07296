"""One way to mark a span as failed by an exception, for server requests and queue consumers.

The status description is ``Type: message`` (what OpenTelemetry's SDK writes for an exception
leaving a span's ``with`` block): the exception's own words, on one printable line (control
characters and line breaks become spaces, so a message cannot forge lines or terminal escapes
where it is shown) and at most ``MAX_MESSAGE`` characters. The exception event carries the same
bounded message next to the type and stack trace.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from tracekit import semconv

MAX_MESSAGE = 512


def mark_failed(span: trace.Span, error: BaseException) -> None:
    """Record ``error`` on ``span``: exception event, ``error.type`` and ERROR status."""
    kind = type(error).__qualname__
    message = error_message(error)
    span.record_exception(error, attributes={"exception.message": message})
    span.set_attribute(semconv.ERROR_TYPE, kind)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}" if message else kind))


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
