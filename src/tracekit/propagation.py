"""W3C Trace Context (Level 1, plus Level 2's random flag), baggage and the correlation header.

Incoming baggage is read by ``tracekit._propagation.baggage`` (bounded, member by member, silent).

tracekit parses ``traceparent`` and ``tracestate`` itself rather than through OpenTelemetry's
propagator, which accepts extra fields after a version-00 traceparent, ignores duplicated
traceparent headers and writes rejected header values raw into its warnings. The rules here follow
the spec's grammar at its current main: any invalid traceparent restarts the trace; a tracestate
with an invalid member (bad key or value) or more than 32 members is dropped whole; of a key
repeated, the first member is kept and the others discarded (the spec allows either); empty
members and optional whitespace are allowed. Keys follow the June 2026 grammar,
``key = (lcalpha / DIGIT) 0*255(keychar)`` with ``@`` among the key characters, which replaced
the ``tenant@system`` form.

``TracekitPropagator`` is installed as OpenTelemetry's global propagator by ``tracekit.init()``, so
any instrumentation that injects or extracts context (ours or OpenTelemetry's contrib packages)
carries trace context, baggage and the correlation ID together.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context, create_key, get_current, get_value
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import Attributes

from tracekit import correlation, semconv
from tracekit._propagation import baggage as _baggage
from tracekit._propagation import trace_formats as _trace_formats
from tracekit._runtime.guard import report_once

__all__ = [
    "BAGGAGE",
    "CORRELATION_BAGGAGE_KEY",
    "CORRELATION_HEADER",
    "CURRENT_SPAN_KEY",
    "DEFAULT_PROPAGATORS",
    "KNOWN_PROPAGATORS",
    "MAX_TRACESTATE_LENGTH",
    "MAX_TRACESTATE_MEMBERS",
    "RANDOM",
    "SAMPLED",
    "TRACECONTEXT",
    "TRACEPARENT",
    "TRACESTATE",
    "HeaderGetter",
    "ParsedTraceState",
    "TraceParent",
    "TracekitPropagator",
    "carried_fields",
    "configured",
    "decide_deferred",
    "format_traceparent",
    "format_tracestate",
    "inject_trace_context",
    "linked_caller",
    "parse_traceparent",
    "parse_tracestate",
    "propagator_names",
    "update_tracestate",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"
CORRELATION_HEADER = "X-Correlation-ID"
CORRELATION_BAGGAGE_KEY = semconv.CORRELATION_ID  # the baggage member is named as the attribute

SAMPLED = 0x01
RANDOM = 0x02
MAX_TRACESTATE_MEMBERS = 32
# What the spec asks every vendor to pass on at least, and what tracekit passes on at most: a
# caller's 32 members of 256 characters (8.3 KB) would make the next hop's server refuse the
# request (gunicorn answers 431 to a header line over 8,190 bytes; nginx's buffers are 8 KB).
MAX_TRACESTATE_LENGTH = 512
_LONG_TRACESTATE_MEMBER = 128  # the spec's threshold: such members are the first to go

_TRACEPARENT_PREFIX = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_KEY = r"[a-z0-9][a-z0-9_\-*/@]{0,255}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"({_KEY})=({_VALUE})")
_OWS = " \t"

# Flags of the traceparent we continued, so that inject can re-emit bits OpenTelemetry's
# SpanContext does not keep (the Level 2 random flag).
_REMOTE_FLAGS = create_key("tracekit-remote-flags")
# (trace id, {format class: fields}) that foreign trace headers brought for the next hop of the
# trace (X-Ray's Lineage, B3's debug flag).
_FORWARDED = create_key("tracekit-forwarded-fields")
# The parent a caller left the sampling decision for to this hop (B3 without a sampling state,
# X-Ray's ``Sampled=?``): its SpanContext, not sampled until ``decide_deferred`` says otherwise.
_DEFERRED = create_key("tracekit-deferred-decision")
# The parent made up for a caller's decision sent without ids (B3's ``b3: 0``): its SpanContext,
# a span that exists nowhere, so no link to it (``linked_caller``).
_MADE_UP = create_key("tracekit-made-up-parent")
# Immutable, so every request can share them instead of building its own.
_TRACE_FLAGS = (TraceFlags(0), TraceFlags(SAMPLED))
_NO_TRACE_STATE = TraceState()
_NOTHING_FORWARDED: Mapping[type, str] = MappingProxyType({})
# The key under which OpenTelemetry keeps the current span, learnt through its public API, so
# that a Context holding a span and other values can be built in one step.
CURRENT_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
_log = logging.getLogger("tracekit")
_HEX_BYTE = {f"{i:02x}": i for i in range(256)}  # traceparent flags: a lookup, not int(..., 16)
_FLAGS_HEX = tuple(f"{i:02x}" for i in range((SAMPLED | RANDOM) + 1))  # and back


class ParsedTraceState(TraceState):
    """A ``TraceState`` of members ``parse_tracestate`` already validated.

    OpenTelemetry's constructor validates keys by the grammar before June 2026 (it would drop,
    and log, keys like ``foo@`` or ``foo@bar@baz``) and logs duplicates: both are settled here.
    """

    def __init__(self, members: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self._dict = dict(members)


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
    # Once per message and outgoing request: the ids' bytes in hex cost half what a format
    # spec does on a 128-bit int. (An id out of range is written as it was, longer: invalid.)
    try:
        trace_hex, span_hex = trace_id.to_bytes(16, "big").hex(), span_id.to_bytes(8, "big").hex()
    except OverflowError:
        trace_hex, span_hex = f"{trace_id:032x}", f"{span_id:016x}"
    return f"00-{trace_hex}-{span_hex}-{_FLAGS_HEX[flags & (SAMPLED | RANDOM)]}"


def parse_tracestate(values: Iterable[str]) -> list[tuple[str, str]] | None:
    """Parse (possibly several) ``tracestate`` header values into ordered members.

    Returns None when the combined list is invalid and must be dropped whole. A repeated key
    keeps its first member.
    """
    members: dict[str, str] = {}
    for value in values:
        for raw in value.split(","):
            raw = raw.strip(_OWS)
            if not raw:
                continue
            match = _MEMBER.fullmatch(raw)
            if match is None:
                return None
            members.setdefault(match.group(1), match.group(2))
    return list(members.items()) if len(members) <= MAX_TRACESTATE_MEMBERS else None


def format_tracestate(members: Iterable[tuple[str, str]]) -> str:
    """Serialize tracestate members, at most 32, in order, in at most 512 characters."""
    entries = [f"{key}={value}" for key, value in list(members)[:MAX_TRACESTATE_MEMBERS]]
    value = ",".join(entries)
    return value if len(value) <= MAX_TRACESTATE_LENGTH else _shortened(entries)


def _shortened(entries: list[str]) -> str:
    """``entries`` cut to ``MAX_TRACESTATE_LENGTH`` as the spec asks: members longer than 128
    characters go first, then members from the end."""
    kept = [entry for entry in entries if len(entry) <= _LONG_TRACESTATE_MEMBER]
    length = len(",".join(kept))
    while length > MAX_TRACESTATE_LENGTH:
        length -= len(kept.pop()) + 1  # (the last one's separator goes with it)
    return ",".join(kept)


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


def _first_found(getter: Getter[Any], carrier: Any, spellings: Sequence[str]) -> list[str]:
    """The values of the first of ``spellings`` that ``carrier`` holds."""
    for name in spellings:
        values = _header_values(getter, carrier, name)
        if values:
            return values
    return []


def _spelt_by_others(name: str) -> tuple[str, ...]:
    capitalised = _trace_formats.B3.CAPITALISED.get(name)
    return (capitalised,) if capitalised is not None else ()


class TracekitPropagator(TextMapPropagator):
    """Extracts and injects trace headers, W3C baggage and the correlation header together.

    ``propagators`` are ``OTEL_PROPAGATORS`` names in order (default: ``tracecontext``,
    ``baggage``). Extraction runs them in order and the last trace header found wins, as in
    OpenTelemetry's composite propagator; injection writes every one. The correlation header
    travels whatever the trace headers are.
    """

    def __init__(
        self,
        correlation_header: str = CORRELATION_HEADER,
        propagators: Sequence[str] | None = None,
        accepted_headers: Sequence[str] = (),
    ) -> None:
        self.names = DEFAULT_PROPAGATORS if propagators is None else tuple(propagators)
        self._correlation_header = correlation_header.lower()
        # The request headers ``extract`` takes the caller's ID from, in order (as given: a
        # dict carrier's keys, say); the one written when none are named.
        self._accepted_headers = tuple(accepted_headers) or (correlation_header,)
        # (name, format); None stands for W3C trace context, which lives in this module.
        self._trace_formats = [
            (name, None if name == TRACECONTEXT else _trace_formats.FORMATS[name]())
            for name in self.names
            if name == TRACECONTEXT or name in _trace_formats.FORMATS
        ]
        self.carries_baggage = BAGGAGE in self.names
        self.trace_fields = tuple(
            field
            for name, format_ in self._trace_formats
            for field in (format_.fields if format_ is not None else (TRACEPARENT, TRACESTATE))
        )
        self.carried_fields = self.trace_fields + ((BAGGAGE,) if self.carries_baggage else ())
        # What ``extract`` asks a carrier for, by the lower-case name each fills: as named, in
        # lower case, and B3's as Java's propagators spell them (``X-B3-TraceId``): a message's
        # headers are a case-sensitive map to a contrib consumer's getter.
        self._spellings = tuple(
            (name.lower(), tuple(dict.fromkeys((name, name.lower(), *_spelt_by_others(name)))))
            for name in (*self.carried_fields, *self._accepted_headers)
        )

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """Return ``context`` updated with the remote parent, baggage and correlation ID found in
        ``carrier``: what OpenTelemetry's contrib instrumentations start their spans under, so
        that those spans, and the work under them, carry the caller's correlation ID."""
        headers = {
            name: _first_found(getter, carrier, spellings) for name, spellings in self._spellings
        }
        # No span name here: the decision a caller left to this hop is taken now, for the span
        # the instrumentation calling this will start.
        context = decide_deferred(self.extract_header_lists(headers, context, deciding=False))
        accepted = [headers[name.lower()] for name in self._accepted_headers]
        cid = _callers_correlation_id(accepted, headers.get(BAGGAGE) or ())
        return (
            context if cid is None else Context({**context, correlation.CALLERS_CONTEXT_KEY: cid})
        )

    def extract_header_lists(
        self,
        headers: Mapping[str, Sequence[str]],
        context: Context | None = None,
        *,
        with_baggage: bool = True,
        deciding: bool = True,
    ) -> Context:
        """``extract`` for lower-case header names mapped to lists of values.

        The server middleware and the message-header reader collect headers in this shape;
        reading them directly saves the getter round trips. ``with_baggage=False``: trace
        headers only. ``deciding=False``: a parent whose caller left the sampling decision to
        this hop stays undecided (not sampled), for ``decide_deferred`` to settle where the
        span's name and attributes are known.
        """
        context = context if context is not None else Context()
        for _, format_ in self._trace_formats:
            if format_ is None:
                parents = headers.get(TRACEPARENT)
                if parents is not None and len(parents) == 1:  # duplicated: the spec says restart
                    states = headers.get(TRACESTATE) or ()
                    context = _with_remote_parent(parents[0], states, context)
                continue
            remote = format_.extract(headers)
            if remote is not None and not (remote.decision_only and _has_parent(context)):
                context = _with_foreign_parent(remote, type(format_), context)
        if deciding:
            context = decide_deferred(context)
        values = headers.get(BAGGAGE) if with_baggage and self.carries_baggage else None
        return _baggage.extract(values, context) if values else context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write the trace headers, baggage and the correlation header into ``carrier``."""
        self._inject_known(carrier, context, *_sent_from(context), setter)

    def _inject_known(
        self,
        carrier: CarrierT,
        context: Context | None,
        span_context: SpanContext | None,
        cid: str | None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """``inject`` for a caller that holds the span of ``context`` and the correlation ID to
        send with it (a publish that has just started both): neither is looked up again. Kept
        out of the propagator's public interface: tracekit's publish is its only caller."""
        if span_context is not None and span_context.is_valid:
            self._inject_trace(carrier, span_context, context, setter)
        sent_baggage = _baggage_to_send(context, cid) if self.carries_baggage else None
        if setter is default_setter:  # (a dict, as every message's headers: stored, no calls)
            if cid is not None:
                carrier[self._correlation_header] = cid  # type: ignore[index]
            if sent_baggage is not None:
                carrier[BAGGAGE] = sent_baggage  # type: ignore[index]
            return
        if cid is not None:
            setter.set(carrier, self._correlation_header, cid)
        if sent_baggage is not None:
            setter.set(carrier, BAGGAGE, sent_baggage)

    def _inject_trace(
        self, carrier: Any, span_context: SpanContext, context: Context | None, setter: Setter[Any]
    ) -> None:
        forwarded = None  # what the other formats need: not looked up for W3C's alone
        for _, format_ in self._trace_formats:
            if format_ is None:
                _inject_w3c(carrier, span_context, context, setter)
                continue
            if forwarded is None:
                forwarded = _forwarded(span_context.trace_id, context)
            format_.inject(
                span_context.trace_id,
                span_context.span_id,
                bool(span_context.trace_flags & SAMPLED),
                lambda name, value: setter.set(carrier, name, value),
                forwarded.get(type(format_), ""),
            )

    @property
    def fields(self) -> set[str]:
        """Header names this propagator writes."""
        return {*self.carried_fields, self._correlation_header}


TRACECONTEXT = "tracecontext"
DEFAULT_PROPAGATORS = (TRACECONTEXT, BAGGAGE)
KNOWN_PROPAGATORS = (*DEFAULT_PROPAGATORS, *_trace_formats.FORMATS, "none")


def _sent_from(context: Context | None) -> tuple[SpanContext | None, str | None]:
    """What ``inject`` sends from ``context`` (None: the current one): its span's context and
    its correlation ID. A context given without a span (correlation-only mode) has none to
    look up."""
    span_context = None
    if context is None or CURRENT_SPAN_KEY in context:
        span_context = trace.get_current_span(context).get_span_context()
    return span_context, correlation.correlation_id_for(context)


def _baggage_to_send(context: Context | None, cid: str | None) -> str | None:
    """The context's baggage with the correlation ID as its ``correlation.id`` member,
    replacing one the caller's baggage brought (a request whose ``X-Correlation-ID`` won over
    it must not send the other ID downstream beside its own); None when there is none."""
    entries, properties = _baggage.carried_in(context)
    if not entries and not properties:  # no baggage of the caller's: the usual case
        return _baggage.correlation_member(cid) if cid is not None else None
    if cid is not None and entries.get(CORRELATION_BAGGAGE_KEY) != cid:
        entries = {**entries, CORRELATION_BAGGAGE_KEY: cid}
    return _baggage.header(entries, properties) if entries else None


def _callers_correlation_id(
    accepted: Iterable[Sequence[str]], baggage_values: Sequence[str]
) -> str | None:
    """The caller's correlation ID as tracekit's middleware picks it: the first accepted header
    with one valid value (a repeated header is ambiguous), else the baggage member (the first
    of a repeated one)."""
    for values in accepted:
        value = values[0].strip(_OWS) if len(values) == 1 else None
        if correlation.is_valid(value):
            return value
    return _baggage.correlation_id_of(baggage_values)


def propagator_names(value: str | None) -> tuple[str, ...]:
    """The propagators an ``OTEL_PROPAGATORS`` value names, in order (unset: the default).

    ``none`` adds nothing; a name tracekit does not carry is ignored with one warning.
    """
    if value is None or not value.strip():
        return DEFAULT_PROPAGATORS
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = sorted({name for name in names if name not in KNOWN_PROPAGATORS})
    if unknown:
        _log.warning(
            "tracekit: OTEL_PROPAGATORS names %s, which tracekit does not carry; ignored",
            ", ".join(repr(name[:64]) for name in unknown[:8]),
        )
    return tuple(dict.fromkeys(n for n in names if n in KNOWN_PROPAGATORS and n != "none"))


def configured(
    correlation_header: str = CORRELATION_HEADER, accepted_headers: tuple[str, ...] = ()
) -> TracekitPropagator:
    """The propagator ``OTEL_PROPAGATORS`` (read now) asks for, with ``correlation_header``;
    ``extract`` takes the caller's ID from ``accepted_headers`` (default: that header)."""
    return _configured(os.environ.get("OTEL_PROPAGATORS"), correlation_header, accepted_headers)


