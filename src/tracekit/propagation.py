"""W3C Trace Context (Level 1, plus Level 2's random flag), baggage and the correlation header.

Incoming baggage is read by ``tracekit._baggage`` (bounded, member by member, silent).

tracekit parses ``traceparent`` and ``tracestate`` itself rather than through OpenTelemetry's
propagator, which accepts extra fields after a version-00 traceparent, ignores duplicated
traceparent headers and writes rejected header values raw into its warnings. The rules here follow
the spec's grammar: any invalid traceparent restarts the trace; an invalid tracestate (bad key or
value, duplicate key, more than 32 members) is dropped whole; empty members and optional whitespace
are allowed.

``TracekitPropagator`` is installed as OpenTelemetry's global propagator by ``tracekit.init()``, so
any instrumentation that injects or extracts context (ours or OpenTelemetry's contrib packages)
carries trace context, baggage and the correlation ID together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, create_key, get_value
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from tracekit import _baggage, correlation

__all__ = [
    "BAGGAGE",
    "CORRELATION_BAGGAGE_KEY",
    "CORRELATION_HEADER",
    "CURRENT_SPAN_KEY",
    "MAX_TRACESTATE_MEMBERS",
    "RANDOM",
    "SAMPLED",
    "TRACEPARENT",
    "TRACESTATE",
    "HeaderGetter",
    "TraceParent",
    "TracekitPropagator",
    "extract_baggage",
    "extract_header_lists",
    "extract_trace_context",
    "format_traceparent",
    "format_tracestate",
    "inject_trace_context",
    "parse_traceparent",
    "parse_tracestate",
    "update_tracestate",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"
CORRELATION_HEADER = "X-Correlation-ID"
CORRELATION_BAGGAGE_KEY = "correlation.id"

SAMPLED = 0x01
RANDOM = 0x02
MAX_TRACESTATE_MEMBERS = 32

_TRACEPARENT_PREFIX = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_SIMPLE_KEY = r"[a-z][a-z0-9_\-*/]{0,255}"
_TENANT_KEY = r"[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"
_MEMBER = re.compile(
    rf"({_SIMPLE_KEY}|{_TENANT_KEY})=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{{0,255}}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"
)
_OWS = " \t"

# Flags of the traceparent we continued, so that inject can re-emit bits OpenTelemetry's
# SpanContext does not keep (the Level 2 random flag).
_REMOTE_FLAGS = create_key("tracekit-remote-flags")
# Immutable, so every request can share them instead of building its own.
_TRACE_FLAGS = (TraceFlags(0), TraceFlags(SAMPLED))
_NO_TRACE_STATE = TraceState()
# The key under which OpenTelemetry keeps the current span, learnt through its public API, so
# that a Context holding a span and other values can be built in one step.
CURRENT_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
_HEX_BYTE = {f"{i:02x}": i for i in range(256)}  # traceparent flags: a lookup, not int(..., 16)


class TraceParent(NamedTuple):
    """A parsed, valid ``traceparent`` header (a NamedTuple: immutable and cheap to build)."""

    trace_id: int
    span_id: int
    flags: int


def parse_traceparent(value: str) -> TraceParent | None:
    """Parse one ``traceparent`` value; None when it is invalid and the trace must restart."""
    fields = _traceparent_fields(value)
    return None if fields is None else TraceParent(*fields)


def _traceparent_fields(value: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` of a valid traceparent: the server's per-request path."""
    value = value.strip(_OWS)
    # The pattern checks every field's length and lower-case hex; slicing is then safe.
    if _TRACEPARENT_PREFIX.match(value) is None:
        return None
    version = value[:2]
    if version == "ff" or (len(value) > 55 and (version == "00" or value[55] != "-")):
        return None
    ids = int(value[3:35] + value[36:52], 16)  # one conversion for both ids
    trace_id, span_id = ids >> 64, ids & 0xFFFFFFFFFFFFFFFF
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, _HEX_BYTE[value[53:55]]


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """Format a version-00 ``traceparent`` value (only the bits version 00 defines)."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & (SAMPLED | RANDOM):02x}"


def parse_tracestate(values: Iterable[str]) -> list[tuple[str, str]] | None:
    """Parse (possibly several) ``tracestate`` header values into ordered members.

    Returns None when the combined list is invalid and must be dropped whole.
    """
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for value in values:
        for raw in value.split(","):
            raw = raw.strip(_OWS)
            if not raw:
                continue
            match = _MEMBER.fullmatch(raw)
            if match is None or match.group(1) in seen:
                return None
            seen.add(match.group(1))
            members.append((match.group(1), match.group(2)))
    return members if len(members) <= MAX_TRACESTATE_MEMBERS else None


def format_tracestate(members: Iterable[tuple[str, str]]) -> str:
    """Serialize tracestate members, at most 32, in order."""
    return ",".join(f"{key}={value}" for key, value in list(members)[:MAX_TRACESTATE_MEMBERS])


def update_tracestate(
    members: Sequence[tuple[str, str]], key: str, value: str
) -> list[tuple[str, str]]:
    """Set ``key`` to ``value`` and move it to the front, as the spec asks of a mutating vendor."""
    if _MEMBER.fullmatch(f"{key}={value}") is None:
        raise ValueError("invalid tracestate member")
    rest = [(k, v) for k, v in members if k != key]
    return [(key, value), *rest][:MAX_TRACESTATE_MEMBERS]


def _header_values(getter: Getter[Any], carrier: Any, name: str) -> list[str]:
    values = getter.get(carrier, name)
    if values is None:
        return []
    if isinstance(values, str | bytes):
        values = [values]
    return [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in values]


def extract_baggage(
    carrier: Any, context: Context | None = None, getter: Getter[Any] = default_getter
) -> Context:
    """Put the valid members of ``carrier``'s baggage headers into ``context`` (``_baggage``)."""
    context = context if context is not None else Context()
    values = _header_values(getter, carrier, BAGGAGE)
    return _baggage.extract(values, context) if values else context


