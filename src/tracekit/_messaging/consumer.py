"""The consumer side of a queue hop: ``Delivery``, the CONSUMER span around one handler.

``tracekit.messaging.consume`` and ``consume_batch`` build a ``Delivery`` from what each message's
headers say (``_messaging.received``); this module holds the span, the context it makes current
and puts back, and the metrics it records. What the producer side shares with it lives in
``_messaging.spans`` (attributes, the tracer) and ``_messaging.headers`` (which fields are read
and written).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from time import perf_counter
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import correlation, propagation, semconv
from tracekit._messaging.received import NO_CONTEXT, Received
from tracekit._messaging.spans import base_attributes, record_failed_after, tracer_for
from tracekit._runtime import state as _state
from tracekit._runtime import unfinished
from tracekit._runtime.guard import error_type, mark_failed, report_once
from tracekit.metrics import MessagingMetrics

_current: ContextVar[Delivery | None] = ContextVar("tracekit_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The delivery whose handler is running (in this thread or task), if any."""
    return _current.get()


class MessageRejected(Exception):
    """The consumer gave its message back to the broker (a nack or reject) instead of handling
    it: how its span ends, failed, saying whether the broker requeues the message."""


_Tokens = tuple[Token[str | None], Token[otel_context.Context] | None, Token["Delivery | None"]]


