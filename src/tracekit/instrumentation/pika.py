"""pika (RabbitMQ): PRODUCER spans on publish, CONSUMER spans around handlers.

``BlockingChannel`` (``BlockingConnection``) and the callback-style ``pika.channel.Channel`` of
``SelectConnection``, ``AsyncioConnection`` and the other asynchronous adapters:

- ``basic_publish`` runs inside ``messaging.publish``: trace context, correlation ID and publish
  time go into the headers of a copy of the caller's ``properties`` (a new ``BasicProperties``
  when none is given); the caller's object is left as it was.
  The destination is the exchange, or the routing key (the queue) on the default exchange.
  (A ``BlockingChannel`` publishes through a ``Channel`` beneath it: that one call is one hop.)
- Publisher confirms on a ``Channel`` (``confirm_delivery(callback)``): the broker's ack or nack
  comes after ``basic_publish`` returned, so the span keeps the call's timing and is recorded
  when it comes, failed on a nack (pika's ``NackError``) or when a ``mandatory`` message comes
  back (``UnroutableError``; its ``Basic.Return`` is matched by the trace context in its
  headers), as a ``BlockingChannel`` raises them. If its channel closes first, the span is
  recorded then, outcome unknown, failed with the reason unless the app closed it; so is the
  oldest of more than 10,000 waiting on one channel, and every one left when tracekit is
  uninstrumented. (``confirm_delivery`` called while the channel awaits the answer to another
  call is not followed: pika sends it after that answer, and messages published meanwhile go
  unconfirmed, unnumbered.)
- ``basic_consume`` callbacks run inside ``messaging.consume``: the span covers the callback.
  If the channel closes under the callback (by the broker, or with its connection lost, as a
  pika call in it finds), the span ends failed with the reason, though the callback catches
  pika's error (a message not acked yet is delivered again).

``BlockingChannel`` only (the asynchronous ``Channel.basic_get`` takes a callback; not traced):
- ``basic_get`` and the ``consume()`` generator hand a message back to the caller, so the span
  stays open while the caller handles it: it ends when the same channel fetches the next message
  (next ``basic_get``; the generator: when the caller asks for its next item, before pika
  waits for one), when the generator stops or is closed, or when the channel closes (closed
  by the broker or with its connection lost, the span ends failed with the reason: the
  message can no longer be acked). An exception leaving the channel's or the connection's
  ``with`` block ends it failed. (Not one leaving ``for ... in channel.consume(...)`` itself:
  Python closes that loop's generator first, as it does after ``break``, so the span has
  ended.)

A ``basic_nack`` or ``basic_reject`` of a message whose span is open (its callback's, the one
its ``BlockingChannel`` holds) fails that span with ``messaging.MessageRejected``, saying whether
the broker requeues it. One a worker thread hands to the connection's thread with
``add_callback_threadsafe`` (``BlockingConnection``'s, ``SelectConnection``'s ioloop's) after
the span ended is matched to its message when the worker runs in the callback's context: it is
a failed settle span of its own under the message's span.

Messages without tracekit headers start a new trace and take the correlation ID from the
configured property (``TRACEKIT_MESSAGE_CORRELATION_PROPERTY``, default AMQP ``correlation_id``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from tracekit import messaging
from tracekit._messaging import amqp, producer
from tracekit._messaging.amqp import ROUTING_KEY, SYSTEM
from tracekit._messaging.received import Received
from tracekit._runtime import state
from tracekit._runtime.guard import report_once, safe
from tracekit.instrumentation._base import Instrumentor

__all__ = ["ROUTING_KEY", "SYSTEM", "PikaInstrumentor", "delivery_of"]

_PUBLISH_PARAMETERS = ("exchange", "routing_key", "body", "properties", "mandatory")
_CONSUME_PARAMETERS = (
    "queue",
    "on_message_callback",
    "auto_ack",
    "exclusive",
    "consumer_tag",
    "arguments",
)
_ASYNC_CONSUME_PARAMETERS = (*_CONSUME_PARAMETERS, "callback")  # Channel's: and on ConsumeOk
_NACK_PARAMETERS = ("delivery_tag", "multiple", "requeue")
_REJECT_PARAMETERS = ("delivery_tag", "requeue")

_held = messaging.HeldDeliveries()
# A confirming channel's PRODUCER spans waiting for the broker's ack or nack: past this many (a
# broker that does not confirm) the oldest is recorded, outcome unknown.
_MOST_AWAITING_CONFIRM = 10_000
# messaging.publishing() without a frame of its own: asked twice per message (BlockingChannel's
# publish, then its Channel's beneath it)
_publishing = producer.publishing_now.get


class PikaInstrumentor(Instrumentor):
    """Traces pika's ``BlockingChannel`` (publish, consume callbacks, ``basic_get``, ``consume``)
    and the asynchronous adapters' ``Channel`` (publish, consume callbacks)."""

    held = _held

    target = "pika.adapters.blocking_connection"

    def uninstrument(self) -> None:
        """Undo the patches; spans still waiting for publisher confirms are recorded now,
        outcome unknown, and channels in confirm mode are no longer followed."""
        super().uninstrument()
        self.record_awaiting()
        _confirming.clear()

    def record_awaiting(self) -> None:
        """Record the spans still waiting for publisher confirms, outcome unknown (within a
        bound: ``messaging._end_awaiting``)."""
        if _confirming:
            messaging._end_awaiting(_end_all_awaiting_confirms)

    def patch(self, module: ModuleType) -> None:
        from pika import channel as async_channel
        from pika.spec import BasicProperties

        channel = module.BlockingChannel
        # (pika's properties class handed over once: imported per message, it cost a lookup each)
        traced_publish = functools.partial(_traced_publish, BasicProperties)
        self.wrap(channel, "basic_publish", traced_publish)
        self.wrap(
            channel,
            "basic_consume",
            functools.partial(self._traced_basic_consume, _CONSUME_PARAMETERS, channel),
        )
        self.wrap(async_channel.Channel, "basic_publish", traced_publish)
        self.wrap(
            async_channel.Channel,
            "basic_consume",
            functools.partial(self._traced_basic_consume, _ASYNC_CONSUME_PARAMETERS, channel),
        )
        for cls in (channel, async_channel.Channel):  # each checks its own channel's messages
            self.wrap(cls, "basic_nack", functools.partial(_noting_rejection, _NACK_PARAMETERS))
            self.wrap(cls, "basic_reject", functools.partial(_noting_rejection, _REJECT_PARAMETERS))
        self.wrap(channel, "basic_get", _traced_basic_get)
        self.wrap(channel, "consume", functools.partial(_traced_consume, self.latest_active))
        self.wrap(channel, "close", _held.release_then_call)
        self.wrap(channel, "__exit__", _release_on_exit)
        self.wrap(module.BlockingConnection, "__exit__", _release_channels_on_exit)
        self.wrap(channel, "cancel", _held.release_then_call)  # `break`, then cancel: span ends
        # A worker thread's nack, handed to the consuming thread: see _in_delivery_context.
        self.wrap(module.BlockingConnection, "add_callback_threadsafe", _in_delivery_context)
        from pika.adapters import select_connection

        self.wrap(select_connection.IOLoop, "add_callback_threadsafe", _in_delivery_context)
        if "_transition_to_closed" in vars(async_channel.Channel):  # every way a channel closes
            self.wrap(async_channel.Channel, "_transition_to_closed", _release_on_channel_closed)
            # (followed only where a closing channel lets go of what it waits for)
            self.wrap(async_channel.Channel, "confirm_delivery", _following_confirms)
            self.wrap(async_channel.Channel, "_on_return", _noting_return)

    def _traced_basic_consume(
        self,
        parameters: tuple[str, ...],
        blocking_channel: type,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            bound = _bind(parameters, args, kwargs)
            callback = bound["on_message_callback"]
        except (TypeError, KeyError):
            return wrapped(*args, **kwargs)  # pika reports the bad call itself
        # A BlockingChannel consumes through the Channel beneath it, with a method of its own
        # that queues each message for the user's callback, which its own wrapper traces.
        if callable(callback) and not isinstance(
            getattr(callback, "__self__", None), blocking_channel
        ):
            bound["on_message_callback"] = self._traced_callback(
                str(bound.get("queue")), callback, acked_by_app=not bound.get("auto_ack")
            )
        return wrapped(**bound)

    def _traced_callback(
        self, queue: str, callback: Callable[..., Any], acked_by_app: bool
    ) -> Callable[..., Any]:
        # The consumer's queue is named once, not per message.
        destination = amqp.destination_of(queue)

        def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> Any:
            if not self.latest_active():  # uninstrumented since: registered consumers run bare
                return callback(channel, method, properties, body)
            settled_on = channel if acked_by_app else None
            with _delivery_to(destination, method, properties, settled_on, channel):
                return callback(channel, method, properties, body)

        return on_message


def delivery_of(
    queue: str, method: Any, properties: Any, settled_on: object = None, channel: object = None
) -> messaging.Delivery:
    """The (not yet started) ``Delivery`` of one message consumed from ``queue``.

    ``settled_on``: the channel the app acks the message on (None when the broker took it as
    acked on delivery): a nack or reject of it there fails the span. ``channel``: the one the
    message came on (default: ``settled_on``), whose broker the span names.
    """
    channel = settled_on if channel is None else channel
    return _delivery_to(amqp.destination_of(queue), method, properties, settled_on, channel)


def _delivery_to(
    destination: str, method: Any, properties: Any, settled_on: object, channel: object
) -> messaging.Delivery:
    """``delivery_of`` for a queue already named as spans name it (``amqp.destination_of``)."""
    headers = getattr(properties, "headers", None)
    delivery = messaging._consume_alone(headers, properties, SYSTEM, destination)
    if delivery is None:
        delivery = _traced(headers, destination, method, properties, channel)
    if settled_on is not None:
        delivery.settle_key = (settled_on, getattr(method, "delivery_tag", None))
    return delivery


def _traced(
    headers: Any, destination: str, method: Any, properties: Any, channel: object
) -> messaging.Delivery:
    """The delivery of a message in full mode: a CONSUMER span, and metrics."""
    attributes = amqp.attributes_of(
        destination,
        getattr(method, "routing_key", None),
        _server_of(channel),
        getattr(method, "delivery_tag", None),
        getattr(properties, "correlation_id", None),
    )
    return messaging.consume(
        headers,
        system=SYSTEM,
        destination=destination,
        message_id=getattr(properties, "message_id", None),
        correlation_property=messaging.correlation_property_of(properties),
        attributes=attributes,
    )


def _server_of(channel: object) -> tuple[str, int] | None:
    """The broker ``channel`` (a ``BlockingChannel`` or a ``Channel``) is connected to, as its
    connection's parameters name it."""
    try:
        impl = getattr(channel, "_impl", channel)  # a BlockingChannel's Channel beneath it
        params = getattr(getattr(impl, "connection", None), "params", None)
        return amqp.server_of(getattr(params, "host", None), getattr(params, "port", None))
    except Exception as error:  # (a property of a channel object tracekit does not know)
        report_once("pika broker address", error)
        return None


def _noting_rejection(
    parameters: tuple[str, ...],
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``basic_nack`` or ``basic_reject``: once the call is made, the span of each message it
    gives back (the handler's, or the one this channel holds) ends failed, saying so."""
    result = wrapped(*args, **kwargs)
    safe("pika rejection", lambda: _note_rejection(parameters, instance, args, kwargs))
    return result


def _note_rejection(
    parameters: tuple[str, ...], channel: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    bound = _bind(parameters, args, kwargs)
    tag, multiple = bound.get("delivery_tag", 0), bool(bound.get("multiple", False))
    operation = "basic_nack" if "multiple" in parameters else "basic_reject"
    for delivery in (messaging.current_delivery(), _held.held_by(channel)):
        if delivery is not None and _gives_back(delivery.settle_key, channel, tag, multiple):
            delivery.note_rejected(operation, bool(bound.get("requeue", True)))


def _in_delivery_context(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``add_callback_threadsafe(callback)`` from a thread where a message's delivery is current
    (a worker the callback started in its context): the callback runs in that thread's context,
    in the connection's thread, so a ``basic_nack`` or ``basic_reject`` it makes is matched to
    the message (its channel and delivery tag) and recorded under the message's span, which has
    usually ended by then; its log lines carry the message's ID. From any other thread the call
    is left as it is: one context-variable read, and nothing per message."""
    if messaging.current_delivery() is None:
        return wrapped(*args, **kwargs)
    callback = args[0] if args else kwargs.get("callback")
    if not callable(callback):
        return wrapped(*args, **kwargs)  # pika refuses it, as without tracekit
    in_context = functools.partial(contextvars.copy_context().run, callback)
    if args:
        return wrapped(in_context, *args[1:], **kwargs)
    return wrapped(**{**kwargs, "callback": in_context})


def _gives_back(settle_key: object, channel: Any, tag: object, multiple: bool) -> bool:
    """Whether a nack or reject of ``tag`` on ``channel`` covers the message ``settle_key``
    names: that tag, or with ``multiple`` every tag up to it (0: every one outstanding)."""
    if not isinstance(settle_key, tuple) or settle_key[0] is not channel:
        return False
    own = settle_key[1]
    if own == tag:
        return True
    return multiple and isinstance(own, int) and isinstance(tag, int) and (tag == 0 or own <= tag)


def _traced_publish(
    properties_type: type,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    confirms = _confirming.get(id(instance)) if _confirming else None
    if confirms is not None:  # every message the broker numbers is counted, traced or not
        wrapped = functools.partial(confirms.counted, wrapped)
    if _publishing():  # inside BlockingChannel's publish, or the caller's own block
        return wrapped(*args, **kwargs)
    if len(args) > len(_PUBLISH_PARAMETERS):
        return wrapped(*args, **kwargs)  # pika reports the bad call itself
    own = _own_properties(args[3] if len(args) > 3 else kwargs.get("properties"), properties_type)
    if own is None:
        return wrapped(*args, **kwargs)
    properties, headers = own
    # The call as it was made, with the copy in place of the caller's properties (positional
    # as given: binding every argument to its name cost a dict and a keyword call per message)
    if len(args) > 3:
        args = (*args[:3], properties, *args[4:])
    else:
        kwargs["properties"] = properties  # (this call's own dict)
    # (the headers are a copy: see _own_properties; the properties may name the message's ID)
    alone = producer.publish_alone(headers, (None, properties))
    if alone is not None:  # (no span to describe: the other arguments are not looked at)
        with alone:
            return wrapped(*args, **kwargs)
    exchange = amqp.given_name(args[0] if args else kwargs.get("exchange"))
    routing_key = amqp.given_name(args[1] if len(args) > 1 else kwargs.get("routing_key"))
    destination = amqp.destination_of(exchange or routing_key)
    publishing = producer.publish_own(  # (the headers are a copy: see _own_properties)
        headers,
        SYSTEM,
        destination,
        getattr(properties, "message_id", None),
        amqp.attributes_of(
            destination,
            routing_key,
            _server_of(instance),
            conversation_id=getattr(properties, "correlation_id", None),
        ),
        properties,
    )
    with publishing:
        result = wrapped(*args, **kwargs)
        if confirms is not None:
            safe("pika publisher confirms", functools.partial(confirms.wait_for, publishing))
        return result


def _own_properties(given: Any, properties_type: type) -> tuple[Any, dict[str, Any]] | None:
    """A copy of the message's ``properties`` (a new ``properties_type`` when none are given)
    and its header table, to send in their place; None if tracekit cannot add one.

    The caller's ``BasicProperties`` is copied, never written to: applications reuse one
    properties object for many messages (and threads), which must not carry one message's
    correlation ID and trace context to the next.
    """
    try:
        if given is None:
            properties = properties_type()
        else:
            properties = object.__new__(type(given))
            properties.__dict__.update(vars(given))
        given_headers = properties.headers
        if given_headers is None:
            headers: dict[str, Any] = {}
        elif type(given_headers) is dict or isinstance(given_headers, Mapping):
            headers = dict(given_headers)  # (pika sends any mapping: it reads items())
        else:
            return None
        properties.headers = headers
        return properties, headers
    except Exception as error:
        report_once("pika publish headers", error)
        return None


def _traced_basic_get(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    _held.release(instance)
    result = wrapped(*args, **kwargs)
    method, properties, _ = result
    if method is not None:
        settled_on = None if _auto_ack(args, kwargs) else instance
        queue = _queue_of(args, kwargs)
        _held.hold(instance, delivery_of(queue, method, properties, settled_on, instance))
    return result


def _traced_consume(
    active: Callable[[], bool],
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``consume()``'s generator, re-yielded with a span per message while ``active()``."""
    messages = wrapped(*args, **kwargs)
    settled_on = None if _auto_ack(args, kwargs) else instance
    return _held_generator(messages, instance, _queue_of(args, kwargs), active, settled_on)


def _held_generator(
    messages: Iterator[tuple[Any, Any, Any]],
    channel: Any,
    queue: str,
    active: Callable[[], bool],
    settled_on: object,
) -> Iterator[tuple[Any, Any, Any]]:
    """Re-yield pika's messages; each one's span lasts until the caller asks for the next
    (none once tracekit is uninstrumented: a generator made before goes on bare)."""
    destination = amqp.destination_of(queue)
    try:
        for message in messages:
            method, properties, _ = message
            # (None, None, None) marks an inactivity timeout
            if method is not None and active():
                delivery = _delivery_to(destination, method, properties, settled_on, channel)
                _held.hold(channel, delivery)
            yield message
            # Asked for the next: the caller is done with this one, before pika waits for more
            # (on a quiet queue the wait is no part of handling this message).
            _held.release(channel)
    except BaseException as error:
        _held.release(channel, error if isinstance(error, Exception) else None)
        raise
    finally:
        _held.release(channel)
        close = getattr(messages, "close", None)
        if close is not None:
            close()


def _release_on_channel_closed(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """pika's one step for every way a channel closes: by the app, by the broker (a failed
    passive declare, an unknown delivery tag) or with its connection lost. The message its
    ``BlockingChannel`` holds can no longer be acked, so its span ends, failed by the reason
    unless the app closed it. (An app that goes on with a new channel never ended it before.)
    A consume callback's span, when its channel closes while it runs (seen in a pika call it
    makes: its ack, a passive declare), is failed by the reason too, though the callback
    catches pika's error (a message not acked yet is delivered again)."""
    blocking_channel = safe("pika channel", instance._get_cookie)
    failure = _failure_of(getattr(instance, "_closing_reason", None))
    if blocking_channel is not None:
        _held.release(blocking_channel, failure)
    confirms = _confirming.pop(id(instance), None)
    if confirms is not None:
        safe("pika publisher confirms", lambda: confirms.end_all(failure))
    handled = messaging.current_delivery()  # a callback's, on this channel (pika's call in it)
    if failure is not None and handled is not None and handled.is_open:
        key = handled.settle_key
        if isinstance(key, tuple) and (key[0] is instance or key[0] is blocking_channel):
            handled.fail(failure)
    return wrapped(*args, **kwargs)


class _Confirms:
    """One asynchronous ``Channel`` in confirm mode: its messages counted as the broker numbers
    them (delivery tags 1, 2, ... from ``confirm_delivery``), and the PRODUCER spans of those
    whose ack or nack has not come yet, by tag, oldest first."""

    __slots__ = ("awaiting", "channel", "published")

    def __init__(self, channel: object) -> None:
        self.channel = channel  # (so that no other object takes its id while it is followed)
        self.published = 0
        # (an OrderedDict: taken from the front as acks come, which a dict slows down)
        self.awaiting: OrderedDict[int, messaging.Publishing] = OrderedDict()

    def counted(self, publish: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``publish(*args, **kwargs)``: once it returns, the broker numbers the message."""
        result = publish(*args, **kwargs)
        self.published += 1
        return result

    def wait_for(self, publishing: messaging.Publishing) -> None:
        """Inside the publish block, the message sent: its span keeps the block's timing and
        is recorded when the broker confirms it."""
        if publishing.span is None:
            return
        publishing.settle_later()
        self.awaiting[self.published] = publishing
        if len(self.awaiting) > _MOST_AWAITING_CONFIRM:
            self.awaiting.popitem(last=False)[1]._end_outcome_unknown()

    def confirmed(self, method: Any) -> None:
        """The broker's ``Basic.Ack`` or ``Basic.Nack`` of one tag, or with ``multiple`` of
        every one up to it: a nack fails the span as ``BlockingChannel`` raises."""
        error = None
        if getattr(method, "NAME", None) == "Basic.Nack":
            from pika.exceptions import NackError

            error = NackError([])
        tag = method.delivery_tag
        if not method.multiple:
            publishing = self.awaiting.pop(tag, None)
            if publishing is not None:
                publishing.end(error)
            return
        while self.awaiting and (tag == 0 or next(iter(self.awaiting)) <= tag):
            self.awaiting.popitem(last=False)[1].end(error)

    def returned(self, method: Any, properties: Any, body: bytes) -> None:
        """A ``mandatory`` message no queue took (its ``Basic.Return`` comes before its ack):
        its span, named by the trace context in its headers, ends failed as
        ``BlockingChannel`` raises."""
        sent_by = _sent_span_id(getattr(properties, "headers", None))
        for tag, publishing in self.awaiting.items():
            span = publishing.span
            if span is not None and span.get_span_context().span_id == sent_by:
                del self.awaiting[tag]
                from pika.adapters.blocking_connection import ReturnedMessage
                from pika.exceptions import UnroutableError

                publishing.end(UnroutableError([ReturnedMessage(method, properties, body)]))
                return

    def end_all(self, error: BaseException | None = None) -> None:
        """No confirm will come (the channel closed, failed with ``error`` when not by the app;
        tracekit shut down): every waiting span is recorded, outcome unknown."""
        while self.awaiting:
            try:
                _, publishing = self.awaiting.popitem(last=False)
            except KeyError:  # (emptied by the channel's thread meanwhile: a shutdown's call)
                return
            publishing._end_outcome_unknown(error)


# The asynchronous channels in confirm mode, by id (a subclass may be unhashable); empty, the
# publish path looks no further.
_confirming: dict[int, _Confirms] = {}


def _end_all_awaiting_confirms() -> None:
    for confirms in list(_confirming.values()):
        confirms.end_all()


def _following_confirms(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``confirm_delivery(ack_nack_callback, callback=None)``: from then on the channel's
    messages are counted, and the broker's ack or nack of each, on its way to the app's
    callback, records its span."""
    callback = args[0] if args else kwargs.get("ack_nack_callback")
    if not callable(callback):
        return wrapped(*args, **kwargs)  # pika refuses it, as without tracekit
    confirms = safe("pika publisher confirms", lambda: _confirms_from_now(instance))
    if confirms is None:
        return wrapped(*args, **kwargs)
    on_confirm = _Settling(confirms, callback)
    if args:
        result = wrapped(on_confirm, *args[1:], **kwargs)
    else:
        result = wrapped(**{**kwargs, "ack_nack_callback": on_confirm})
    _confirming[id(instance)] = confirms  # (pika took the call: the broker numbers from here)
    return result


def _confirms_from_now(channel: Any) -> _Confirms | None:
    """What ``channel`` counts from its ``confirm_delivery``; None where tracekit leaves it be:
    a ``BlockingChannel``'s (whose publish waits for the confirm itself), or a channel waiting
    for the answer to another call (pika sends ``Confirm.Select`` after it, and a message
    published meanwhile goes before it, unnumbered)."""
    if channel._get_cookie() is not None or channel._blocking:
        return None
    return _confirming.get(id(channel)) or _Confirms(channel)


@dataclasses.dataclass(eq=True)
class _Settling:
    """The app's ack/nack callback, behind tracekit's reading of the confirm. Equal for the same
    channel and callback, so that pika, given it twice, keeps one, as it does the app's own."""

    confirms: _Confirms
    callback: Callable[[Any], object]

    def __call__(self, method_frame: Any) -> object:
        safe("pika publisher confirm", lambda: self.confirms.confirmed(method_frame.method))
        return self.callback(method_frame)


def _noting_return(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Basic.Return`` of a message: on a channel in confirm mode, its span fails."""
    confirms = _confirming.get(id(instance)) if _confirming else None
    if confirms is not None and confirms.awaiting and len(args) == 3:
        method_frame, header_frame, body = args
        safe(
            "pika returned message",
            lambda: confirms.returned(method_frame.method, header_frame.properties, body),
        )
    return wrapped(*args, **kwargs)


def _sent_span_id(headers: Any) -> int:
    """The id of the PRODUCER span a message's headers name, read as a consumer reads them
    (bounded, checked); 0 for none."""
    return Received.parse(headers, None, None, state.current_options()).parent.span_id


def _failure_of(reason: object) -> Exception | None:
    """Why a channel closed, when that is a failure: not the app's own ``close()``."""
    from pika.exceptions import ChannelClosedByClient, ConnectionClosedByClient

    if isinstance(reason, ChannelClosedByClient | ConnectionClosedByClient):
        return None
    return reason if isinstance(reason, Exception) else None


def _release_on_exit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``with channel:`` left by an exception: the message it holds ends failed."""
    error = args[1] if len(args) > 1 else None
    if isinstance(error, Exception):
        _held.release(instance, error)
    return wrapped(*args, **kwargs)


def _release_channels_on_exit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``with connection:`` left by an exception: the messages its channels hold end failed."""
    error = args[1] if len(args) > 1 else None
    if isinstance(error, Exception):
        for channel in safe("pika channels", lambda: _channels_of(instance)) or ():
            _held.release(channel, error)
    return wrapped(*args, **kwargs)


def _channels_of(connection: Any) -> list[Any]:
    """The ``BlockingChannel`` objects of a ``BlockingConnection`` (pika keeps no public list)."""
    return [impl._get_cookie() for impl in list(connection._impl._channels.values())]


def _bind(names: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Positional and keyword arguments as one keyword dict (pika's own parameter names)."""
    bound = dict(zip(names, args, strict=False))
    if len(args) > len(names):
        raise TypeError("unexpected positional arguments")
    bound.update(kwargs)
    return bound


def _auto_ack(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """The ``auto_ack`` argument of ``basic_get`` or ``consume`` (the second of both)."""
    return bool(args[1] if len(args) > 1 else kwargs.get("auto_ack", False))


def _queue_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return str(args[0] if args else kwargs.get("queue", ""))