@functools.lru_cache(maxsize=16)
def _configured(
    value: str | None, correlation_header: str, accepted_headers: tuple[str, ...]
) -> TracekitPropagator:
    return TracekitPropagator(correlation_header, _names_warned_once(value), accepted_headers)


@functools.lru_cache(maxsize=16)
def _names_warned_once(value: str | None) -> tuple[str, ...]:
    """``propagator_names``, whose warning about an unknown name comes once per value, however
    many propagators (the global one, the middleware's) are built from it."""
    return propagator_names(value)


def carried_fields() -> tuple[str, ...]:
    """The trace and baggage header names the configured propagators read and write."""
    return configured().carried_fields


def _with_remote_parent(traceparent: str, tracestates: Iterable[str], context: Context) -> Context:
    parent = _traceparent_fields(traceparent)
    if parent is None:
        return context
    trace_id, span_id, flags = parent
    members = parse_tracestate(tracestates) if tracestates else None
    trace_state = ParsedTraceState(members) if members else _NO_TRACE_STATE
    # Positional arguments: SpanContext.__new__ is Python code, and keywords cost more there.
    span_context = SpanContext(trace_id, span_id, True, _TRACE_FLAGS[flags & SAMPLED], trace_state)
    _remember_remote_flags(trace_id, flags)
    # Both values in one new Context (an immutable dict) rather than a copy per value.
    return Context(
        {
            **context,
            CURRENT_SPAN_KEY: NonRecordingSpan(span_context),
            _REMOTE_FLAGS: (trace_id, flags),
        }
    )