class Delivery:
    """The handling of one message (or one batch): what ``consume`` and ``consume_batch`` return.

    Use it as ``with`` or ``async with``; integrations whose handler is not a block (a consume
    generator) call ``start()`` and ``end(error)`` themselves. Inside, ``correlation_id``,
    ``span`` and ``queue_wait_ms`` describe the message.
    """

    # What its span names the destination by, and the metrics it records to: looked up once,
    # as the span starts (set there and in _record_waits), for its metrics as it ends.
    _named_by = ""
    _metrics: MessagingMetrics | None = None
    # The thread handling it, for a pull API's delivery (``HeldDeliveries.hold``).
    holder: threading.Thread | None = None

    def __init__(
        self,
        received: Sequence[Received],
        target: Target | None,
        *,
        batch: bool,
    ) -> None:
        self._received = received
        self._target = target  # None when tracekit failed to set up: the handler runs bare
        self._batch = batch
        self.correlation_id: str | None = None
        self.span: trace.Span | None = None
        self.queue_wait_ms: float | None = None
        self._tokens: _Tokens | None = None
        # Pull APIs (HeldDeliveries): deliveries of consumers that take turns share what to
        # restore when the last of them ends, the context before the first (see _end).
        self._held = False
        self._restores: list[_Tokens | None] | None = None
        # Held deliveries that began taking turns inside this one's handler (a callback that
        # calls basic_get): if this ends first, they restore what was current before this one.
        self._nested: list[_Tokens | None] | None = None
        self._below: Delivery | None = None  # what was current when this one started
        self._started = 0.0
        self._failure: BaseException | None = None  # see fail()
        self._context: otel_context.Context | None = None  # the one this delivery attached
        # A held delivery ended from another context (uninstrumented from another thread): its
        # tokens, for its own context to put back what it made current (see _put_back).
        self._left: _Tokens | None = None
        # The transport's handle on the message (pika: its channel and delivery tag), set by an
        # integration that can match a nack or reject to it; None where it cannot be settled.
        self.settle_key: object = None
        self._ended = False  # its span ended (or is about to: see leave), never to change again

    def start(self) -> Delivery:
        """Open the CONSUMER span and make the message's correlation ID and context current."""
        try:
            self._start()
        except Exception as failure:
            report_once("messaging consume start", failure)
        return self

    def _count_under(self, destinations: Sequence[str]) -> Delivery:
        """Before it starts: count each message of a batch in the metrics under its own
        destination (in order), not under the joined name of several that the span has. A
        Kafka poll returns records of every assigned topic at once: counted under
        ``"orders,payments"``, neither topic showed a message consumed, and the dashboard's
        publish-minus-process backlog of each grew for ever."""
        for message, destination in zip(self._received, destinations, strict=False):
            message.destination = destination
        return self

    def fail(self, error: BaseException) -> None:
        """Note that handling failed with ``error`` before the delivery ends: a handler block
        inside a delivery that a pull API ends later (aio-pika's ``message.process()`` in a
        queue iterator's loop). The span ends failed, with the first error noted."""
        if self._failure is None:
            self._failure = error

    @property
    def is_open(self) -> bool:
        """Started and not yet ended (a task the handler spawned may outlive it)."""
        return self._tokens is not None

    def note_rejected(self, operation: str, requeue: bool) -> None:
        """Note that the consumer gave the message back with ``operation`` (a nack or reject):
        the span ends failed with ``MessageRejected``, unless the handler fails otherwise.

        Once the delivery has ended (a task the handler handed the message to rejects it
        later) its span can no longer change: the rejection is then a span of its own under
        it, ``"<operation> <destination>"`` (``messaging.operation.type`` ``settle``), failed.
        """
        rejected = MessageRejected(f"{operation}, {'requeued' if requeue else 'not requeued'}")
        if not self._ended:
            self.fail(rejected)
            return
        try:
            self._record_late_rejection(operation, rejected)
        except Exception as failure:
            report_once("messaging late rejection", failure)

    def end(self, error: BaseException | None = None) -> None:
        """Close the span (failed if ``error``, or if ``fail`` was called) and restore the
        consumer's previous context."""
        try:
            self._end(error)
        except Exception as failure:
            report_once("messaging consume end", failure)

    def __enter__(self) -> Delivery:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(error)

    async def __aenter__(self) -> Delivery:
        return self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(error)

    def _start(self) -> None:
        target, received = self._target, self._received
        if self._tokens is not None or target is None or not received:
            return
        now_ns = time.time_ns()
        self._started = perf_counter()
        if self._batch:
            self.correlation_id, self.queue_wait_ms = _batch_id_and_wait(received, now_ns)
        else:
            first = received[0]
            self.correlation_id = first.correlation_id or correlation.new_correlation_id()
            self.queue_wait_ms = first.wait_ms(now_ns)
        put_back_left()
        below = _current.get()
        self._below = below
        if self._held and below is not None and below._held and below._tokens is not None:
            self._restores = below._restores
        # Each token is kept as soon as it exists: whatever fails after it, end() restores it.
        cid_token = correlation._set_checked(self.correlation_id)  # read valid, or new
        delivery_token = _current.set(self)
        self._tokens = (cid_token, None, delivery_token)
        if not target.options.correlation_only:
            self._tokens = (cid_token, self._start_span(target, now_ns), delivery_token)
        else:
            self._tokens = (cid_token, self._attach_id_alone(), delivery_token)
        if self._held and self._restores is None:
            self._restores = [self._tokens]  # the first of the held deliveries taking turns
            if below is not None and not below._held:
                below._nested = self._restores
        if self.span is not None:
            self._record_waits(target, now_ns)

    def _attach_id_alone(self) -> Token[otel_context.Context]:
        """Correlation-only mode has no span to carry the ID: it rides alone in OpenTelemetry's
        context, for what carries only that into a pool thread (OpenTelemetry's threading
        instrumentation), as it rides beside the span in full mode."""
        current = otel_context.get_current()
        self._context = otel_context.Context(
            {**current, correlation.CONTEXT_KEY: self.correlation_id}
        )
        return otel_context.attach(self._context)

    def _start_span(self, target: Target, now_ns: int) -> Token[otel_context.Context]:
        received = self._received
        parent = NO_CONTEXT if self._batch else received[0].context
        attributes, tracer, links = self._attributes(target, now_ns), target.tracer, None
        self._named_by = named_by = target.named_by
        name = f"{target.operation_name} {named_by}"
        if self._batch:
            links, dropped = _first_links(received, now_ns, _link_limit(tracer))
            if dropped:
                attributes[semconv.LINKS_DROPPED] = dropped
        else:  # a decision the producer left to this hop: its sampler's, for this span
            parent = propagation.decide_deferred(
                parent, target.tracer_provider, name, SpanKind.CONSUMER, attributes
            )
        self.span = span = tracer.start_span(
            name,
            parent,
            SpanKind.CONSUMER,
            attributes,
            links,
            now_ns,
        )
        unfinished.track(span)  # recorded if SIGTERM's default action ends the process first
        # One new Context holding the span (what trace.set_span_in_context builds).
        self._context = otel_context.Context(
            {
                **parent,
                propagation.CURRENT_SPAN_KEY: span,
                correlation.CONTEXT_KEY: self.correlation_id,
            }
        )
        return otel_context.attach(self._context)

    def _record_waits(self, target: Target, now_ns: int) -> None:
        self._metrics = metrics = target.metrics()
        named_by = self._named_by
        for message in self._received:
            wait_ms = message.overdue_ms(now_ns)
            if wait_ms is not None:
                where = message.destination or named_by
                metrics.waited(target.system, where, wait_ms / 1e3, self.span)

    def _attributes(self, target: Target, now_ns: int) -> dict[str, Any]:
        first = self._received[0]
        attributes = base_attributes(
            target.system,
            target.destination,
            "process",
            target.operation_name,
            None if self._batch else first.message_id,
            target.attributes,
        )
        attributes[semconv.CORRELATION_ID] = self.correlation_id
        if self._batch:
            attributes[semconv.MESSAGING_BATCH_MESSAGE_COUNT] = len(self._received)
        elif first.publish_time_ns is not None:
            attributes[semconv.PUBLISH_TIME] = first.publish_time_ns
        if self.queue_wait_ms is not None:
            attributes[semconv.QUEUE_WAIT_MS] = round(self.queue_wait_ms, 3)
        scheduled_ms = None if self._batch else first.scheduled_ms(now_ns)
        if scheduled_ms is not None:
            attributes[semconv.SCHEDULED_DELAY_MS] = round(scheduled_ms, 3)
        return attributes

    def _end(self, error: BaseException | None) -> None:
        tokens = self._tokens
        if tokens is None:
            return
        self._tokens, self._ended = None, True
        try:
            if self.span is not None and unfinished.claim(self.span):
                self._end_span(self.span, error if error is not None else self._failure)
        finally:
            self._leave(tokens)

    def leave(self) -> Callable[[], None]:
        """Put back at once what this delivery made current, and return the step that ends its
        span, to be run later: a consumer collected with its delivery open may be collected
        inside any code, holding locks that ending a span and counting it would take again."""
        tokens, span = self._tokens, self.span
        if tokens is None:
            return _nothing
        self._tokens, self._ended = None, True
        try:
            self._leave(tokens)
        except Exception as failure:
            report_once("messaging consume end", failure)
        if span is None or not unfinished.claim(span):
            return _nothing
        return lambda: self._end_span(span, self._failure)

    def _leave(self, tokens: _Tokens) -> None:
        if _current.get() is self:
            self._restore_before(tokens)
        # Otherwise a later delivery is current (pull consumers take turns, or this one
        # ends in another context): what was current before this one is stale, never
        # restored; the later delivery restores the context when it ends.
        elif self._nested is not None and self._nested[0] is not None:
            self._leave_to_nested(self._nested, tokens)
        elif self._held:  # maybe ended from another thread: see _put_back
            self._left = tokens
        self._below = None

    def _restore_before(self, tokens: _Tokens) -> None:
        """Put back what was current before this delivery, which is still the current one."""
        restores = self._restores
        ended = self if self._held else None  # see _restore
        if restores is None:
            _restore(tokens, ended)
        else:  # the first held delivery's tokens, used once: the context before it
            first, restores[0] = restores[0], None
            if first is not None:
                _restore(first, ended)

    def _leave_to_nested(self, nested: list[_Tokens | None], tokens: _Tokens) -> None:
        """Leave ``tokens`` to the held deliveries begun in this handler, still open: when the
        last of them ends, what was current before this one is back, not this ended one; and
        if that is a handler too, which ends before them, what was before it."""
        nested[0] = tokens
        below = self._below
        if (
            below is not None
            and not below._held
            and below._tokens is not None
            and (below._nested is None or below._nested[0] is None)
        ):  # (never over a chain of its own still open: another task's, say)
            below._nested = nested

    def _put_back(self) -> None:
        """Found current at the start of a delivery, this one has ended in another context
        (``HeldDeliveries.release_all`` from another thread): what it made current stayed
        current here, and is put back now (for a chain taking turns, what came before its
        first)."""
        restores = self._restores
        first = restores[0] if restores is not None else None
        tokens = first if first is not None else self._left
        if tokens is not None and _restore(tokens):
            self._left = None
            if restores is not None:
                restores[0] = None

    def _record_late_rejection(self, operation: str, rejected: MessageRejected) -> None:
        """A zero-length settle span (CLIENT, as OpenTelemetry's messaging conventions make
        settlement) under this delivery's ended span, failed with ``rejected``. Metrics are
        left as they are: the message was counted handled when its span ended."""
        target, span = self._target, self.span
        if target is None or span is None:
            return
        message_id = None if self._batch else self._received[0].message_id
        attributes = base_attributes(
            target.system, target.destination, "settle", operation, message_id, target.attributes
        )
        attributes[semconv.CORRELATION_ID] = self.correlation_id
        name = f"{operation} {target.named_by}"
        record_failed_after(target.tracer, span, name, attributes, rejected)

    def _end_span(self, span: trace.Span, error: BaseException | None) -> None:
        if error is not None:
            mark_failed(span, error)
        span.end()
        target = self._target
        assert target is not None
        failed_by = error_type(error) if error is not None else None
        # One handler call for every message received: each is observed with an equal share
        # of its time, so the count is per message and the sum is the handler's time.
        share = (perf_counter() - self._started) / len(self._received)
        metrics = self._metrics
        if metrics is None:  # (the look-up failed as the span started: reported then)
            metrics = target.metrics()
        named_by = self._named_by
        for message in self._received:
            where = message.destination or named_by
            metrics.processed(target.system, where, share, span, failed_by)


