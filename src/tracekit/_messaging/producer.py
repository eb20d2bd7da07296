"""The producer side of a queue hop: ``Publishing``, the PRODUCER span around one broker call.

``tracekit.messaging.publish`` returns a ``Publishing``; its block opens the span, writes the
hop's headers into the message (``write_headers``), and as it ends (or later, for a client that
settles the message after the block: a Redis pipeline, a Kafka delivery report) ends the span and
counts the message sent. ``publish_own`` and ``publish_alone`` are the forms an integration uses
for headers it made itself for one message. What the consumer side shares with it lives in
``_messaging.spans`` (attributes, the tracer) and ``_messaging.headers`` (which fields are read
and written).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar, Token
from time import perf_counter
from types import TracebackType
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import config, correlation, propagation, semconv
from tracekit._messaging.consumer import current_delivery, put_back_left
from tracekit._messaging.headers import (
    PUBLISH_TIME_HEADER,
    Reading,
    drop_left_by_last_publish,
    drop_other_spellings,
    drop_replaced,
    reading_for,
    remember_left,
)
from tracekit._messaging.received import correlation_id_in, correlation_property_of
from tracekit._messaging.spans import (
    base_attributes,
    bounded_id,
    record_failed_after,
    tracer_for,
)
from tracekit._runtime import state as _state
from tracekit._runtime import unfinished as _unfinished
from tracekit._runtime.guard import (
    error_type,
    instrumentation_suppressed,
    mark_failed,
    report_once,
    safe,
)
from tracekit.metrics import MessagingMetrics

# The caller's own message, where an integration sends tracekit's headers beside it (Kafka
# headers, stream fields, SQS attributes, AMQP properties): its fields (a mapping or ``(key,
# value)`` pairs) and the properties whose correlation property
# (``correlation_property_of``) it may carry, either None. The property is read only where no
# correlation ID is current: a publish inside a request does not pay for it.
_CallersMessage = tuple[Any, object]

# Set while a publish block runs, so an instrumented client below it does not publish twice.
# (A context variable of its own: correlation-only mode then attaches no OpenTelemetry context.)
publishing_now: ContextVar[bool] = ContextVar("tracekit_messaging_publishing", default=False)


class Publication:
    """The message being published inside a ``publish`` block."""

    def __init__(self, span: trace.Span | None = None, started: float | None = None) -> None:
        self.span = span
        # (when the span began: the duration measured covers what the span does, headers too)
        self._started = perf_counter() if started is None else started
        self._accepted: int | None = None
        # (unix ns, perf_counter) when the client took the message, if its span ends later
        self._handed_over: tuple[int, float] | None = None
        self._failure: BaseException | None = None  # see fail()

    def set_message_id(self, message_id: object) -> None:
        """Record an ID the broker assigned during the call (SQS MessageId, Kafka offset...)."""
        if self.span is not None and message_id is not None:
            self.span.set_attribute(semconv.MESSAGING_MESSAGE_ID, bounded_id(message_id))

    def set_accepted(self, count: int) -> None:
        """How many messages of a batch the broker accepted, when it answers per message (SQS
        ``SendMessageBatch``): the messages sent count these, not the batch's size."""
        self._accepted = max(0, int(count))

    def fail(self, error: BaseException) -> None:
        """Note that the broker did not take the message though the call returned (a mandatory
        message returned unroutable): the PRODUCER span ends failed with ``error``."""
        if self._failure is None:
            self._failure = error