def _with_foreign_parent(remote: _trace_formats.Remote, kind: type, context: Context) -> Context:
    """A parent read from B3, Jaeger or X-Ray headers. These carry no tracestate and no random
    flag: those of a W3C parent of the same trace found before it (a caller writing both
    formats for one span) stay, as they describe the trace."""
    trace_state, random = _same_trace_w3c(remote.trace_id, context)
    flags = (remote.flags & SAMPLED) | random
    span_context = SpanContext(
        remote.trace_id, remote.span_id, True, _TRACE_FLAGS[flags & SAMPLED], trace_state
    )
    _remember_remote_flags(remote.trace_id, flags)
    values = {
        **context,
        CURRENT_SPAN_KEY: NonRecordingSpan(span_context),
        _REMOTE_FLAGS: (remote.trace_id, flags),
        _DEFERRED: span_context if remote.deferred else None,
    }
    if remote.decision_only:
        values[_MADE_UP] = span_context
    if remote.forwarded:  # kept for the trace, whichever header's parent wins after this one
        earlier = _forwarded(remote.trace_id, context)
        values[_FORWARDED] = (remote.trace_id, {**earlier, kind: remote.forwarded})
    return Context(values)


def linked_caller(context: Context) -> SpanContext | None:
    """The caller's span ``context`` names, for a public endpoint to link to; None where none
    is named, or where the caller sent a decision alone (``b3: 0``): its ids were made up here,
    and a link to them would point at a trace that exists nowhere."""
    span_context = trace.get_current_span(context).get_span_context()
    if not span_context.is_valid or context.get(_MADE_UP) is span_context:
        return None
    return span_context