def _nothing() -> None:
    pass


def put_back_left() -> None:
    """Put back what a delivery ended in another thread left current in this one (its consumer
    collected there, or uninstrumented from there): before a consume or a publish here takes
    the context, which must not be that message's any more."""
    left = _current.get()
    if left is not None and left._left is not None:
        left._put_back()


def _first_links(
    received: Sequence[Received], now_ns: int, limit: int | None
) -> tuple[list[Link], int]:
    """A batch's links to its messages' producers, for a span that keeps ``limit`` (None: every
    one), and how many of them it will drop. Past its limit the SDK keeps a span's last links,
    so a large batch lost its first messages' hops, the first one's too, whose correlation ID
    the handler runs with. The links are handed over with the first ``limit`` at the end: the
    SDK keeps those, in the batch's order, and still counts the others as dropped (OTLP's
    ``dropped_links_count``)."""
    links = [message.link(now_ns) for message in received if message.has_parent]
    if limit is None or len(links) <= limit:
        return links, 0
    return links[limit:] + links[:limit], len(links) - limit


def _link_limit(tracer: trace.Tracer) -> int | None:
    """How many links a span of ``tracer`` keeps: the SDK's ``SpanLimits.max_links`` (tracekit's
    10,000, ``OTEL_SPAN_LINK_COUNT_LIMIT``, or the limits of a provider of the user's own),
    which its tracer holds and no public API gives; None when unlimited or not the SDK's."""
    limit = getattr(getattr(tracer, "_span_limits", None), "max_links", None)
    return limit if type(limit) is int and limit >= 0 else None