class TracekitPropagator(TextMapPropagator):
    """Extracts and injects W3C trace context, W3C baggage and the correlation header together."""

    def __init__(self, correlation_header: str = CORRELATION_HEADER) -> None:
        self._baggage = W3CBaggagePropagator()
        self._correlation_header = correlation_header.lower()

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Return ``context`` updated with the remote parent and baggage found in ``carrier``."""
        context = extract_trace_context(carrier, context, getter)
        return extract_baggage(carrier, context, getter)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write traceparent, tracestate, baggage and the correlation header into ``carrier``."""
        inject_trace_context(carrier, context, setter)
        cid = correlation.correlation_id()
        if cid is not None:
            if baggage.get_baggage(CORRELATION_BAGGAGE_KEY, context) is None:
                context = baggage.set_baggage(CORRELATION_BAGGAGE_KEY, cid, context)
            setter.set(carrier, self._correlation_header, cid)
        self._baggage.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        """Header names this propagator writes."""
        return {TRACEPARENT, TRACESTATE, BAGGAGE, self._correlation_header}


def extract_trace_context(
    carrier: Any, context: Context | None = None, getter: Getter[Any] = default_getter
) -> Context:
    """Put the remote span context of ``carrier``'s traceparent/tracestate into ``context``."""
    context = context if context is not None else Context()
    parents = _header_values(getter, carrier, TRACEPARENT)
    if len(parents) != 1:  # absent, or duplicated: the spec says restart
        return context
    return _with_remote_parent(parents[0], _header_values(getter, carrier, TRACESTATE), context)


def extract_header_lists(
    headers: Mapping[str, Sequence[str]], *, with_baggage: bool = True
) -> Context:
    """``TracekitPropagator().extract(headers)`` for lower-case names mapped to lists of values.

    The server middleware collects request headers in this shape; reading them directly saves
    the getter round trips on every request. ``with_baggage=False``: trace context only.
    """
    context = Context()
    parents = headers.get(TRACEPARENT)
    if parents is not None and len(parents) == 1:
        context = _with_remote_parent(parents[0], headers.get(TRACESTATE) or (), context)
    values = headers.get(BAGGAGE) if with_baggage else None
    return _baggage.extract(values, context) if values else context


def _with_remote_parent(traceparent: str, tracestates: Iterable[str], context: Context) -> Context:
    parent = _traceparent_fields(traceparent)
    if parent is None:
        return context
    trace_id, span_id, flags = parent
    members = parse_tracestate(tracestates) if tracestates else None
    trace_state = TraceState(members) if members else _NO_TRACE_STATE
    # Positional arguments: SpanContext.__new__ is Python code, and keywords cost more there.
    span_context = SpanContext(trace_id, span_id, True, _TRACE_FLAGS[flags & SAMPLED], trace_state)
    # Both values in one new Context (an immutable dict) rather than a copy per value.
    return Context(
        {
            **context,
            CURRENT_SPAN_KEY: NonRecordingSpan(span_context),
            _REMOTE_FLAGS: (trace_id, flags),
        }
    )


def inject_trace_context(
    carrier: Any, context: Context | None = None, setter: Setter[Any] = default_setter
) -> None:
    """Write the current span's traceparent and tracestate into ``carrier``."""
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid:
        return
    setter.set(
        carrier,
        TRACEPARENT,
        format_traceparent(
            span_context.trace_id, span_context.span_id, _flags(span_context, context)
        ),
    )
    if span_context.trace_state:
        setter.set(carrier, TRACESTATE, format_tracestate(span_context.trace_state.items()))


def _flags(span_context: SpanContext, context: Context | None) -> int:
    """Sampled bit from the span; random bit from the remote parent, or set for our own traces."""
    sampled = int(span_context.trace_flags) & SAMPLED
    remote = get_value(_REMOTE_FLAGS, context)
    if isinstance(remote, tuple) and remote[0] == span_context.trace_id:
        return sampled | (int(remote[1]) & RANDOM)
    # The SDK's RandomIdGenerator makes every locally started trace id fully random.
    return sampled | RANDOM


class HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads a case-insensitive header mapping whose values are str, bytes or lists of them."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, list | tuple):
            return [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in value]
        return [value.decode("latin-1") if isinstance(value, bytes) else str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)
