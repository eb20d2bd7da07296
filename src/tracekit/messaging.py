"""Queue hops for any transport: the primitives every tracekit queue integration is built on.

Producer side::

    with messaging.publish(headers, system="rabbitmq", destination="orders") as sent:
        channel.basic_publish("", "orders", body, BasicProperties(headers=headers))
        sent.set_message_id(...)        # when the broker assigns one after the call
        sent.fail(error)                # when the call returned but the broker refused it

``publish`` opens a PRODUCER span ``"send orders"`` that ends when the block ends (so queue wait
starts when the broker call returns) and writes into ``headers`` (any mutable mapping):
``traceparent``, ``tracestate``, ``baggage``, the correlation header (``x-correlation-id``, or the
configured ``response_header`` in lower case) and ``tracekit-publish-time`` (unix nanoseconds,
taken just before the broker call). Published outside any request, with no correlation ID of
the caller's in the message, the message gets a new one of its own (nothing is made current).
``inject(headers, ...)`` is the one-shot form for
fire-and-forget publishing: it returns the headers with a zero-length PRODUCER span already ended.

Consumer side::

    with messaging.consume(headers, system="rabbitmq", destination="orders") as message:
        handle(body)                    # async handlers: ``async with messaging.consume(...)``

``consume`` reads those headers (mapping or ``(key, value)`` pairs; str or bytes), opens a CONSUMER
span ``"process orders"`` as a child of the producer's span, makes the message's correlation ID
current for the handler's logs and outgoing calls, and records the queue wait (consume start minus
publish time) as ``tracekit.queue_wait_ms`` and in ``messaging`` metrics. A handler's exception
marks the span as failed and propagates unchanged; a handler that gives the message back to the
broker calls ``message.note_rejected("nack", requeue)``, which fails the span with
``MessageRejected`` (called after the block: a failed ``nack <destination>`` span under it).
``consume_batch`` opens one span linked to every message. Bad headers are ignored (new trace,
rate-limited warning without the value). In correlation-only mode no spans or metrics are made;
IDs and headers still travel.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from time import perf_counter
from types import TracebackType
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import config, correlation, propagation, semconv
from tracekit._messaging.consumer import (
    Delivery,
    MessageRejected,
    Target,
    current_delivery,
    put_back_left,
    start_held,
)
from tracekit._messaging.headers import (
    PUBLISH_TIME_HEADER,
    Headers,
    Reading,
    drop_left_by_last_publish,
    drop_other_spellings,
    drop_replaced,
    reading_for,
    remember_left,
)
from tracekit._messaging.received import Received, correlation_id_in
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

__all__ = [
    "PUBLISH_TIME_HEADER",
    "Delivery",
    "HeldDeliveries",
    "MessageRejected",
    "Publication",
    "Publishing",
    "consume",
    "consume_batch",
    "correlation_property_of",
    "current_delivery",
    "inject",
    "publish",
    "publishing",
]

# The caller's own message, where an integration sends tracekit's headers beside it (Kafka
# headers, stream fields, SQS attributes, AMQP properties): its fields (a mapping or ``(key,
# value)`` pairs) and the properties whose correlation property
# (``correlation_property_of``) it may carry, either None. The property is read only where no
# correlation ID is current: a publish inside a request does not pay for it.
_CallersMessage = tuple[Any, object]

# Set while a publish block runs, so an instrumented client below it does not publish twice.
# (A context variable of its own: correlation-only mode then attaches no OpenTelemetry context.)
_publishing_now: ContextVar[bool] = ContextVar("tracekit_messaging_publishing", default=False)


class Publication:
    """The message being published inside a ``publish`` block."""

    def __init__(self, span: trace.Span | None = None) -> None:
        self.span = span
        self._started = perf_counter()
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


def publishing() -> bool:
    """True inside a ``publish`` block: instrumented clients then leave the message alone."""
    return _publishing_now.get()


def publish(
    headers: MutableMapping[str, Any],
    *,
    system: str,
    destination: str,
    message_id: object = None,
    operation_name: str = "send",
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> Publishing:
    """Trace publishing one message: wrap the broker call; see the module documentation."""
    return Publishing(
        headers, system, destination, message_id, operation_name, attributes, tracer_provider,
        registry,
    )  # fmt: skip


class Publishing:
    """What ``publish`` returns: ``with`` it around the broker call (it yields a ``Publication``).

    A class rather than a generator-based context manager: this runs once per message.
    """

    __slots__ = (
        "_call", "_callers", "_ended", "_fresh", "_kept_open", "_publication", "_settled_later",
        "_started",
    )  # fmt: skip

    def __init__(self, *call: Any) -> None:
        self._call = call
        self._fresh = False  # see _publish_own
        self._callers: _CallersMessage | None = None  # see _beside
        self._publication: Publication | None = None
        self._started: _Started | None = None
        self._kept_open = False
        self._settled_later = False
        self._ended = False

    def __enter__(self) -> Publication:
        if current_delivery() is not None:  # (none outside a handler: no call to guard)
            safe("messaging publish start", put_back_left)
        ctx = otel_context.get_current()
        if _publishing_now.get() or instrumentation_suppressed(context=ctx):
            return Publication()
        try:
            publication, started = _start_publish(ctx, self._fresh, self._callers, *self._call)
        except Exception as error:
            report_once("messaging publish start", error)
            return Publication()
        self._publication, self._started = publication, started
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
        (see ``_write_headers``)."""
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
        started, publication = self._started, self._publication
        if started is None or publication is None or self._ended:
            return
        self._ended = True  # (the block's context token stays in _started for __exit__)
        try:
            _end_publish(publication, started.options, self._call, error)
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