class Publishing:
    """What ``publish`` returns: ``with`` it around the broker call (it yields a ``Publication``).

    A class rather than a generator-based context manager: this runs once per message.
    """

    __slots__ = (
        "_call", "_callers", "_ended", "_fresh", "_kept_open", "_options", "_publication",
        "_settled_later", "_started",
    )  # fmt: skip

    def __init__(self, *call: Any) -> None:
        self._call = call
        self._fresh = False  # see publish_own
        self._callers: _CallersMessage | None = None  # see _beside
        self._publication: Publication | None = None
        self._options: config.Options | None = None  # read as the block began, for end()
        self._started: _Started | None = None  # the block's own: released as it ends
        self._kept_open = False
        self._settled_later = False
        self._ended = False

    def __enter__(self) -> Publication:
        if current_delivery() is not None:  # (none outside a handler: no call to guard)
            safe("messaging publish start", put_back_left)
        ctx = otel_context.get_current()
        if publishing_now.get() or instrumentation_suppressed(context=ctx):
            return Publication()
        try:
            publication, started = _start_publish(ctx, self._fresh, self._callers, *self._call)
        except Exception as error:
            report_once("messaging publish start", error)
            return Publication()
        self._publication, self._started, self._options = publication, started, started.options
        return publication

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        started, publication = self._started, self._publication
        if started is None or publication is None:
            return
        # What only the block needed (its context tokens, the Context it made current, the
        # caller's fields) is let go here: a span kept open for a delivery report would
        # otherwise keep it, tracked by the garbage collector, until the report comes.
        self._started = self._callers = None
        _leave_block(started)
        if publication.span is None:
            return  # correlation-only: no span to end, no message to count
        if error is None and self._kept_open:
            if self._settled_later:
                publication._handed_over = (time.time_ns(), perf_counter())
            return
        self.end(error)

    def _beside(self, fields: Any, properties: object = None) -> Publishing:
        """For an integration that sends ``headers`` beside the caller's own message fields:
        a correlation ID the caller put there (or in the correlation property of
        ``properties``) is the message's when none is current, and no new one is made for it
        (see ``write_headers``)."""
        self._callers = (fields, properties)
        return self

    def keep_open(self) -> None:
        """Inside the block: the client only queued the message (a Redis pipeline), so the
        PRODUCER span outlives the block, whose context still ends with it; ``end`` closes it
        once the message is sent."""
        self._kept_open = True

    def settle_later(self) -> None:
        """Inside the block: the client takes the message when the block ends and reports its
        delivery later (a Kafka delivery report). The span keeps the block's timing (queue wait
        starts there), and is recorded when ``end`` is called with the report: failed if
        ``error``. Another thread may serve the report, even before the block ends."""
        self._kept_open = self._settled_later = True

    @property
    def span(self) -> trace.Span | None:
        """The PRODUCER span, once the block has started one."""
        return self._publication.span if self._publication is not None else None

    def end(self, error: BaseException | None = None) -> None:
        """End the PRODUCER span kept open (failed if ``error``) and count the message sent."""
        options, publication = self._options, self._publication
        if options is None or publication is None or self._ended:
            return
        self._ended = True  # (the block's context token stays in _started for __exit__)
        try:
            _end_publish(publication, options, self._call, error)
        except Exception as failure:
            report_once("messaging publish end", failure)

    def _end_outcome_unknown(self, error: BaseException | None = None) -> None:
        """``end`` for a span kept open whose message's fate tracekit will not learn (a Kafka
        delivery report never served, a Redis pipeline never executed before shutdown, a
        publisher confirm whose channel closed first: failed with ``error``, its reason): it
        is marked ``tracekit.delivery.outcome`` ``unknown``."""
        span = self.span
        try:
            if span is not None and span.is_recording():
                span.set_attribute(semconv.DELIVERY_OUTCOME, "unknown")
        except Exception as failure:
            report_once("messaging publish end", failure)
        self.end(error)

    def fail_after_end(self, error: BaseException, operation_name: str) -> None:
        """The message failed after the block (a Kafka delivery report): the span ends failed
        with ``error`` if still open; once recorded (it can no longer change), the failure is
        a zero-length CLIENT span ``"<operation_name> <destination>"`` of its own under it.
        Metrics are left as they are: the message was counted sent when its span ended."""
        publication = self._publication
        if publication is None or publication.span is None:
            return
        if not self._ended:
            self.end(error)
            return
        try:
            _record_failed_after(publication.span, self._call, operation_name, error)
        except Exception as failure:
            report_once("messaging late publish failure", failure)


def publish_own(
    headers: MutableMapping[str, Any],
    system: str,
    destination: str,
    message_id: object,
    attributes: Mapping[str, Any] | None,
    properties: object = None,
) -> Publishing:
    """``publish`` for an integration that made ``headers`` itself for this message (pika
    copies the caller's properties): since no caller holds the dict to publish with again,
    nothing of an earlier publish is looked for in it, nor remembered for the next.
    ``properties``: the message's own (see ``Publishing._beside``)."""
    publishing = Publishing(
        headers, system, destination, message_id, "send", attributes, None, None
    )
    publishing._fresh = True
    return publishing._beside(None, properties)


