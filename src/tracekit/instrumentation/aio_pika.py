"""aio-pika (RabbitMQ, asyncio): PRODUCER spans on publish, CONSUMER spans around handlers.

- ``Exchange.publish`` runs inside ``messaging.publish``; context goes into the headers of a copy
  of the message (the caller's message is left as it was).
  The destination is the exchange, or the routing key (the queue) on the default exchange.
- ``Queue.consume(callback)``: the CONSUMER span covers each ``await callback(message)``.
- ``Queue.iterator()`` / ``async for message in queue``: each message's span is open while the
  loop body runs; it ends when the same task fetches its next message (tasks sharing an
  iterator each hold their own), when the iterator stops or is closed, or once the task is
  over and collected. The robust iterator (``connect_robust``) has an ``__anext__`` of its
  own: it is wrapped too.
- ``IncomingMessage.process()``: for a message no open span covers (one from ``Queue.get``;
  one an iterator fetched before the latest, as a loop collecting a batch has; one a
  callback handed to a task that processes it after the callback returned), the
  ``async with message.process():`` block is the CONSUMER span. Its destination is the queue
  the message was fetched from (a message names only its exchange and routing key, so ``get``,
  iterators and consume callbacks note the queue; a message tracekit saw fetched by none of
  them falls back to its routing key). Inside the
  span open for the same message (its consume callback, the iterator's loop body), an exception
  leaving the block (the message is rejected) marks that span failed, as does one leaving the
  iterator's ``async with`` block. Either way an ack or reject that fails as the block exits
  (the channel gone: the message comes back) fails the span too.
- ``message.nack()`` / ``message.reject()`` of the message an open span is for fail that span
  with ``messaging.MessageRejected``, saying whether the broker requeues the message. An
  ``ack()``, ``nack()`` or ``reject()`` that fails, leaving the message unsettled (its channel
  or connection gone: the broker delivers it again), fails that span with its error, though
  the app catches it.
- ``aio_pika.patterns.RPC`` (and ``JsonRPC``) answers a registered function's exception to its
  caller rather than raising it: the call's CONSUMER span ends failed with that exception all
  the same (noted as the pattern's ``serialize_exception`` turns it into the answer).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import operator
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from tracekit import correlation, messaging
from tracekit._messaging import amqp, producer
from tracekit._messaging.amqp import ROUTING_KEY, SYSTEM
from tracekit._runtime.guard import guarded, report_once
from tracekit.instrumentation._base import Instrumentor

__all__ = ["ROUTING_KEY", "SYSTEM", "AioPikaInstrumentor", "delivery_of"]

_held = messaging.HeldDeliveries()
# Set while a wrapped ``__anext__`` runs: one that calls its base class's gets one span, not two.
_fetching: ContextVar[bool] = ContextVar("tracekit_aio_pika_fetching", default=False)
# Set while a queue iterator registers its consumer: the callback it passes (its own, or another
# instrumentation's wrapper of it) gets no span of its own; its ``__anext__`` gives each one.
_iterator_consuming: ContextVar[bool] = ContextVar("tracekit_aio_pika_iterating", default=False)
# The queue each message fetched came from, until its ``process()``: keyed by id (aio-pika
# messages take no attributes or weak references) and checked by delivery tag; bounded, so
# messages never processed are forgotten.
_fetched_from: dict[int, tuple[object, str]] = {}
_FETCHED_MAX = 1024
# messaging.publishing() without a frame of its own (once per message)
_publishing = producer.publishing_now.get


class _Turn:
    """One task's turn at a queue iterator, which its message is held under: tasks sharing an
    iterator each keep their own message's span, until that task fetches again."""

    __slots__ = ("__weakref__",)


# iterator -> task -> its turn (weakly both ways: a turn goes, and ends its span, with either)
_turns: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, _Turn]] = (
    weakref.WeakKeyDictionary()
)