def _publish_own(
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


def _publish_alone(
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
    """What ``_publish_alone`` returns: ``with`` it around the broker call."""

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
            _write_headers(self._headers, ctx, self._options, fresh=True, callers=self._callers)
        except Exception as error:
            report_once("messaging publish start", error)
            return
        self._token = _publishing_now.set(True)

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        if self._token is not None:
            _publishing_now.reset(self._token)


def inject(
    headers: MutableMapping[str, Any],
    *,
    system: str,
    destination: str,
    message_id: object = None,
    operation_name: str = "send",
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> MutableMapping[str, Any]:
    """Write trace context, correlation ID and publish time into ``headers`` and return them.

    The one-shot form of ``publish`` for fire-and-forget sends: its PRODUCER span ends at once.
    """
    with publish(
        headers,
        system=system,
        destination=destination,
        message_id=message_id,
        operation_name=operation_name,
        attributes=attributes,
        tracer_provider=tracer_provider,
        registry=registry,
    ):
        pass
    return headers


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
        _publishing_now.reset(started.publishing)
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
        _write_headers(headers, ctx, opts, fresh=fresh, callers=callers)
        return Publication(), _Started(None, _publishing_now.set(True), opts)
    span_attributes = base_attributes(
        system, destination, "send", operation_name, message_id, attributes
    )
    cid = correlation.correlation_id()
    if cid is not None:
        span_attributes[semconv.CORRELATION_ID] = cid
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
    sent = _write_headers(headers, inside, opts, fresh=fresh, known=known, callers=callers)
    if cid is None and sent is not None:  # the message's own ID, made or the caller's
        span.set_attribute(semconv.CORRELATION_ID, sent)
    token = otel_context.attach(inside)
    return Publication(span), _Started(token, _publishing_now.set(True), opts, inside)


def _write_headers(
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


def consume(
    headers: Headers | None,
    *,
    system: str,
    destination: str,
    message_id: object = None,
    correlation_property: object = None,
    operation_name: str = "process",
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    due_unix_nano: int | None = None,
) -> Delivery:
    """Handle one message inside a CONSUMER span: ``with consume(...)`` or ``async with``.

    ``headers`` is the message's header mapping or list of ``(key, value)`` pairs.
    ``correlation_property`` is the message property a producer without tracekit may have set
    (for AMQP, ``properties.correlation_id``; ``correlation_property_of(properties)`` reads the
    configured one): it is the correlation ID when the headers carry none. ``attributes`` go on
    the span; a ``messaging.destination.template`` among them (``semconv``) names it in place of
    ``destination``, which publishers may choose (a pattern subscription's channels).
    ``due_unix_nano``: for a delayed message, when its producer asked for it to be delivered.
    The span's queue wait is still counted from the publish, with the part asked for as
    ``tracekit.scheduled_delay_ms``; the queue-wait metric counts only the wait past it.
    """
    target = Target.make(system, destination, operation_name, attributes, tracer_provider, registry)
    if target is None:
        return Delivery([], None, batch=False)
    received = Received.parse(headers, correlation_property, message_id, target.options)
    received.due_time_ns = due_unix_nano
    return Delivery((received,), target, batch=False)


def _consume_alone(
    headers: Headers | None, properties: object, system: str, destination: str
) -> Delivery | None:
    """``consume`` in correlation-only mode, for an integration holding the message's
    ``properties`` (pika's): no span to name or describe, and the correlation property is
    read only for a message whose headers bring no ID. None in full mode, or when the options
    cannot be read: use ``consume``."""
    try:
        options = _state.current_options()
    except Exception:  # (consume reports it)
        return None
    if not options.correlation_only:
        return None
    target = Target.make(system, destination, "process", None, None, None)
    received = Received.parse(headers, None, None, options)
    try:
        if received.correlation_id is None:
            prop = correlation_property_of(properties, options)
            received.correlation_id = correlation.first_valid([prop]) if prop is not None else None
    except Exception as error:
        report_once("messaging header extraction", error)
        received = Received.empty(None)
    return Delivery((received,), target, batch=False)


def consume_batch(
    messages: Iterable[Headers | None],
    *,
    system: str,
    destination: str,
    correlation_properties: Iterable[object] | None = None,
    operation_name: str = "process",
    attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
    due_unix_nanos: Iterable[int | None] | None = None,
) -> Delivery:
    """Handle a batch inside one CONSUMER span linked to every message's producer.

    The span starts a new trace; each link carries its message's correlation ID and queue wait.
    The handler runs with the first message's correlation ID; ``tracekit.queue_wait_ms`` is the
    longest wait in the batch. ``correlation_properties`` and ``due_unix_nanos`` (each delayed
    message's due time, None for one due at once, as ``consume``'s ``due_unix_nano``: the
    queue-wait metric counts only the wait past it) align with ``messages``. All may be any
    iterable (a list, a generator), read once.
    """
    target = Target.make(system, destination, operation_name, attributes, tracer_provider, registry)
    if target is None:
        return Delivery([], None, batch=True)
    messages = list(messages)  # a generator has no length, and is read once
    properties = list(correlation_properties or ())
    properties += [None] * (len(messages) - len(properties))
    received = [
        Received.parse(headers, prop, None, target.options)
        for headers, prop in zip(messages, properties, strict=False)
    ]
    for message, due in zip(received, due_unix_nanos or (), strict=False):
        message.due_time_ns = due
    return Delivery(received, target, batch=True)


def _take(held: dict[Any, Delivery], key: object, exiting: bool) -> Delivery | None:
    """Take ``held[key]`` to end it, unless the interpreter is ``exiting`` and a thread other
    than this one, still running, is handling it."""
    delivery = held.get(key)
    if delivery is None or (exiting and _handled_elsewhere(delivery)):
        return None
    return held.pop(key, None)


def _handled_elsewhere(delivery: Delivery) -> bool:
    """Whether a thread other than this one, still running, holds ``delivery``."""
    holder = delivery.holder
    return holder is not None and holder is not threading.current_thread() and holder.is_alive()


def _end_awaiting(end_all: Callable[[], None]) -> None:
    """``end_all`` the sends still awaiting their outcome (a publisher confirm, a delivery
    report), in a thread of its own waited for ``state.SPAN_ENDS_BOUND_S`` at most: a thread
    parked inside one such span's lock (``set_attribute`` reading a lazy sequence, or the one
    SIGTERM interrupted) would make that span's end, and the stop, wait for it."""
    _state.bounded(lambda: safe("messaging awaiting outcome", end_all), "tracekit-awaiting")


def _end_all(
    deliveries: list[Delivery], free: Callable[[trace.Span], bool] = lambda _: True
) -> None:
    """End each delivery (taken from its ``HeldDeliveries``) whose span, if any, is ``free``;
    the others are left open (their span lost)."""
    for delivery in deliveries:
        if delivery.span is None or free(delivery.span):
            safe("messaging consume end", delivery.end)


class HeldDeliveries:
    """At most one open ``Delivery`` per consumer object, for pull APIs without a handler block.

    A consume generator, ``basic_get`` or ``poll()`` returns a message and the handler runs after
    the call returns; its CONSUMER span must stay open until the consumer fetches the next
    message (or closes). ``hold(consumer, delivery)`` ends the consumer's previous delivery and
    starts this one; ``release(consumer)`` ends it. When consumers take turns in one thread (two
    channels polled in turn), the message fetched last is the current one; once the last held
    delivery ends, what was current before the first is back. A consumer collected without
    being closed (a worker function that returned) puts back what its delivery made current as
    it goes; the span is recorded at the next ``hold`` or ``release`` (or ``release_all``).
    """

    def __init__(self) -> None:
        # Keyed by a weak reference whose callback leaves the delivery when the consumer is
        # collected: its message's correlation ID must not stay current in the thread.
        self._weak: dict[weakref.ref[object], Delivery] = {}
        self._by_id: dict[int, Delivery] = {}  # consumers that cannot be weakly referenced
        # No lock: an allocation under it could run a collected object's __del__ that closes a
        # channel, which releases here again. Single dict operations are atomic; release_all
        # counts its runs so that a hold racing it ends what it stored.
        self._releases_all = 0
        # Span-ending steps of deliveries whose consumers were collected: run at the next hold
        # or release, never in the collection (a SimpleQueue: safe to put to from there).
        self._to_end: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def hold(self, consumer: object, delivery: Delivery) -> Delivery:
        """End ``consumer``'s open delivery, then start and keep ``delivery``."""
        self.release(consumer)
        releases_all = self._releases_all
        delivery.holder = threading.current_thread()
        start_held(delivery)
        try:
            self._weak[weakref.ref(consumer, self._collected)] = delivery
        except TypeError:
            self._by_id[id(consumer)] = delivery
        if self._releases_all != releases_all:  # uninstrumented meanwhile: end it too
            self.release(consumer)
        return delivery

    def release_all(self) -> None:
        """End every open delivery, the latest first (instrumentation being removed).

        A delivery held in another thread or task gets its span ended, but only that thread
        can put its own context back: there the message's ID stays current until it next
        consumes through tracekit, or ends. At the interpreter's exit, a delivery that another
        thread still running holds is left open: a daemon thread's handler, which the exit
        stops where it is, recorded as interrupted once the exit hooks are done
        (``unfinished.record_all``), not as handled. Otherwise the deliveries other threads
        hold are ended in a thread of their own, waited for ``state.SPAN_ENDS_BOUND_S``.
        """
        self._releases_all += 1
        while True:
            try:  # another thread may hold or release meanwhile: take a stable snapshot
                consumers, ids = [*self._weak.keys()], [*self._by_id]
                break
            except RuntimeError:
                continue
        exiting = _state.exiting()
        ended = [_take(self._weak, ref, exiting) for ref in consumers] + [
            _take(self._by_id, i, exiting) for i in ids
        ]
        here: list[Delivery] = []
        elsewhere: list[Delivery] = []
        for delivery in reversed(ended):
            if delivery is not None:  # popped here, so ended once, here
                (elsewhere if _handled_elsewhere(delivery) else here).append(delivery)
        _end_all(here)
        if elsewhere:
            # That thread may be parked inside its span's lock (set_attribute reading a lazy
            # sequence): the span's end would wait for it, and the stop with it, for ever. Where
            # no thread may start (Python 3.12.0 and 3.12.1 at exit) only the lock check bounds it.
            _state.bounded(lambda: _end_all(elsewhere, _unfinished.free), "tracekit-release")
        self._end_collected()

    def release(self, consumer: object, error: BaseException | None = None) -> None:
        """End ``consumer``'s open delivery, if any. Called as a consumer fetches again: first,
        what a delivery ended from another thread (a shutdown closing the consumer there) left
        current in this one is put back, even if the fetch then fails."""
        if current_delivery() is not None:  # (none outside a handler: no call to guard)
            safe("messaging consume end", put_back_left)
        try:
            delivery = self._weak.pop(weakref.ref(consumer), None)
        except TypeError:
            delivery = None
        delivery = delivery or self._by_id.pop(id(consumer), None)
        if delivery is not None:
            delivery.end(error)
        if not self._to_end.empty():
            self._end_collected()

    def release_then_call(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        """A wrapt wrapper for a consumer's call that means it is done with its message (its
        ``close()``, its next read): ``release(instance)``, then the call."""
        self.release(instance)
        return wrapped(*args, **kwargs)

    def held_by(self, consumer: object) -> Delivery | None:
        """``consumer``'s open delivery, if any."""
        try:
            delivery = self._weak.get(weakref.ref(consumer))
        except TypeError:
            delivery = None
        return delivery or self._by_id.get(id(consumer))

    def _collected(self, consumer: weakref.ref[object]) -> None:
        """The consumer was collected with its delivery open: what the delivery made current
        is put back now (when collected in the thread that held it); its span ends later."""
        delivery = self._weak.pop(consumer, None)
        if delivery is not None:
            self._to_end.put(delivery.leave())

    def _end_collected(self) -> None:
        while True:
            try:
                end_span = self._to_end.get_nowait()
            except queue.Empty:  # (another thread may take the last one first)
                return
            safe("messaging consume end", end_span)