def start_held(delivery: Delivery) -> None:
    """Start a delivery that a pull API holds open after handing its message back (see
    ``messaging.HeldDeliveries``): it may end while another consumer's delivery is current."""
    delivery._held = True
    delivery.start()


def _restore(tokens: _Tokens, held: Delivery | None = None) -> bool:
    """Put back what was current before a delivery started (only called in its context).

    ``held``: the pull API's delivery ending now, in a later scope than it started in. The
    host may have put back its own values since (a web request that took the message has
    ended; a span around the poll has closed): each one still the delivery's is restored,
    one the host has replaced is the host's, as what came before the delivery may be a
    finished request's. (A delivery around a handler block always ends inside it.)
    False when called in another context than the delivery's: nothing is put back.
    """
    cid_token, context_token, delivery_token = tokens
    try:
        _current.reset(delivery_token)
    except ValueError:
        return False  # another context: the other two tokens were made with this one
    if context_token is not None and (held is None or otel_context.get_current() is held._context):
        otel_context.detach(context_token)
    if held is None or correlation.correlation_id() is held.correlation_id:
        correlation.reset_correlation_id(cid_token)
    return True


def _batch_id_and_wait(received: Sequence[Received], now_ns: int) -> tuple[str, float | None]:
    """The first message's correlation ID (new if none has one) and the longest wait."""
    cid = next((r.correlation_id for r in received if r.correlation_id), None)
    waits = [w for w in (r.wait_ms(now_ns) for r in received) if w is not None]
    return cid or correlation.new_correlation_id(), max(waits) if waits else None