def decide_deferred(
    context: Context,
    tracer_provider: trace.TracerProvider | None = None,
    name: str = "",
    kind: SpanKind | None = None,
    attributes: Attributes = None,
) -> Context:
    """``context``, its remote parent sampled if this hop decides so where the caller left the
    decision to it (B3 without a sampling state, X-Ray's ``Sampled=?``); unchanged otherwise.

    The decision is the one ``tracer_provider``'s sampler (default: the global provider's)
    makes for a new trace of that id and a span of that ``name``, ``kind`` and ``attributes``:
    a ratio sampler keeps its ratio, and one with rules (no ``/health``) applies them, where a
    parent-based sampler alone would only follow the parent's flag.

    The parent made up for a denial sent without ids (``b3: 0``) is left out where that
    sampler records the span all the same (``always_on``, ``traceidratio``: samplers that do
    not follow a parent's flag): the span then starts a trace of its own, rather than one
    under a parent that exists nowhere."""
    deferred, made_up = context.get(_DEFERRED), context.get(_MADE_UP)
    if deferred is None and made_up is None:  # (the usual request: one look, no more)
        return context
    parent = trace.get_current_span(context).get_span_context()
    asked = (tracer_provider, name, kind, attributes)
    if parent is made_up:
        if _samples(context, parent.trace_id, *asked) is not True:
            return context
        return Context({**context, CURRENT_SPAN_KEY: trace.INVALID_SPAN, _MADE_UP: None})
    if parent is not deferred:
        return context
    undecided = Context({**context, CURRENT_SPAN_KEY: trace.INVALID_SPAN, _DEFERRED: None})
    # Without an SDK sampler (tracekit not set up), or one that raised, the request is recorded.
    if _samples(undecided, parent.trace_id, *asked) is False:
        return Context({**context, _DEFERRED: None})
    sampled = SpanContext(
        parent.trace_id, parent.span_id, True, _TRACE_FLAGS[SAMPLED], parent.trace_state
    )
    return Context({**context, CURRENT_SPAN_KEY: NonRecordingSpan(sampled), _DEFERRED: None})