class AioPikaInstrumentor(Instrumentor):
    """Traces aio-pika's publish, consume callbacks, queue iterators and ``process()`` blocks."""

    held = _held

    target = "aio_pika"

    def patch(self, module: ModuleType) -> None:
        copy_of = _MessageCopier(module.Message)  # (made once: it reads the class's fields)
        self.wrap(module.Exchange, "publish", functools.partial(_traced_publish, copy_of))
        self.wrap(module.Queue, "consume", self._traced_consume)
        self.wrap(module.Queue, "get", _noting_queue_get)
        for iterator in _iterator_classes(module):
            self.wrap(iterator, "__anext__", _traced_next)
        self.wrap(module.queue.QueueIterator, "consume", _consuming_for_iterator)
        self.wrap(module.queue.QueueIterator, "close", _release_on_close)
        self.wrap(module.queue.QueueIterator, "__aexit__", _release_on_exit)
        self.wrap(module.IncomingMessage, "process", _traced_process)
        self.wrap(module.IncomingMessage, "ack", _noting_failed_ack)
        for operation in ("nack", "reject"):
            rejecting = functools.partial(_noting_rejection, operation)
            self.wrap(module.IncomingMessage, operation, rejecting)
        for rpc in _rpc_classes(module):
            self.wrap(rpc, "serialize_exception", _noting_rpc_failure)

    def _traced_consume(
        self,
        wrapped: Callable[..., Any],
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        callback = args[0] if args else kwargs.get("callback")
        # The queue iterator consumes through its own ``on_message``: it gets spans per item.
        if not callable(callback) or _iterator_consuming.get() or _is_iterator_callback(callback):
            return wrapped(*args, **kwargs)
        traced = self._traced_callback(str(getattr(instance, "name", "")), callback)
        if args:
            return wrapped(traced, *args[1:], **kwargs)
        return wrapped(**{**kwargs, "callback": traced})

    def _traced_callback(
        self, queue: str, callback: Callable[[Any], Any]
    ) -> Callable[[Any], Awaitable[Any]]:
        destination = amqp.destination_of(queue)  # the consumer's queue, named once
        # (a coroutine function's call is awaited as it is: no coroutine of _handled's around it)
        handle: Callable[[Any], Awaitable[Any]] = (
            callback
            if inspect.iscoroutinefunction(callback)
            else functools.partial(_handled, callback)
        )

        async def on_message(message: Any) -> Any:
            if not self.latest_active():
                return await handle(message)
            delivery = _delivery_alone(destination, message)
            if delivery is None:  # full mode
                _note_queue(message, queue)  # for a process() after the callback has returned
                delivery = _traced(destination, message)
            # What ``async with delivery`` does, without its two coroutines per message.
            delivery.start()
            try:
                result = await handle(message)
            except BaseException as error:
                # aiormq and asyncio log it once the task is over, outside the message's context
                correlation._remember_context(error)
                delivery.end(error)
                raise
            delivery.end()
            return result

        return on_message


async def _handled(callback: Callable[[Any], Any], message: Any) -> Any:
    """What aio-pika does with a callback: await its result when it is awaitable. Plain
    functions are still accepted (deprecated, but they work without tracekit, so with it too)."""
    result = callback(message)
    return await result if inspect.isawaitable(result) else result


def delivery_of(queue: str, message: Any) -> messaging.Delivery:
    """The (not yet started) ``Delivery`` of one incoming aio-pika message."""
    destination = amqp.destination_of(queue)
    return _delivery_alone(destination, message) or _traced(destination, message)


def _delivery_alone(destination: str, message: Any) -> messaging.Delivery | None:
    """The delivery of a message in correlation-only mode (no span: nothing else of the
    message is read than its headers, and its correlation property when they bring no ID);
    None in full mode."""
    delivery = messaging._consume_alone(
        getattr(message, "headers", None), message, SYSTEM, destination
    )
    if delivery is not None:
        delivery.settle_key = message  # see _traced
    return delivery


def _traced(destination: str, message: Any) -> messaging.Delivery:
    """The delivery of a message in full mode: a CONSUMER span, and metrics."""
    delivery = messaging.consume(
        getattr(message, "headers", None),
        system=SYSTEM,
        destination=destination,
        message_id=getattr(message, "message_id", None),
        correlation_property=messaging.correlation_property_of(message),
        attributes=amqp.attributes_of(
            destination,
            getattr(message, "routing_key", None),
            _server_of(message),
            getattr(message, "delivery_tag", None),
            getattr(message, "correlation_id", None),
        ),
    )
    # The message itself: only its own process(), nack() or reject() is part of this delivery;
    # another's (one collected earlier, one from ``Queue.get`` in a callback) is not.
    delivery.settle_key = message
    return delivery


async def _noting_rejection(
    operation: str,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``message.nack()`` or ``reject()``: once done, the span open for that message (its
    callback's, the iterator's latest, its ``process()`` block's) ends failed, saying so."""
    try:
        result = await wrapped(*args, **kwargs)
    except Exception as error:
        _fail_unsettled(instance, error)
        raise
    delivery = messaging.current_delivery()
    if delivery is not None and delivery.settle_key is instance:
        delivery.note_rejected(operation, _requeues(operation, args, kwargs))
    return result


async def _noting_failed_ack(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``message.ack()``: one that fails fails the span open for that message (see
    ``_fail_unsettled``), though the app catches the error."""
    try:
        return await wrapped(*args, **kwargs)
    except Exception as error:
        _fail_unsettled(instance, error)
        raise


@guarded(None)
def _fail_unsettled(message: Any, error: Exception) -> None:
    """An ack, nack or reject of ``message`` failed and left it unsettled (its channel or
    connection gone: the broker delivers it again): the span open for it ends failed."""
    if message.processed:  # settled before the error (acked twice): nothing comes back
        return
    delivery = messaging.current_delivery()
    if delivery is not None and delivery.settle_key is message:
        delivery.fail(error)


def _rpc_classes(module: ModuleType) -> list[type]:
    """The RPC patterns of aio-pika with a ``serialize_exception`` of their own (``RPC``, and
    ``JsonRPC``, whose own does not call ``RPC``'s)."""
    rpc = getattr(getattr(module, "patterns", None), "rpc", None)
    found = (getattr(rpc, name, None) for name in ("RPC", "JsonRPC"))
    return [cls for cls in found if isinstance(cls, type) and "serialize_exception" in vars(cls)]


def _noting_rpc_failure(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The registered function failed (or its call could not be read): aio-pika answers the
    caller with the exception and acks the call, whose span ends failed with it all the same."""
    error = args[0] if args else kwargs.get("exception")
    delivery = messaging.current_delivery()
    if isinstance(error, BaseException) and delivery is not None and delivery.is_open:
        delivery.fail(error)
    return wrapped(*args, **kwargs)


def _requeues(operation: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """``requeue`` of ``nack(multiple=False, requeue=True)`` or ``reject(requeue=False)``."""
    if operation == "nack":
        return bool(args[1] if len(args) > 1 else kwargs.get("requeue", True))
    return bool(args[0] if args else kwargs.get("requeue", False))


async def _traced_publish(
    copy_of: _MessageCopier,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    if _publishing():  # inside the caller's own publish block, which wrote the headers
        return await wrapped(*args, **kwargs)
    message = args[0] if args else kwargs.get("message")
    own = _own_copy(message, copy_of)
    if own is None:
        return await wrapped(*args, **kwargs)
    if args:
        args = (own, *args[1:])
    else:
        kwargs = {**kwargs, "message": own}
    # (the headers are a copy: see _own_copy; the message's properties may name its ID)
    alone = producer.publish_alone(own.headers, (None, own))
    if alone is not None:  # (no span to describe: the other arguments are not looked at)
        with alone:
            return await wrapped(*args, **kwargs)
    routing_key = amqp.given_name(args[1] if len(args) > 1 else kwargs.get("routing_key", ""))
    destination = amqp.destination_of(amqp.given_name(getattr(instance, "name", "")) or routing_key)
    publishing = messaging.publish(
        own.headers,
        system=SYSTEM,
        destination=destination,
        message_id=getattr(message, "message_id", None),
        attributes=amqp.attributes_of(
            destination,
            routing_key,
            _server_of(instance),
            conversation_id=getattr(message, "correlation_id", None),
        ),
    )
    with publishing._beside(None, own) as sent:
        result = await wrapped(*args, **kwargs)
        _note_returned(sent, result)
        return result


# The port aiormq connects to when the URL names none (yarl knows no AMQP default).
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def _server_of(owner: object) -> tuple[str, int] | None:
    """The broker the channel of ``owner`` is connected to, as its connection's URL names it:
    an exchange's aio-pika ``Channel``, or an incoming message's aiormq one."""
    try:
        channel = getattr(owner, "channel", None)
    except Exception:  # a message fetched before its channel closed: ChannelInvalidStateError
        return None  # (a robust connection hands over what it had prefetched, as without tracekit)
    try:
        connection = getattr(channel, "_connection", None) or getattr(channel, "connection", None)
        url = getattr(connection, "url", None)
        port = getattr(url, "port", None) or _DEFAULT_PORTS.get(str(getattr(url, "scheme", "")))
        return amqp.server_of(getattr(url, "host", None), port)
    except Exception as error:  # (a property of a channel object tracekit does not know)
        report_once("aio-pika broker address", error)
        return None


def _note_returned(sent: messaging.Publication, result: Any) -> None:
    """A mandatory message no queue took comes back as a ``Basic.Return``, which ``publish``
    hands back rather than raising (unless the channel has ``on_return_raises``): the send
    failed all the same, as pika says with ``UnroutableError``."""
    returned = getattr(result, "delivery", None)  # a DeliveredMessage; an Ack frame has none
    if returned is None:
        return
    try:
        import aiormq  # aio-pika's AMQP client, whose frames it hands back
        from aio_pika.exceptions import PublishError

        if isinstance(returned, aiormq.spec.Basic.Return):
            sent.fail(PublishError(result, returned))
    except Exception as error:
        report_once("aio-pika returned message", error)


def _own_copy(message: Any, copy_of: _MessageCopier) -> Any:
    """A copy of ``message`` with headers of its own, for tracekit to write into; None when it
    has no header table. The caller's message is never written to: one message object published
    twice must not carry the first publish's correlation ID and trace context to the second.
    (aio-pika does not copy the headers dict a ``Message`` is made with, nor does its
    ``__copy__``: the copy's is made here.)"""
    if not isinstance(getattr(message, "headers", None), dict):
        return None
    try:
        own = copy_of(message, dict(message.headers))
    except Exception as error:
        report_once("aio-pika publish headers", error)
        return None
    return own


class _MessageCopier:
    """``copy.copy`` of an aio-pika message with ``headers`` in place of its own: what
    ``Message.__copy__`` makes (a new, unlocked ``Message`` with the same fields), and for a
    plain ``Message`` without running its ``__init__``, whose checks of each field and of the
    lock on each assignment took 8 us in process where this takes 2 (the fields were checked
    as the caller's message was made)."""

    def __init__(self, message_type: type) -> None:
        self._type = message_type
        slots = vars(message_type).get("__slots__", ())
        self._fields = tuple(
            name for name in slots if not name.startswith("_") and name != "headers"
        )
        has_fields = "headers" in slots and bool(self._fields)
        # Private state this copy knows (the lock; ``_headers``, unused by aio-pika 10): a
        # version with more, or without that lock, is copied by its own ``__copy__``, since a
        # slot left unset here would fail aio-pika where it reads it.
        known = {name for name in slots if name.startswith("_")} == {"_headers", "__lock"}
        self._read = operator.attrgetter(*self._fields) if has_fields and known else None
        self._lock = f"_{message_type.__name__}__lock"

    def __call__(self, message: Any, headers: dict[str, Any]) -> Any:
        if type(message) is not self._type or self._read is None:
            return self._copied(message, headers)
        try:
            values = self._read(message)
        except AttributeError:  # a field the caller's message never had set
            return self._copied(message, headers)
        own = object.__new__(self._type)
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(own, name, value)
        object.__setattr__(own, self._lock, False)
        object.__setattr__(own, "headers", headers)
        object.__setattr__(own, "body_size", len(own.body) if own.body else 0)  # as __init__
        return own

    @staticmethod
    def _copied(message: Any, headers: dict[str, Any]) -> Any:
        own = copy.copy(message)
        own.headers = headers
        return own


def _iterator_classes(module: ModuleType) -> list[type]:
    """``QueueIterator`` and its subclasses in aio-pika that fetch with an ``__anext__`` of their
    own (``RobustQueueIterator``, which waits out reconnections), each to be wrapped."""
    base = module.queue.QueueIterator
    robust = getattr(getattr(module, "robust_queue", None), "RobustQueueIterator", None)
    if isinstance(robust, type) and issubclass(robust, base) and "__anext__" in vars(robust):
        return [base, robust]
    return [base]


async def _traced_next(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if _fetching.get():
        return await wrapped(*args, **kwargs)
    turn = _turn_at(instance)
    _held.release(turn)
    token = _fetching.set(True)
    try:
        message = await wrapped(*args, **kwargs)
    finally:
        _fetching.reset(token)
    queue = str(getattr(getattr(instance, "_amqp_queue", None), "name", ""))
    _note_queue(message, queue)  # for a process() outside this span (a loop collecting a batch)
    _held.hold(turn, delivery_of(queue, message))
    return message


def _turn_at(iterator: Any) -> object:
    """The current task's turn at ``iterator`` (the iterator itself outside any task)."""
    task = asyncio.current_task()
    by_task = _turns_at(iterator) if task is not None else None
    if by_task is None:
        return iterator
    turn = by_task.get(task)
    if turn is None:
        turn = by_task[task] = _Turn()
    return turn


def _turns_at(iterator: Any) -> weakref.WeakKeyDictionary[Any, _Turn] | None:
    """The turns tasks take at ``iterator``; None for an iterator without weak references (a
    subclass with slots), whose tasks share one turn: the iterator itself."""
    try:
        by_task = _turns.get(iterator)
        if by_task is None:
            by_task = _turns[iterator] = weakref.WeakKeyDictionary()
    except TypeError:
        return None
    return by_task


def _release_turns(iterator: Any, error: BaseException | None = None) -> None:
    """End the message each task holds from ``iterator``; the current task's failed if
    ``error``, the others' (still handling theirs, as the iterator closes) not."""
    current = _turn_at(iterator)
    for turn in [*(_turns_at(iterator) or {}).values(), iterator]:
        if turn is not current:
            _held.release(turn)
    _held.release(current, error)


async def _release_on_close(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The app's ``close()`` ends the messages its tasks hold. aio-pika 9.4 also calls it as the
    queue's close callback, ``close(queue, exc)``, when the channel goes away: its tasks are
    still handling their messages then, whose spans end as on later versions (a failed ack as
    the ``process()`` block exits, the next fetch, leaving the iterator's ``async with``)."""
    if not args:
        _release_turns(instance)
    return await wrapped(*args, **kwargs)


async def _release_on_exit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``async with queue.iterator()`` left by an exception: the loop body's span ends failed."""
    error = args[1] if len(args) > 1 else None
    _release_turns(instance, error if isinstance(error, Exception) else None)
    return await wrapped(*args, **kwargs)


async def _noting_queue_get(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    message = await wrapped(*args, **kwargs)
    if message is not None:
        _note_queue(message, str(getattr(instance, "name", "")))
    return message


@guarded(None)
def _note_queue(message: Any, queue: str) -> None:
    while len(_fetched_from) >= _FETCHED_MAX:
        _fetched_from.pop(next(iter(_fetched_from)), None)
    _fetched_from[id(message)] = (getattr(message, "delivery_tag", None), queue)


def _queue_of(message: Any) -> str:
    """The queue ``message`` was fetched from (by ``Queue.get``, an iterator or a consume
    callback), else (not remembered: past the last ``_FETCHED_MAX`` fetched) its exchange, as
    OpenTelemetry's RabbitMQ conventions name a destination, or on the default exchange its
    routing key, the queue's name. (Not the routing key of another exchange: a topic
    exchange's, ``orders.eu.1234``, would name a span and a metric series per key.)"""
    tag, queue = _fetched_from.pop(id(message), (None, None))
    if queue is not None and tag == getattr(message, "delivery_tag", None):
        return queue
    exchange = amqp.given_name(getattr(message, "exchange", None))
    return exchange or amqp.given_name(getattr(message, "routing_key", None))


def _traced_process(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    process_context = wrapped(*args, **kwargs)
    delivery = messaging.current_delivery()
    # The span open for this very message (a callback's, an iterator's), not one that has
    # ended since: a task the callback handed the message to processes it in a span of its own.
    if delivery is not None and delivery.settle_key is instance and delivery.is_open:
        _fetched_from.pop(id(instance), None)  # named by its open span: forget the note
        return _ProcessInDelivery(process_context, delivery)
    return _ProcessWithDelivery(process_context, instance)


class _ProcessInDelivery:
    """``message.process()`` inside a delivery already open: a failure in its block is the
    delivery's (an iterator's span ends only at the next fetch, after the loop caught it)."""

    def __init__(self, process_context: Any, delivery: messaging.Delivery) -> None:
        self._process = process_context
        self._delivery = delivery

    async def __aenter__(self) -> Any:
        return await self._process.__aenter__()

    async def __aexit__(self, kind: Any, error: BaseException | None, tb: Any) -> Any:
        if isinstance(error, Exception):
            self._delivery.fail(error)
        try:
            return await self._process.__aexit__(kind, error, tb)
        except Exception as unsettled:  # the ack or reject failed: the message comes back
            self._delivery.fail(unsettled)
            raise


class _ProcessWithDelivery:
    """``message.process()`` whose block is also the message's CONSUMER span."""

    def __init__(self, process_context: Any, message: Any) -> None:
        self._process = process_context
        self._delivery = delivery_of(_queue_of(message), message)

    async def __aenter__(self) -> Any:
        self._delivery.start()
        try:
            return await self._process.__aenter__()
        except BaseException as error:
            self._delivery.end(error)
            raise

    async def __aexit__(self, kind: Any, error: BaseException | None, tb: Any) -> Any:
        failure = error
        try:
            return await self._process.__aexit__(kind, error, tb)
        except BaseException as unsettled:  # the ack or reject failed: the message comes back
            failure = unsettled if failure is None else failure
            raise
        finally:
            self._delivery.end(failure)


async def _consuming_for_iterator(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``QueueIterator.consume()``: OpenTelemetry's contrib instrumentation, applied after
    tracekit's, hands ``Queue.consume`` its own wrapper of the iterator's callback, which
    ``_is_iterator_callback`` cannot tell (a robust queue's reconnect hands it the callback
    itself, outside this call)."""
    token = _iterator_consuming.set(True)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _iterator_consuming.reset(token)


def _is_iterator_callback(callback: Callable[..., Any]) -> bool:
    from aio_pika.queue import QueueIterator

    return isinstance(getattr(callback, "__self__", None), QueueIterator)
