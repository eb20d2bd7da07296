"""confluent-kafka: PRODUCER spans on ``Producer.produce``, CONSUMER spans on ``poll``/``consume``.

confluent-kafka's ``Producer`` and ``Consumer`` are C extension types whose methods cannot be
patched, so instrumenting replaces ``confluent_kafka.Producer`` and ``confluent_kafka.Consumer``
with subclasses that trace; uninstrumenting puts the originals back and turns objects already
built into pass-throughs, until tracekit is instrumented again (``tracekit.shutdown()``, then
``init()``), when they trace again. ``isinstance`` and ``issubclass`` hold both ways: the
subclasses' objects are instances of the originals, and the swapped-in names answer as the
originals do, so objects built before instrumenting and the ``SerializingProducer``/
``DeserializingConsumer`` wrappers (subclasses of the originals) are still instances of
``confluent_kafka.Producer`` and ``Consumer``. Those wrappers bind the library's classes when
confluent-kafka is imported, so ``confluent_kafka.SerializingProducer`` and
``DeserializingConsumer`` are swapped too, for subclasses built on the tracing ones. Code that
bound the classes before tracekit instrumented (``from confluent_kafka.cimpl import Producer``)
is not traced, nor are classes another instrumentation swapped in first (``_swap_own``).

- ``produce`` runs inside ``messaging.publish``; trace context, correlation ID and publish time
  are added to ``headers`` (a list of pairs or a dict, as the caller gave), replacing same-named
  headers. The span covers the hand-over to librdkafka's queue; delivery is asynchronous. The
  delivery callback (``on_delivery``) runs in the context ``produce`` was called in, whichever
  later ``poll``/``flush`` serves it; the span is recorded then, failed if delivery failed
  (with ``delivery.report.only.error``, which sends no report of a success, spans end at
  ``produce`` and a failure reported later is a failed ``delivery_report {topic}`` span under
  the send's). Spans waiting for
  reports that are never served (no ``poll``/``flush``) are recorded, outcome unknown, past
  a bound (the oldest) and at shutdown (``_kafka.SpansAwaitingDelivery``); a failure reported
  after that is a failed ``delivery_report {topic}`` span under the send's too.
- A transactional producer's messages are followed from ``begin_transaction`` to its commit or
  abort: when ``abort_transaction`` returns, each send its reports did not fail (the broker may
  have stored it, but ``read_committed`` consumers never see it) gets a failed
  ``abort_transaction {topic}`` span under it (``_kafka.TransactionAborted``).
- ``produce_batch`` (where confluent-kafka has it) sends no headers, librdkafka's batch API
  taking none: the batch gets one PRODUCER span, and no context travels with its messages.
  Its delivery callbacks (each message's own, the batch's, the producer's setting) run in the
  context ``produce_batch`` was called in, as ``produce``'s do.
- ``poll`` returns one message: its CONSUMER span is a child of the producer's span.
  ``DeserializingConsumer.poll`` raising for a message its deserializer refused fails that
  message's span (still ended at the next fetch).
  ``consume(num_messages)`` returns a list: several messages get one span linked to each producer.
  Messages carrying an error (``msg.error()``) get no span.

The span stays open while the caller handles the message(s) and ends when the same consumer
fetches again (next ``poll``/``consume``, before it waits), when it is closed, when its ``with``
block exits (failed if the block raised), when ``finish(consumer)`` is called, or when the
consumer is collected unclosed: then the message's correlation ID and context stop being current
at once, and its span is recorded at the next fetch of any consumer or at shutdown (never inside
the collection, which may run where a lock that ending a span takes is held).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tracekit import messaging, semconv
from tracekit._messaging.headers import WARNING_INTERVAL_S
from tracekit._runtime.guard import report_once
from tracekit._runtime.ratelimit import RateLimitedWarning
from tracekit.instrumentation import _kafka
from tracekit.instrumentation._base import Instrumentor, Patch
from tracekit.instrumentation._kafka import SYSTEM

# produce(topic, value, key, partition, callback, on_delivery, timestamp, headers): the C
# keyword list names on_delivery's alias "callback" too, so it takes a position of its own.
# A message's delivery callback is ``callback`` whenever that is given at all (None too), else
# ``on_delivery``; None there means the producer's ``on_delivery`` setting.
_HEADERS_POSITION = 7
_PARTITION_POSITION = 3
_CALLBACK_SLOTS = (("callback", 4), ("on_delivery", 5))
# produce_batch(topic, messages, partition, callback, on_delivery): the same rule, its own places.
_BATCH_CALLBACK_SLOTS = (("callback", 3), ("on_delivery", 4))

_CallbackSlots = tuple[tuple[str, int], ...]

_DEFAULT_MESSAGE_MAX_BYTES = 1_000_000

_held = messaging.HeldDeliveries()
_awaiting_reports = _kafka.SpansAwaitingDelivery()
# Apart from other records sent bare (a size limit), so that those do not hide this one.
_batch_sent_bare = RateLimitedWarning(
    WARNING_INTERVAL_S, "tracekit: sent a %s without trace context (%s)"
)

__all__ = ["ConfluentKafkaInstrumentor", "delivery_of", "finish"]

_log = logging.getLogger("tracekit")


@dataclass(slots=True)
class _ClassSwap(Patch):
    """A module attribute that holds tracekit's subclass instead of the library's class."""

    original: Any = None

    def undo(self) -> None:
        proxy = self.owner.__dict__.get(self.attribute)
        proxy_live = getattr(proxy, "_tracekit_live", None)
        if proxy_live is not None and self.original is not None and proxy.__base__ is self.original:
            setattr(self.owner, self.attribute, self.original)
        self.live.clear()


class ConfluentKafkaInstrumentor(Instrumentor):
    """Swaps in tracing subclasses of ``confluent_kafka.Producer`` and ``Consumer``."""

    held = _held

    target = "confluent_kafka"

    def uninstrument(self) -> None:
        """Put the library's classes back; spans still waiting for delivery reports (which
        may never be served, as at shutdown) are recorded now, outcome unknown."""
        super().uninstrument()
        self.record_awaiting()

    def record_awaiting(self) -> None:
        """Record the spans still waiting for delivery reports, outcome unknown (within a
        bound: ``messaging._end_awaiting``)."""
        messaging._end_awaiting(_awaiting_reports.end_all)

    def patch(self, module: ModuleType) -> None:
        producer = self._swap_own(module, "Producer", _traced_producer_class)
        consumer = self._swap_own(module, "Consumer", _traced_consumer_class)
        wrappers = (("SerializingProducer", producer), ("DeserializingConsumer", consumer))
        for name, traced in wrappers:
            wrapper = module.__dict__.get(name)
            if traced is None or not isinstance(wrapper, type):
                continue
            if wrapper.__base__ is traced.__base__:
                self._swap(module, name, functools.partial(_traced_wrapper_class, traced))

    def _swap_own(
        self, module: ModuleType, name: str, build: Callable[[type], type]
    ) -> type | None:
        """Swap the library's own class; None, with a warning, for another instrumentation's
        (OpenTelemetry's ``ConfluentKafkaInstrumentor``, applied first): a tracing class built
        on it sent every message with two ``traceparent`` headers, and the consumer, which
        cannot tell which one to follow, followed neither."""
        own = getattr(sys.modules.get("confluent_kafka.cimpl"), name, None)
        found = module.__dict__[name]
        if own is None or found is own:
            return self._swap(module, name, build)
        _log.warning(
            "tracekit: confluent_kafka.%s is already %s.%s (another instrumentation's);"
            " tracekit leaves it to that one (see docs/queues/kafka.md)",
            name,
            getattr(found, "__module__", "?"),
            getattr(found, "__qualname__", "?"),
        )
        return None

    def _swap(self, module: ModuleType, name: str, build: Callable[[type], type]) -> type:
        original = module.__dict__[name]
        swapped = build(original)
        setattr(module, name, swapped)
        self._patches.append(_ClassSwap(module, name, original=original))
        return swapped


def finish(consumer: object, error: BaseException | None = None) -> None:
    """End the CONSUMER span of what ``consumer`` handed out last (failed if ``error``)."""
    _held.release(consumer, error)


class _StandsIn(type):
    """Metaclass of the swapped-in classes: ``isinstance``/``issubclass`` against one answer as
    against the library's class it stands in for (its ``_tracekit_original``). Classes derived
    from it later check as usual."""

    def __instancecheck__(cls, instance: Any) -> bool:
        original = cls.__dict__.get("_tracekit_original")
        if original is None:
            return super().__instancecheck__(instance)
        return isinstance(instance, original)

    def __subclasscheck__(cls, subclass: type) -> bool:
        original = cls.__dict__.get("_tracekit_original")
        if original is None:
            return super().__subclasscheck__(subclass)
        return issubclass(subclass, original)


def _traced_producer_class(base: type) -> type:
    class Producer(base, metaclass=_StandsIn):  # type: ignore[misc]
        __doc__ = base.__doc__
        _tracekit_live = True
        _tracekit_original = base

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._tracekit_bare = _made_by_asyncio_client()
            config = _settings(args, kwargs)
            self._tracekit_limit = _message_max_bytes(config)
            self._tracekit_settle = _settling(config)
            self._tracekit_on_delivery = config.get("on_delivery")
            self._tracekit_transaction: _Transaction | None = None

        def produce(self, *args: Any, **kwargs: Any) -> Any:
            if not _traced(self):
                return super().produce(*args, **kwargs)
            args, kwargs = _delivered_in_callers_context(args, kwargs, self._tracekit_on_delivery)
            settle, transaction = self._tracekit_settle, self._tracekit_transaction
            if transaction is not None:
                settle = functools.partial(transaction.settling, settle)
            return _kafka.traced_send(
                super().produce,
                args,
                kwargs,
                _HEADERS_POSITION,
                _PARTITION_POSITION,
                self._tracekit_limit,
                settle,
            )

        def begin_transaction(self, *args: Any, **kwargs: Any) -> Any:
            result = super().begin_transaction(*args, **kwargs)
            self._tracekit_transaction = _Transaction()
            return result

        def commit_transaction(self, *args: Any, **kwargs: Any) -> Any:
            result = super().commit_transaction(*args, **kwargs)
            self._tracekit_transaction = None
            return result

        def abort_transaction(self, *args: Any, **kwargs: Any) -> Any:
            result = super().abort_transaction(*args, **kwargs)
            transaction, self._tracekit_transaction = self._tracekit_transaction, None
            if transaction is not None:
                transaction.aborted(_awaiting_reports)
            return result

        def produce_batch(self, *args: Any, **kwargs: Any) -> Any:
            if not _traced(self):
                return super().produce_batch(*args, **kwargs)
            args, kwargs = _delivered_in_callers_context(
                args, kwargs, self._tracekit_on_delivery, _BATCH_CALLBACK_SLOTS
            )
            with _own_callbacks_in_callers_context(args, kwargs):
                return _traced_batch(super().produce_batch, args, kwargs)

    if not hasattr(base, "produce_batch"):  # an older confluent-kafka: no such method
        del Producer.produce_batch
    Producer.__module__ = base.__module__
    return Producer


class _Transaction(_kafka.Transaction):
    """A transaction's sends followed through their delivery reports (``_kafka.Transaction``)."""

    __slots__ = ()

    def settling(
        self,
        settle: _kafka.Settling,
        publishing: messaging.Publishing,
        produce: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """``settle``, with the message noted in the transaction until a report fails it."""
        slot, callback = _delivery_callback(args, kwargs)
        if callback is not None and not callable(callback):
            return settle(publishing, produce, args, kwargs)  # refused, as without tracekit
        self.add(publishing)
        args, kwargs = _with_callback(
            args, kwargs, slot, self._forgetting_failed(publishing, callback)
        )
        try:
            return settle(publishing, produce, args, kwargs)
        except BaseException:
            self.forget(publishing)  # produce() refused it: its span is failed
            raise

    def _forgetting_failed(
        self, publishing: messaging.Publishing, callback: Callable[..., Any] | None
    ) -> Callable[[Any, Any], Any]:
        def report(error: Any, message: Any) -> Any:
            if error is not None:
                self.forget(publishing)
            return callback(error, message) if callback is not None else None

        return report


def _traced_wrapper_class(traced: type, wrapper: type) -> type:
    """confluent-kafka's ``SerializingProducer`` or ``DeserializingConsumer`` (``wrapper``), built
    on ``traced`` (the tracing subclass of the library class it wraps): its own ``produce`` and
    ``poll`` call that class's, which now trace. Its module binds the library's class at import,
    before tracekit can swap it; without this, every message of these wrappers went untraced."""

    class Wrapper(wrapper, traced, metaclass=_StandsIn):  # type: ignore[misc]
        __doc__ = wrapper.__doc__
        _tracekit_original = wrapper

        def __exit__(self, *args: Any) -> Any:
            # The wrapper's own __exit__ closes without calling the tracing class's: the span
            # of a handler that raised in the ``with`` block would end as if it had succeeded.
            _held.release(self, args[1] if len(args) > 1 else None)
            return super().__exit__(*args)

        def poll(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().poll(*args, **kwargs)
            except Exception as error:
                _fail_held(self, error)
                raise

    if "poll" not in vars(wrapper):  # SerializingProducer: its poll hands out no message
        del Wrapper.poll
    Wrapper.__name__ = Wrapper.__qualname__ = wrapper.__name__
    Wrapper.__module__ = wrapper.__module__
    # Generic in its key and value types where the wrapper is (confluent-kafka 2.16): a subclass
    # naming no type parameters has none, and the application's
    # ``DeserializingConsumer[str, Order]`` raised TypeError ('is not a generic class').
    Wrapper.__parameters__ = getattr(wrapper, "__parameters__", ())
    return Wrapper


def _fail_held(consumer: Any, error: BaseException) -> None:
    """``DeserializingConsumer.poll`` raised after fetching a message (its deserializer refused
    it, a poison message): the message never reached the handler, so its span, held until the
    next fetch, ends failed. Nothing is held when the fetch itself raised."""
    try:
        delivery = _held.held_by(consumer)
        if delivery is not None:
            delivery.fail(error)
    except Exception as failure:
        report_once("confluent-kafka consumer span", failure)


def _traced_batch(
    produce_batch: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``produce_batch(topic, messages, ...)`` inside one PRODUCER span for the batch. It sends
    no headers (librdkafka's batch API takes none), so no context travels with the messages."""
    topic = args[0] if args else kwargs.get("topic")
    messages = args[1] if len(args) > 1 else kwargs.get("messages")
    if not isinstance(topic, str) or not isinstance(messages, list) or not messages:
        return produce_batch(*args, **kwargs)
    if messaging.publishing():
        return produce_batch(*args, **kwargs)
    count = {semconv.MESSAGING_BATCH_MESSAGE_COUNT: len(messages)}
    with messaging.publish({}, system=SYSTEM, destination=topic, attributes=count) as sent:
        queued = produce_batch(*args, **kwargs)
        if type(queued) is int:  # failed messages are not counted sent
            sent.set_accepted(queued)
    _batch_sent_bare.warn("Kafka batch", "confluent-kafka's produce_batch sends no headers")
    return queued


def _delivered_in_callers_context(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    default: object,
    slots: _CallbackSlots = _CALLBACK_SLOTS,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``produce``'s arguments with its delivery callback (the message's own, else ``default``,
    the producer's ``on_delivery`` setting) run in the context ``produce`` was called in.
    librdkafka calls it from whichever later ``poll()`` or ``flush()`` serves the report, where
    another request (or none) is current: its log lines, and a retry it sends, would belong to
    that one. ``slots``: where the call takes its callback (``produce``'s, or ``produce_batch``'s
    for the messages of a batch without one of their own)."""
    slot, callback = _delivery_callback(args, kwargs, slots)
    callback = default if callback is None else callback
    if not callable(callback):
        return args, kwargs  # none, or one confluent-kafka refuses, as without tracekit
    return _with_callback(args, kwargs, slot, _run_in(contextvars.copy_context(), callback))


def _delivery_callback(
    args: tuple[Any, ...], kwargs: dict[str, Any], slots: _CallbackSlots = _CALLBACK_SLOTS
) -> tuple[int | str, Any]:
    """Where the message's delivery callback is given (where to give one, if nowhere), and the
    callback: None when the producer's ``on_delivery`` setting serves the message."""
    for name, position in slots:
        if len(args) > position:
            return position, args[position]
        if name in kwargs:
            return name, kwargs[name]
    return "on_delivery", None


@contextlib.contextmanager
def _own_callbacks_in_callers_context(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Iterator[None]:
    """While ``produce_batch`` takes the batch: each message's own ``callback`` (which serves it
    over the batch's) runs in the caller's context, as ``produce``'s does. Swapped in the
    caller's dicts and put back after: confluent-kafka marks the messages it refused in those
    very dicts (``_error``), and librdkafka keeps the callback it was handed."""
    messages = args[1] if len(args) > 1 else kwargs.get("messages")
    own = [
        (message, message["callback"])
        for message in (messages if isinstance(messages, list) else ())
        if isinstance(message, dict) and callable(message.get("callback"))
    ]
    context = contextvars.copy_context()
    for message, callback in own:
        message["callback"] = _run_in(context, callback)
    try:
        yield
    finally:
        for message, callback in own:
            message["callback"] = callback


def _with_callback(
    args: tuple[Any, ...], kwargs: dict[str, Any], slot: int | str, callback: Callable[..., Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(slot, int):
        return (*args[:slot], callback, *args[slot + 1 :]), kwargs
    return args, {**kwargs, slot: callback}


def _run_in(context: contextvars.Context, callback: Callable[..., Any]) -> Callable[..., Any]:
    # A copy per report: a batch's reports share one callback, which two threads' poll() may
    # run at once, and a Context can be entered by one of them at a time.
    return lambda *report: context.copy().run(callback, *report)


def _settling(config: dict[str, Any]) -> _kafka.Settling:
    """How a producer's messages end their spans with their delivery reports. When librdkafka
    reports failures only (``delivery.report.only.error``) a span waiting for a success would
    never end: spans end at ``produce``, and a failure reported later is recorded after them."""
    if str(config.get("delivery.report.only.error", "false")).lower() in ("true", "1"):
        return _failure_reported_after_span
    return _reported_to_span


def _reported_to_span(
    publishing: messaging.Publishing,
    produce: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``produce`` with a delivery callback that ends the span, then calls the message's own
    (which ``_delivered_in_callers_context`` made the producer's setting, if it had none)."""
    slot, callback = _delivery_callback(args, kwargs)
    if callback is not None and not callable(callback):
        return produce(*args, **kwargs)  # confluent-kafka refuses it, as without tracekit
    publishing.settle_later()
    _awaiting_reports.add(publishing)
    # A partial rather than a closure: two objects for the garbage collector to track while the
    # report is awaited (a closure's cells and their tuple made four).
    ending = functools.partial(_end_span_then, publishing, callback)
    args, kwargs = _with_callback(args, kwargs, slot, ending)
    try:
        return produce(*args, **kwargs)
    except BaseException:
        _awaiting_reports.discard(publishing)  # no report comes: the block ends the span failed
        raise


def _failure_reported_after_span(
    publishing: messaging.Publishing,
    produce: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``produce`` with a delivery callback that records a failure report (the only kind
    librdkafka sends here) under the span ``produce`` ended, then calls the message's own."""
    slot, callback = _delivery_callback(args, kwargs)
    if callback is not None and not callable(callback):
        return produce(*args, **kwargs)  # confluent-kafka refuses it, as without tracekit
    args, kwargs = _with_callback(args, kwargs, slot, _noting_failure_then(publishing, callback))
    return produce(*args, **kwargs)


def _noting_failure_then(
    publishing: messaging.Publishing, callback: Callable[..., Any] | None
) -> Callable[[Any, Any], Any]:
    def report(error: Any, message: Any) -> Any:
        if error is not None:
            _record_failure(publishing, error)
        return callback(error, message) if callback is not None else None

    return report


def _record_failure(publishing: messaging.Publishing, error: Any) -> None:
    try:
        from confluent_kafka import KafkaException

        publishing.fail_after_end(KafkaException(error), _kafka.DELIVERY_REPORT)
    except Exception as failure:
        report_once("confluent-kafka delivery report", failure)


def _end_span_then(
    publishing: messaging.Publishing,
    callback: Callable[..., Any] | None,
    error: Any,
    message: Any,
) -> Any:
    """The delivery report's callback: end the span, then call the message's own."""
    _end_span(publishing, error, message)
    return callback(error, message) if callback is not None else None


def _end_span(publishing: messaging.Publishing, error: Any, message: Any) -> None:
    """End the span of a delivery report: with the partition and offset the message was stored
    at, or failed with librdkafka's error, as ``KafkaException`` (what confluent-kafka raises for
    it elsewhere)."""
    try:
        from confluent_kafka import KafkaException

        if error is None:
            _kafka.note_delivered(publishing, message.partition(), message.offset())
        _awaiting_reports.settle(publishing, KafkaException(error) if error is not None else None)
    except Exception as failure:
        report_once("confluent-kafka delivery report", failure)


def _traced_consumer_class(base: type) -> type:
    class Consumer(base, metaclass=_StandsIn):  # type: ignore[misc]
        __doc__ = base.__doc__
        _tracekit_live = True
        _tracekit_original = base

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            config = _settings(args, kwargs)
            group = config.get("group.id")
            self._tracekit_group = group if isinstance(group, str) else None
            self._tracekit_bare = _made_by_asyncio_client()

        def poll(self, *args: Any, **kwargs: Any) -> Any:
            _held.release(self)
            message = super().poll(*args, **kwargs)
            if message is not None and _traced(self):
                _hold(self, [message], self._tracekit_group)
            return message

        def consume(self, *args: Any, **kwargs: Any) -> Any:
            _held.release(self)
            messages = super().consume(*args, **kwargs)
            if messages and _traced(self):
                _hold(self, messages, self._tracekit_group)
            return messages

        def close(self, *args: Any, **kwargs: Any) -> Any:
            _held.release(self)
            return super().close(*args, **kwargs)

        def __exit__(self, *args: Any) -> Any:
            _held.release(self, args[1] if len(args) > 1 else None)
            return super().__exit__(*args)

    Consumer.__module__ = base.__module__
    return Consumer


def _settings(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A client's configuration: its dict, and keywords beside it (which confluent-kafka takes
    as settings too, over the dict's)."""
    given = args[0] if args and isinstance(args[0], dict) else {}
    return {**given, **kwargs}


def _message_max_bytes(config: dict[str, Any]) -> int | None:
    """librdkafka's ``message.max.bytes`` (an int or a numeric string; default 1,000,000)."""
    value = config.get("message.max.bytes", _DEFAULT_MESSAGE_MAX_BYTES)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None  # librdkafka refused this configuration already


def _traced(client: Any) -> bool:
    """Whether ``client``'s calls are traced: confluent-kafka is instrumented now (whichever
    swap made its class), and no asyncio client made it (``_made_by_asyncio_client``)."""
    return ConfluentKafkaInstrumentor.latest_active() and not client._tracekit_bare


def _made_by_asyncio_client() -> bool:
    """Whether confluent-kafka's asyncio client (``confluent_kafka.aio``) is building this one.

    It calls poll and produce in executor threads, away from the handler's task: a span held
    until the next poll would stay current there for unrelated work, and a publish would not see
    the caller's context. Such clients stay untraced, as documented.
    """
    caller = sys._getframe(2)  # who called the class: past __init__ and this function
    return str(caller.f_globals.get("__name__", "")).startswith("confluent_kafka.aio")


def _hold(consumer: Any, messages: Sequence[Any], group: str | None) -> None:
    try:
        valid = [message for message in messages if message.error() is None]
        if valid:
            _held.hold(consumer, delivery_of(valid, group))
    except Exception as error:
        report_once("confluent-kafka consumer span", error)


def delivery_of(messages: Sequence[Any], group: str | None = None) -> messaging.Delivery:
    """The (not yet started) ``Delivery`` of confluent-kafka ``Message`` objects."""
    extra: dict[str, Any] = {semconv.MESSAGING_CONSUMER_GROUP_NAME: group} if group else {}
    if len(messages) == 1:
        message = messages[0]
        extra.update(
            {
                semconv.MESSAGING_DESTINATION_PARTITION_ID: str(message.partition()),
                semconv.MESSAGING_KAFKA_OFFSET: int(message.offset()),
            }
        )
        extra.update(_kafka.consumed_record_attributes(message.value(), message.key()))
        return messaging.consume(
            _headers_of(message), system=SYSTEM, destination=str(message.topic()), attributes=extra
        )
    headers = [_headers_of(message) for message in messages]
    return _kafka.consume_batch(headers, [str(message.topic()) for message in messages], extra)


def _headers_of(message: Any) -> Any:
    """The message's headers, with its own timestamp as the publish time when they have none
    (``timestamp()`` is ``(type, ms)``; type 0, TIMESTAMP_NOT_AVAILABLE: the record has none)."""
    stamp = message.timestamp()
    known = isinstance(stamp, tuple) and len(stamp) == 2 and stamp[0] in _TIMESTAMP_TYPES
    return _kafka.with_record_time(message.headers(), stamp[1] if known else None)


# confluent_kafka.TIMESTAMP_CREATE_TIME and TIMESTAMP_LOG_APPEND_TIME
_TIMESTAMP_TYPES = (1, 2)