def publish_alone(
    headers: MutableMapping[str, Any], callers: _CallersMessage | None = None
) -> _PublishingAlone | None:
    """``publish`` in correlation-only mode, for an integration that made ``headers`` itself
    for this message (pika copies the caller's properties): no span or metrics, and since no
    caller holds the dict to publish with again, nothing to look for in it or remember for
    next time. None in full mode, or when the options cannot be read: use ``publish``.
    ``callers``: the caller's own message, as ``Publishing._beside`` takes it."""
    try:
        options = _state.current_options()
    except Exception:  # (publish reports it)
        return None
    return _PublishingAlone(headers, options, callers) if options.correlation_only else None


class _PublishingAlone:
    """What ``publish_alone`` returns: ``with`` it around the broker call."""

    __slots__ = ("_callers", "_headers", "_options", "_token")

    def __init__(
        self,
        headers: MutableMapping[str, Any],
        options: config.Options,
        callers: _CallersMessage | None,
    ) -> None:
        self._headers, self._options, self._callers = headers, options, callers
        self._token: Token[bool] | None = None

    def __enter__(self) -> None:
        if current_delivery() is not None:  # (none outside a handler: no call to guard)
            safe("messaging publish start", put_back_left)
        ctx = otel_context.get_current()
        if instrumentation_suppressed(context=ctx):
            return
        try:
            write_headers(self._headers, ctx, self._options, fresh=True, callers=self._callers)
        except Exception as error:
            report_once("messaging publish start", error)
            return
        self._token = publishing_now.set(True)

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if self._token is not None:
            publishing_now.reset(self._token)


class _Started(NamedTuple):
    """What a publish block made current, to put back as it ends, and the options it read."""

    context: Token[otel_context.Context] | None  # None in correlation-only mode: no span
    publishing: Token[bool]
    options: config.Options
    inside: otel_context.Context | None = None  # the context ``context`` made current


def _leave_block(started: _Started) -> None:
    # Put back what the block found only while its own context is still current. A block begun
    # inside another's and left after it (Celery's signals: OpenTelemetry's receiver, connected
    # first, puts its context back in ``after_task_publish``; tracekit's block ends with
    # ``send_task``) would otherwise bring back that other's, its span ended, for good.
    if started.context is not None and otel_context.get_current() is started.inside:
        otel_context.detach(started.context)
    try:  # noqa: SIM105 (once per message: contextlib.suppress would cost a context manager)
        publishing_now.reset(started.publishing)
    except (ValueError, RuntimeError):  # left in another context, or twice: nothing to undo
        pass


def _start_publish(
    ctx: otel_context.Context,
    fresh: bool,
    callers: _CallersMessage | None,
    headers: MutableMapping[str, Any],
    system: str,
    destination: str,
    message_id: object,
    operation_name: str,
    attributes: Mapping[str, Any] | None,
    tracer_provider: TracerProvider | None,
    registry: CollectorRegistry | None,
) -> tuple[Publication, _Started]:
    opts = _state.current_options()
    if opts.correlation_only:  # no span: the context stays as it is, and writes the headers
        write_headers(headers, ctx, opts, fresh=fresh, callers=callers)
        return Publication(), _Started(None, publishing_now.set(True), opts)
    span_attributes = base_attributes(
        system, destination, "send", operation_name, message_id, attributes
    )
    cid = correlation.correlation_id()
    if cid is not None:
        span_attributes[semconv.CORRELATION_ID] = cid
    began = perf_counter()
    span = tracer_for(tracer_provider).start_span(
        f"{operation_name} {destination}",
        ctx,
        SpanKind.PRODUCER,
        span_attributes,
    )
    _unfinished.track(span)  # recorded if SIGTERM's default action ends the process first
    # One new Context holding the span (as trace.set_span_in_context would).
    inside = otel_context.Context({**ctx, propagation.CURRENT_SPAN_KEY: span})
    known = (span.get_span_context(), cid)
    sent = write_headers(headers, inside, opts, fresh=fresh, known=known, callers=callers)
    if cid is None and sent is not None:  # the message's own ID, made or the caller's
        span.set_attribute(semconv.CORRELATION_ID, sent)
    token = otel_context.attach(inside)
    return Publication(span, began), _Started(token, publishing_now.set(True), opts, inside)


