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

The machinery behind these lives in ``tracekit._messaging``: ``producer`` (the PRODUCER span),
``consumer`` (the CONSUMER span), ``received`` (what a message's headers say) and ``held`` (the
deliveries of pull APIs, ``HeldDeliveries``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from tracekit import correlation
from tracekit._messaging.consumer import (
    Delivery,
    MessageRejected,
    Target,
    current_delivery,
)
from tracekit._messaging.headers import PUBLISH_TIME_HEADER, Headers
from tracekit._messaging.held import HeldDeliveries
from tracekit._messaging.producer import Publication, Publishing, publishing_now
from tracekit._messaging.received import Received, correlation_property_of
from tracekit._runtime import state as _state
from tracekit._runtime.guard import report_once, safe

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


def publishing() -> bool:
    """True inside a ``publish`` block: instrumented clients then leave the message alone."""
    return publishing_now.get()


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


def _end_awaiting(end_all: Callable[[], None]) -> None:
    """``end_all`` the sends still awaiting their outcome (a publisher confirm, a delivery
    report), in a thread of its own waited for ``state.SPAN_ENDS_BOUND_S`` at most: a thread
    parked inside one such span's lock (``set_attribute`` reading a lazy sequence, or the one
    SIGTERM interrupted) would make that span's end, and the stop, wait for it."""
    _state.bounded(lambda: safe("messaging awaiting outcome", end_all), "tracekit-awaiting")
