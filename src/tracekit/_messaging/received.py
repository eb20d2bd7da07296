"""What one received message says: its producer's context, correlation ID and publish time.

``Received.parse`` reads a message's headers (bounded and validated by ``_messaging.headers``)
once, as its consumer takes it; ``correlation_id_in`` reads the correlation ID alone, the way
the consumer will (the producer side asks it of a message the caller filled in already), and
``correlation_property_of`` the message property that may carry one (re-exported by
``tracekit.messaging``). A
header that cannot be used is passed over with a rate-limited warning that never shows its
value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link

from tracekit import config, correlation, propagation, semconv
from tracekit._messaging import headers as _message_headers
from tracekit._messaging.headers import PUBLISH_TIME_HEADER, Headers, Reading, reading_for
from tracekit._propagation import baggage as _baggage
from tracekit._runtime import state as _state
from tracekit._runtime.guard import report_once


class Received:
    """What tracekit learned from one message's headers."""

    __slots__ = (
        "context", "correlation_id", "destination", "due_time_ns", "message_id", "publish_time_ns",
    )  # fmt: skip

    def __init__(
        self,
        context: otel_context.Context,
        correlation_id: str | None,
        publish_time_ns: int | None,
        message_id: object,
    ) -> None:
        self.context = context
        self.correlation_id = correlation_id
        self.publish_time_ns = publish_time_ns
        self.message_id = message_id
        self.destination: str | None = None  # its own, in a batch of several (_count_under)
        # when the producer asked for it to be delivered, not before (a delayed message)
        self.due_time_ns: int | None = None

    @classmethod
    def parse(
        cls, headers: Headers | None, prop: object, message_id: object, options: config.Options
    ) -> Received:
        """Read a message's headers; headers that could not be read (reported once) are
        ``empty``. In correlation-only mode, where no span continues the trace, only the
        correlation ID is looked for (as the HTTP server does there)."""
        try:
            reading = reading_for(options)
            fields = _message_headers.read(headers, reading.limits)
            if options.correlation_only:
                cid = _correlation_from(fields, reading, prop)
                return cls(NO_CONTEXT, cid, _publish_time(fields), message_id)
            propagator = reading.propagator
            # (a decision the producer left to this hop is taken as the span starts: _start_span)
            context = propagator.extract_header_lists(fields, with_baggage=False, deciding=False)
            _warn_unusable_traceparent(fields, context, reading.w3c_only)
            if propagator.carries_baggage:
                context = _with_baggage(fields, context)
            cid = _correlation_from(fields, reading, prop)
            return cls(context, cid, _publish_time(fields), message_id)
        except Exception as error:
            report_once("messaging header extraction", error)
            return cls.empty(message_id)

    @classmethod
    def empty(cls, message_id: object) -> Received:
        """A message whose headers could not be read: a new trace and a new correlation ID."""
        return cls(otel_context.Context(), None, None, message_id)

    @property
    def parent(self) -> trace.SpanContext:
        """The producer's span context (invalid when the message carried none)."""
        return trace.get_current_span(self.context).get_span_context()

    @property
    def has_parent(self) -> bool:
        """Whether the message names its producer's span, for a batch to link to: not the
        parent made up for a decision sent alone (``b3: 0``), a span that exists nowhere."""
        return propagation.linked_caller(self.context) is not None

    def wait_ms(self, now_ns: int) -> float | None:
        if self.publish_time_ns is None:
            return None
        return max(0.0, (now_ns - self.publish_time_ns) / 1e6)

    def scheduled_ms(self, now_ns: int) -> float | None:
        """The part of the queue wait the producer asked for: from the publish to when the
        message was due, at most the whole wait. None when it was due at once."""
        due, sent = self.due_time_ns, self.publish_time_ns
        if due is None or sent is None or due <= sent:
            return None
        return min((due - sent) / 1e6, self.wait_ms(now_ns) or 0.0)

    def overdue_ms(self, now_ns: int) -> float | None:
        """The queue wait past the time the message was due: what the queue-wait metric counts,
        so that a task scheduled an hour ahead is not an hour of backlog on a dashboard."""
        wait_ms = self.wait_ms(now_ns)
        if wait_ms is None or self.due_time_ns is None:  # (most messages: due at once)
            return wait_ms
        return wait_ms - (self.scheduled_ms(now_ns) or 0.0)

    def link(self, now_ns: int) -> Link:
        attributes: dict[str, Any] = {}
        if self.correlation_id:
            attributes[semconv.CORRELATION_ID] = self.correlation_id
        wait_ms = self.wait_ms(now_ns)
        if wait_ms is not None:
            attributes[semconv.QUEUE_WAIT_MS] = round(wait_ms, 3)
        return Link(self.parent, attributes)