class Target:
    """Where messages are consumed, and the options, tracer and metrics that apply there."""

    __slots__ = (
        "_registry", "attributes", "destination", "operation_name", "options", "system",
        "tracer_provider",
    )  # fmt: skip

    def __init__(
        self,
        system: str,
        destination: str,
        operation_name: str,
        attributes: Mapping[str, Any] | None,
        tracer_provider: TracerProvider | None,
        registry: CollectorRegistry | None,
    ) -> None:
        self.system = system
        self.destination = destination
        self.operation_name = operation_name
        self.attributes = attributes
        self.options = _state.current_options()
        self.tracer_provider = tracer_provider  # (None: the global one)
        self._registry = registry

    @property
    def tracer(self) -> trace.Tracer:
        """tracekit's messaging tracer of the provider given (correlation-only mode needs none:
        the global provider is then not even looked up, an environment read each time)."""
        return tracer_for(self.tracer_provider)

    @classmethod
    def make(
        cls,
        system: str,
        destination: str,
        operation_name: str,
        attributes: Mapping[str, Any] | None,
        tracer_provider: TracerProvider | None,
        registry: CollectorRegistry | None,
    ) -> Target | None:
        """The target, or None when tracekit cannot set up (bad configuration): reported once."""
        try:
            return cls(system, destination, operation_name, attributes, tracer_provider, registry)
        except Exception as error:
            report_once("messaging consume setup", error)
            return None

    @property
    def named_by(self) -> str:
        """What spans are named by, and metrics labelled with: the destination's template where
        the instrumentation gives one (a pattern subscription's pattern; the channels publishers
        choose would make a span name and a series each), else the destination."""
        template = (
            self.attributes.get(semconv.MESSAGING_DESTINATION_TEMPLATE) if self.attributes else None
        )
        return template if isinstance(template, str) else self.destination

    def metrics(self) -> MessagingMetrics:
        return MessagingMetrics.get(
            self.options.service_name, self.options.service_version, self._registry
        )
