"""kafka-python: PRODUCER spans on ``KafkaProducer.send``, CONSUMER spans on iteration and ``poll``.

- ``send`` runs inside ``messaging.publish``: trace context, correlation ID and publish time are
  appended to the record headers as ``(str, bytes)`` pairs, the form kafka-python sends. Headers
  of the same names the caller passed are replaced, never duplicated (a repeated ``traceparent``
  would make every consumer restart the trace). The span covers ``send()`` handing the record to
  the producer's buffer; delivery is asynchronous, so queue wait includes the producer's linger.
  The span is recorded when the future ``send`` returns is resolved: failed if the record was;
  one not resolved by shutdown is recorded then, outcome unknown.
  A record that tracekit's headers would take past ``max_request_size`` goes out bare (with a
  serializer, whose bytes are known only inside ``send``, after ``send`` refused it once).
  Callbacks added to that future run in the context they were added in, not in the sender
  thread's empty one.
- A transactional producer's records are followed from ``begin_transaction`` to its commit or
  abort, as confluent-kafka's are: when ``abort_transaction`` returns, each send whose future did
  not fail (the broker may have stored it, but ``read_committed`` consumers never see it) gets a
  failed ``abort_transaction {topic}`` span under it (``_kafka.Transaction``). Records the abort
  caught still in the buffer fail their own sends (``TransactionAbortedError``).
- Iterating a ``KafkaConsumer`` yields one record at a time: its CONSUMER span is a child of the
  producer's span and opens when the record is returned, so the loop body runs inside it.
- ``poll()`` returns a batch: one record gets the same single-message span, several get one span
  linked to every record's producer (``messaging.consume_batch``).

When the span ends, since a pull API has no handler boundary: when the same consumer fetches
again (next iteration step or next ``poll``, before it waits for new records), when it is closed,
when its ``with`` block exits (failed if the block raised), when ``finish(consumer)`` is
called — the way to end it promptly after leaving a loop with ``break`` — or when the consumer is
collected unclosed (recorded at the next fetch of any consumer). It never ends before the
caller's code has the record.
"""

from __future__ import annotations

import contextvars
import functools
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from tracekit import messaging, semconv
from tracekit._messaging import headers as _message_headers
from tracekit._runtime.guard import guarded, report_once
from tracekit.instrumentation import _kafka
from tracekit.instrumentation._base import Instrumentor
from tracekit.instrumentation._kafka import SYSTEM, destination_of

_HEADERS_POSITION = 3  # send(topic, value, key, headers, partition, timestamp_ms)
_PARTITION_POSITION = 4

_held = messaging.HeldDeliveries()
_awaiting_futures = _kafka.SpansAwaitingDelivery()
# Each transactional producer's open transaction (kafka-python 2.0 has no transactions).
_transactions: weakref.WeakKeyDictionary[Any, _kafka.Transaction] = weakref.WeakKeyDictionary()
# Set while kafka-python fetches for us: its iterator calls poll() internally.
_fetching: ContextVar[bool] = ContextVar("tracekit_kafka_fetching", default=False)

__all__ = ["KafkaInstrumentor", "delivery_of", "destination_of", "finish"]


class KafkaInstrumentor(Instrumentor):
    """Traces kafka-python's ``KafkaProducer.send`` and ``KafkaConsumer`` iteration and poll."""

    held = _held

    target = "kafka"

    def uninstrument(self) -> None:
        """Undo the patches; spans of sends whose futures are not resolved yet (their records
        still lingering, as when ``tracekit.shutdown()`` comes first) are recorded now,
        outcome unknown."""
        super().uninstrument()
        self.record_awaiting()

    def record_awaiting(self) -> None:
        """Record the spans of sends whose futures are not resolved yet, outcome unknown
        (within a bound: ``messaging._end_awaiting``)."""
        messaging._end_awaiting(_awaiting_futures.end_all)

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.KafkaProducer, "send", _traced_send)
        if "abort_transaction" in vars(module.KafkaProducer):
            self.wrap(module.KafkaProducer, "begin_transaction", _transaction_begun)
            self.wrap(module.KafkaProducer, "commit_transaction", _transaction_committed)
            self.wrap(module.KafkaProducer, "abort_transaction", _transaction_aborted)
        consumer = module.KafkaConsumer
        self.wrap(consumer, "__next__", _traced_next)
        self.wrap(consumer, "poll", _traced_poll)
        self.wrap(consumer, "close", _held.release_then_call)
        if "__exit__" in vars(consumer):  # kafka-python 2.0's consumer is no context manager
            self.wrap(consumer, "__exit__", _release_on_exit)
        # Defined on kafka-python's Future; only a send's FutureRecordMetadata is changed.
        in_context = functools.partial(
            _in_callers_context, module.producer.future.FutureRecordMetadata
        )
        self.wrap(module.future.Future, "add_callback", in_context)
        self.wrap(module.future.Future, "add_errback", in_context)