def write_headers(
    headers: MutableMapping[str, Any],
    ctx: otel_context.Context,
    opts: config.Options,
    *,
    fresh: bool = False,
    known: tuple[SpanContext, str | None] | None = None,
    callers: _CallersMessage | None = None,
) -> str | None:
    """Write the hop's headers into ``headers`` and return the message's correlation ID.
    ``fresh``: a dict the integration made for this message alone (pika copies the caller's),
    which no caller publishes with again, so nothing of an earlier publish is looked for in it
    or remembered for the next. ``known``: the context of the span ``ctx`` holds, and the
    correlation ID to send (a publish started them): not looked up again. ``callers``: the
    caller's own message beside ``headers`` (``Publishing._beside``).

    Published outside any request (a script, a cron job), with no ID of the caller's in the
    message either, the message gets a new correlation ID of its own: every delivery of it,
    redeliveries included, and all that follows then share one ID. Nothing is made current."""
    reading = reading_for(opts)
    # Other spellings of tracekit's headers are the caller's: in headers of tracekit's alone
    # (the usual message, which came with none) there are none to look for.
    callers_headers = bool(headers)
    remembered = callers_headers and not fresh
    if remembered:
        drop_left_by_last_publish(headers, reading.left)
    if callers_headers:
        drop_replaced(headers, reading.replaced)
    # the caller's own correlation ID and baggage, there before: what tracekit leaves unwritten
    callers_left = tuple(map(headers.get, reading.left)) if remembered else ()
    span_context, cid = propagation._sent_from(ctx) if known is None else known
    message_id = cid
    if cid is None:  # outside any request: the caller's own ID in the message, else a new one
        message_id = _callers_correlation_id(
            headers if callers_headers else None, callers, reading, opts
        )
        if message_id is None:
            cid = message_id = correlation.new_correlation_id()
    reading.propagator._inject_known(headers, ctx, span_context, cid)
    stamp = headers[PUBLISH_TIME_HEADER] = str(time.time_ns())
    if not fresh:
        remember_left(headers, stamp, reading.left, callers_left)
    if callers_headers or reading.written_twice:
        drop_other_spellings(headers, reading.written)
    return message_id


def _callers_correlation_id(
    headers: MutableMapping[str, Any] | None,
    callers: _CallersMessage | None,
    reading: Reading,
    opts: config.Options,
) -> str | None:
    """A correlation ID the caller put in the message itself (its headers, or beside them:
    ``callers``), which its consumer will take."""
    found = correlation_id_in(headers, None, reading) if headers else None
    if found is not None or callers is None:
        return found
    fields, properties = callers
    return correlation_id_in(fields, correlation_property_of(properties, opts), reading)


def _end_publish(
    publication: Publication,
    opts: config.Options,
    call: tuple[Any, ...],
    error: BaseException | None,
) -> None:
    span = publication.span
    if span is None or not _unfinished.claim(span):  # (ended as SIGTERM ends the process)
        return
    error = error if error is not None else publication._failure
    if error is not None:
        mark_failed(span, error)
    ended_ns, ended = publication._handed_over or (None, perf_counter())
    span.end(ended_ns)
    _, system, destination, _id, _operation, attributes, _provider, registry = call
    count = attributes.get(semconv.MESSAGING_BATCH_MESSAGE_COUNT) if attributes else None
    if publication._accepted is not None:
        count = publication._accepted
    elif type(count) is not int or count < 1:
        count = 1
    metrics = MessagingMetrics.get(opts.service_name, opts.service_version, registry)
    metrics.published(
        system, destination, ended - publication._started, span,
        error_type(error) if error is not None else None, count,
    )  # fmt: skip


def _record_failed_after(
    span: trace.Span, call: tuple[Any, ...], operation_name: str, error: BaseException
) -> None:
    """The failed span under ``span``, recorded already, carrying the correlation ID it does."""
    _, system, destination, message_id, _operation, attributes, provider, _registry = call
    span_attributes = base_attributes(
        system, destination, "send", operation_name, message_id, attributes
    )
    cid = (getattr(span, "attributes", None) or {}).get(semconv.CORRELATION_ID)  # SDK spans'
    if isinstance(cid, str):
        span_attributes[semconv.CORRELATION_ID] = cid
    name = f"{operation_name} {destination}"
    record_failed_after(tracer_for(provider), span, name, span_attributes, error)