NO_CONTEXT = otel_context.Context()


def _with_baggage(
    fields: _message_headers.Fields, context: otel_context.Context
) -> otel_context.Context:
    values = fields.get(propagation.BAGGAGE)
    return _baggage.extract(values, context, "baggage message") if values else context


def _warn_unusable_traceparent(
    fields: _message_headers.Fields, context: otel_context.Context, w3c_only: bool
) -> None:
    """A repeated or malformed traceparent restarts the trace: say so (never its value)."""
    values = fields.get(propagation.TRACEPARENT)
    if not values:
        return
    if len(values) > 1:
        _message_headers.bad_header.warn(propagation.TRACEPARENT, "repeated")
    elif w3c_only and propagation.CURRENT_SPAN_KEY in context:
        return  # extracted from this very value: usable, and not parsed twice
    elif propagation.parse_traceparent(values[0]) is None:
        _message_headers.bad_header.warn(propagation.TRACEPARENT, "malformed")


def correlation_id_in(headers: Headers | None, prop: object, reading: Reading) -> str | None:
    """The correlation ID a message's headers or property carry, as its consumer will read it."""
    return _correlation_from(_message_headers.read(headers, reading.limits), reading, prop)


def _correlation_from(
    fields: _message_headers.Fields, reading: Reading, prop: object
) -> str | None:
    """Headers first, then the W3C baggage member (the first of a repeated one, as the HTTP
    middleware takes it), then the message property."""
    from_headers = _correlation_from_headers(fields, reading.names)
    if from_headers is not None:
        return from_headers
    values = fields.get(propagation.BAGGAGE) if reading.propagator.carries_baggage else None
    from_baggage = _baggage.correlation_id_of(values)
    if from_baggage is not None:
        return from_baggage
    return correlation.first_valid([prop]) if prop is not None else None


def _correlation_from_headers(fields: _message_headers.Fields, names: Sequence[str]) -> str | None:
    for name in names:
        values = fields.get(name)
        if not values:
            continue
        if len(values) == 1 and correlation.is_valid(values[0]):
            return values[0]
        _message_headers.bad_header.warn(name, "invalid correlation ID")
    return None


def _publish_time(fields: _message_headers.Fields) -> int | None:
    values = fields.get(PUBLISH_TIME_HEADER)
    if not values:
        return None
    if len(values) == 1 and values[0].isdigit():
        nanos = int(values[0])
        # OTLP and the store hold signed 64-bit times; a time before 2001 is another unit
        # (seconds or milliseconds read as nanoseconds: a wait of 56 years on every message)
        if _EARLIEST_UNIX_NANO <= nanos < _LATEST_UNIX_NANO:
            return nanos
    _message_headers.bad_header.warn(PUBLISH_TIME_HEADER, "not a unix time in nanoseconds")
    return None


_EARLIEST_UNIX_NANO = 978_307_200 * 10**9  # 2001-01-01
_LATEST_UNIX_NANO = 2**63  # 2262


def correlation_property_of(properties: object, options: config.Options | None = None) -> object:
    """The configured correlation property of a message's properties (object or mapping).

    ``TRACEKIT_MESSAGE_CORRELATION_PROPERTY`` names it (default ``correlation_id``, AMQP's
    property); None when absent. Pass the result to ``consume(correlation_property=...)``.
    """
    try:
        name = (options or _state.current_options()).message_correlation_property
    except Exception as error:  # a broken TRACEKIT_* variable must not stop the consumer
        report_once("messaging correlation property", error)
        return None
    if isinstance(properties, Mapping):
        value = properties.get(name)
        return value if value is not None else properties.get(name.encode("ascii", "ignore"))
    return getattr(properties, name, None)