def _samples(
    context: Context,
    trace_id: int,
    tracer_provider: trace.TracerProvider | None,
    name: str,
    kind: SpanKind | None,
    attributes: Attributes,
) -> bool | None:
    """Whether the provider's sampler samples a span of ``trace_id`` under ``context``'s
    parent; None without an SDK sampler, or where the host's own sampler raised."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler  # (extraction needs no SDK)

    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    sampler = getattr(provider, "sampler", None)
    if not isinstance(sampler, Sampler):
        return None
    try:
        decision = sampler.should_sample(context, trace_id, name, kind, attributes).decision
        return decision is Decision.RECORD_AND_SAMPLE
    except Exception as error:
        report_once("sampling a deferred trace", error)
        return None


def _has_parent(context: Context) -> bool:
    """Whether ``context`` names a parent span: a caller's ids, which a decision sent without
    ids (B3's ``b3: 0``) in another header does not replace."""
    return trace.get_current_span(context).get_span_context().is_valid


def _same_trace_w3c(trace_id: int, context: Context) -> tuple[TraceState, int]:
    """The tracestate and random flag ``context``'s remote parent has in trace ``trace_id``."""
    span = context.get(CURRENT_SPAN_KEY)
    earlier = span.get_span_context() if isinstance(span, trace.Span) else None
    if earlier is None or earlier.trace_id != trace_id:
        return _NO_TRACE_STATE, 0
    flags = context.get(_REMOTE_FLAGS)
    random = int(flags[1]) & RANDOM if isinstance(flags, tuple) and flags[0] == trace_id else 0
    return earlier.trace_state, random


def _forwarded(trace_id: int, context: Context | None) -> Mapping[type, str]:
    """The fields the caller's foreign trace headers brought for the next hop of this trace,
    by format."""
    found = get_value(_FORWARDED, context)
    if isinstance(found, tuple) and found[0] == trace_id and isinstance(found[1], dict):
        return found[1]
    return _NOTHING_FORWARDED


def inject_trace_context(
    carrier: Any, context: Context | None = None, setter: Setter[Any] = default_setter
) -> None:
    """Write the current span's traceparent and tracestate into ``carrier``."""
    span_context = trace.get_current_span(context).get_span_context()
    if span_context.is_valid:
        _inject_w3c(carrier, span_context, context, setter)


def _inject_w3c(
    carrier: Any, span_context: SpanContext, context: Context | None, setter: Setter[Any]
) -> None:
    # Once per message and outgoing request: each of the span context's fields is a property,
    # read once here.
    trace_id = span_context.trace_id
    flags = _flags(trace_id, span_context.trace_flags, context)
    traceparent = format_traceparent(trace_id, span_context.span_id, flags)
    if setter is default_setter:  # (a dict, as every message's headers: stored, no call)
        carrier[TRACEPARENT] = traceparent
    else:
        setter.set(carrier, TRACEPARENT, traceparent)
    trace_state = span_context.trace_state
    if trace_state is DEFAULT_TRACE_STATE:  # a trace of our own, none: no length to ask
        return
    # (members all over 128 characters are all left out: then no header)
    state = format_tracestate(trace_state.items()) if trace_state else ""
    if state:
        setter.set(carrier, TRACESTATE, state)


def _flags(trace_id: int, trace_flags: int, context: Context | None) -> int:
    """Sampled bit from the span's ``trace_flags``; random bit from the remote parent, or set for
    our own traces."""
    sampled = int(trace_flags) & SAMPLED
    remote = (context if context is not None else get_current()).get(_REMOTE_FLAGS)
    if isinstance(remote, tuple) and remote[0] == trace_id:
        return sampled | (int(remote[1]) & RANDOM)
    # A span started with the extracted context as its parent but made current elsewhere
    # (start_as_current_span(context=...)), or a span below it: the context does not say.
    remembered = _read_remote_flags.get(trace_id)
    if remembered is not None:
        return sampled | (remembered & RANDOM)
    # The SDK's RandomIdGenerator makes every locally started trace id fully random.
    return sampled | RANDOM


# The flags of the latest parents read from headers, by trace id (insertion order: oldest first).
_read_remote_flags: dict[int, int] = {}
_REMOTE_FLAGS_KEPT = 4096


def _remember_remote_flags(trace_id: int, flags: int) -> None:
    remembered = _read_remote_flags
    remembered[trace_id] = flags
    if len(remembered) > _REMOTE_FLAGS_KEPT:
        with contextlib.suppress(RuntimeError, StopIteration, KeyError):  # (another thread's)
            del remembered[next(iter(remembered))]


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
