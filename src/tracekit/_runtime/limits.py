"""Span and log record limits from OpenTelemetry's ``OTEL_*_LIMIT`` variables.

Read as the SDK reads them (a whole number of 0 or more; empty for no limit), except that a
value the SDK refuses (``abc``, ``-1``, ``1.5``) is left out, with one warning naming it, and
the limit is what it would be without it: the SDK raised ``ValueError`` out of
``tracekit.init()``, so a mistyped tuning knob kept the host application from starting
(``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``), or lost every exported log record with a traceback
(``OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import SpanLimits

from tracekit._runtime.otlp_settings import warn_once
from tracekit.records import MAX_SPAN_LINKS

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LogRecordLimits

_LINKS = "OTEL_SPAN_LINK_COUNT_LIMIT"


def span_limits() -> SpanLimits:
    """The SDK's limits, with room for a batch's links unless OTEL_SPAN_LINK_COUNT_LIMIT says."""
    if os.environ.get(_LINKS, "").strip() and _readable(_LINKS, MAX_SPAN_LINKS):
        return _SpanLimits()
    return _SpanLimits(max_links=MAX_SPAN_LINKS)


def log_record_limits() -> LogRecordLimits:
    """The SDK's log record limits (its logs module loads only where logs are exported)."""
    from opentelemetry.sdk._logs import LogRecordLimits

    class _LogRecordLimits(_RefusedLeftOut, LogRecordLimits):
        pass

    return _LogRecordLimits()


def _readable(variable: str, default: int | None) -> bool:
    """Whether the SDK reads ``variable``'s value; if not, says that ``default`` is used."""
    text = os.environ.get(variable, "")
    if not text.strip() or _whole_number(text.strip()):
        return True
    used = "the default" if default is None else str(default)
    warn_once(variable, text, "is not a whole number of 0 or more", used)
    return False


def _whole_number(text: str) -> bool:
    try:
        return int(text) >= 0
    except ValueError:
        return False


def _refused(value: int | None, variable: str, default: int | None) -> bool:
    """Whether the SDK would read ``variable`` (no ``value`` given) and refuse what it holds."""
    return value is None and variable in os.environ and not _readable(variable, default)


class _RefusedLeftOut:
    """Before the SDK's limits class: its reading of each variable, a refused value left out."""

    @classmethod
    def _from_env_if_absent(
        cls, value: int | None, env_var: str, default: int | None = None
    ) -> int | None:
        if _refused(value, env_var, default):
            return default
        return super()._from_env_if_absent(value, env_var, default)  # type: ignore[misc,no-any-return]


class _SpanLimits(_RefusedLeftOut, SpanLimits):
    pass