def finish(consumer: object, error: BaseException | None = None) -> None:
    """End the CONSUMER span of the record(s) ``consumer`` handed out last (failed if ``error``)."""
    _held.release(consumer, error)


def _traced_send(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    position = _headers_position(instance)
    limit = _size_limit(instance)
    send = wrapped if limit is not None else _bare_when_too_large(wrapped, args, kwargs)
    config = getattr(instance, "config", None)
    serializes_values = isinstance(config, dict) and bool(config.get("value_serializer"))
    settle = functools.partial(_settled_by_future, _transaction_of(instance))
    return _kafka.traced_send(
        send, args, kwargs, position, _PARTITION_POSITION, limit, settle, not serializes_values
    )


def _transaction_begun(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = wrapped(*args, **kwargs)
    _follow_transaction(instance)
    return result


def _transaction_committed(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = wrapped(*args, **kwargs)  # (one that failed is still open: abort comes next)
    _end_transaction(instance, aborted=False)
    return result


def _transaction_aborted(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = wrapped(*args, **kwargs)
    _end_transaction(instance, aborted=True)
    return result


# Guarded: a producer class of the application's that cannot be a weak key (one defining
# __eq__ without __hash__) sends and runs its transactions as without tracekit, unfollowed.
_NOT_FOLLOWED: _kafka.Transaction | None = None


@guarded(_NOT_FOLLOWED)
def _transaction_of(producer: Any) -> _kafka.Transaction | None:
    return _transactions.get(producer)


@guarded(None)
def _follow_transaction(producer: Any) -> None:
    _transactions[producer] = _kafka.Transaction()


@guarded(None)
def _end_transaction(producer: Any, aborted: bool) -> None:
    transaction = _transactions.pop(producer, None)
    if aborted and transaction is not None:
        transaction.aborted(_awaiting_futures)


def _bare_when_too_large(
    send: Callable[..., Any], callers_args: tuple[Any, ...], callers_kwargs: dict[str, Any]
) -> Callable[..., Any]:
    """``send``, sending the record as the caller made it when tracekit's headers took it past
    ``max_request_size``. With a serializer its size is known only inside ``send``, which
    refuses it before queueing anything (raising, or with a failed future before kafka-python
    3.0): the record is sent again bare, its serializer running a second time. One too large
    without the headers too is refused as without tracekit."""

    def send_within_limit(*args: Any, **kwargs: Any) -> Any:
        try:
            future = send(*args, **kwargs)
        except Exception as error:
            if not _too_large(error):
                raise
            return _sent_bare(send, callers_args, callers_kwargs)
        if getattr(future, "is_done", False) and _too_large(getattr(future, "exception", None)):
            return _sent_bare(send, callers_args, callers_kwargs)
        return future

    return send_within_limit


def _too_large(error: object) -> bool:
    from kafka.errors import MessageSizeTooLargeError

    return isinstance(error, MessageSizeTooLargeError)


def _sent_bare(send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    future = send(*args, **kwargs)
    if not (getattr(future, "is_done", False) and _too_large(getattr(future, "exception", None))):
        _message_headers.context_left_out.warn(
            "Kafka record", "its headers took it past the producer's max_request_size"
        )
    return future


def _settled_by_future(
    transaction: _kafka.Transaction | None,
    publishing: messaging.Publishing,
    send: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``send``, whose future (resolved by the sender thread) ends the span: failed with the
    error the record failed with (expired in the buffer, refused by the broker, caught by an
    abort). A record of a ``transaction`` is noted in it until its future fails."""
    future = send(*args, **kwargs)
    _awaiting_futures.add(publishing)
    if transaction is not None:
        transaction.add(publishing)
    try:
        future.add_callback(functools.partial(_delivered, publishing))
        future.add_errback(functools.partial(_failed, transaction, publishing))
    except Exception as error:  # not the future kafka-python returns: the span ends here
        _awaiting_futures.discard(publishing)
        report_once("kafka-python delivery", error)
        return future
    publishing.settle_later()
    return future


def _failed(
    transaction: _kafka.Transaction | None, publishing: messaging.Publishing, error: Any
) -> None:
    if transaction is not None:
        transaction.forget(publishing)
    _awaiting_futures.settle(publishing, error)


def _delivered(publishing: messaging.Publishing, metadata: Any) -> None:
    """The record is stored: its span says where (``RecordMetadata``), and ends."""
    try:
        _kafka.note_delivered(
            publishing, getattr(metadata, "partition", None), getattr(metadata, "offset", None)
        )
    except Exception as error:
        report_once("kafka-python delivery", error)
    _awaiting_futures.settle(publishing)


def _size_limit(producer: Any) -> int | None:
    """The largest record ``producer`` sends (``max_request_size``); None when a serializer
    makes the bytes inside ``send``, so their size is not known before it."""
    config = getattr(producer, "config", None)
    if (
        not isinstance(config, dict)
        or config.get("key_serializer")
        or config.get("value_serializer")
    ):
        return None
    limit = config.get("max_request_size")
    return limit if isinstance(limit, int) else None


def _headers_position(producer: Any) -> int | None:
    """Where ``send`` takes headers; None when the broker's API predates them (Kafka 0.11): the
    producer refuses any header there, and the send must still go through."""
    version = getattr(producer, "config", {}).get("api_version")
    if isinstance(version, tuple) and version < (0, 11):
        return None
    return _HEADERS_POSITION


def _in_callers_context(
    send_future: type,
    wrapped: Callable[..., Any],
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """A callback on the future ``send`` returned runs in the context it was added in:
    kafka-python calls it from its sender thread, where no request is current, so its log lines
    had no correlation ID and a retry it sent started a new trace."""
    if not isinstance(instance, send_future) or not args or not callable(args[0]):
        return wrapped(*args, **kwargs)
    run_in_context = functools.partial(contextvars.copy_context().run, args[0])
    return wrapped(run_in_context, *args[1:], **kwargs)


def _traced_next(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    _held.release(instance)  # the caller is back for more: the previous record is handled
    token = _fetching.set(True)
    try:
        record = wrapped(*args, **kwargs)
    finally:
        _fetching.reset(token)
    _hold(instance, [record])
    return record


def _traced_poll(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if _fetching.get():
        return wrapped(*args, **kwargs)
    _held.release(instance)
    batches = wrapped(*args, **kwargs)
    if isinstance(batches, dict) and batches:
        _hold(instance, [record for records in batches.values() for record in records])
    return batches


def _release_on_exit(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
    _held.release(instance, error)
    return wrapped(*args, **kwargs)


def _hold(consumer: Any, records: Sequence[Any]) -> None:
    try:
        delivery = delivery_of(records, _group_of(consumer))
    except Exception as error:
        report_once("kafka consumer span", error)
        return
    _held.hold(consumer, delivery)


def _group_of(consumer: Any) -> str | None:
    config = getattr(consumer, "config", None)
    group = config.get("group_id") if isinstance(config, dict) else None
    return group if isinstance(group, str) else None


def delivery_of(records: Sequence[Any], group: str | None = None) -> messaging.Delivery:
    """The (not yet started) ``Delivery`` of kafka-python ``ConsumerRecord`` objects."""
    extra: dict[str, Any] = {semconv.MESSAGING_CONSUMER_GROUP_NAME: group} if group else {}
    if len(records) == 1:
        record = records[0]
        extra.update(
            {
                semconv.MESSAGING_DESTINATION_PARTITION_ID: str(record.partition),
                semconv.MESSAGING_KAFKA_OFFSET: int(record.offset),
            }
        )
        extra.update(_kafka.consumed_record_attributes(_sent_value(record), record.key))
        return messaging.consume(
            _headers_of(record), system=SYSTEM, destination=str(record.topic), attributes=extra
        )
    headers = [_headers_of(record) for record in records]
    return _kafka.consume_batch(headers, [str(record.topic) for record in records], extra)


def _headers_of(record: Any) -> Any:
    """The record's headers, with its own timestamp as the publish time when they have none
    (``timestamp_type`` 0 is CreateTime, 1 LogAppendTime; None or -1: the record has none)."""
    known = getattr(record, "timestamp_type", None) in _TIMESTAMP_TYPES
    return _kafka.with_record_time(record.headers, record.timestamp if known else None)


_TIMESTAMP_TYPES = (0, 1)


def _sent_value(record: Any) -> object:
    """The record's value as sent: a deserializer may have made something of a missing one,
    whose serialized size kafka-python gives as -1."""
    size = getattr(record, "serialized_value_size", None)
    return None if type(size) is int and size < 0 else record.value
