"""What the two Kafka clients' instrumentation shares: the publish hop and the header form.

Both kafka-python and confluent-kafka take record headers as ``(str, bytes)`` pairs (confluent
also a dict) in a ``headers`` argument; tracekit adds its own, replacing same-named ones, since a
repeated ``traceparent`` would make every consumer restart the trace.

Both refuse a record larger than the producer's limit (kafka-python's ``max_request_size``,
librdkafka's ``message.max.bytes``). When tracekit's headers could take a record past it, the
record goes out as the caller made it: the size is estimated from the value, key and headers
(their bytes, two length varints per header and ``RECORD_OVERHEAD``, at least what either client
adds), so a record is only left bare within about a hundred bytes of the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.trace import Span

from tracekit import messaging, semconv
from tracekit._messaging import headers as _message_headers
from tracekit._messaging import producer
from tracekit._messaging.headers import byte_length, replaced_names

SYSTEM = "kafka"
# kafka-python counts a record batch's header (61 bytes) with each record; librdkafka at most
# 36 bytes of varints and flags. A header adds two length varints (at most 5 bytes each here).
RECORD_OVERHEAD = 128
_HEADER_OVERHEAD = 10
# PRODUCER spans one client library keeps waiting for their deliveries' outcomes: past this many
# (a confluent-kafka producer that never polls gets no reports) the oldest is recorded unknown.
MOST_AWAITING_DELIVERY = 10_000
# The operation name of the span recording a failure reported after the send's span ended.
DELIVERY_REPORT = "delivery_report"
# The operation name of the span marking a message of a transaction its producer aborted.
ABORT_TRANSACTION = "abort_transaction"
# A record key is the application's data: at most this many characters of it go on a span.
MAX_KEY = 256
_KEY_POSITION = 2  # send(topic, value, key, ...) and produce(topic, value, key, ...) alike


# Makes the call ``send(*args, **kwargs)`` so that the delivery's outcome ends the publish's span
# (with ``Publishing.settle_later``); given the publish, send, args and kwargs.
Settling = Callable[
    [messaging.Publishing, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any
]


def traced_send(
    send: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    headers_position: int | None,
    partition_position: int,
    limit: int | None = None,
    settle: Settling | None = None,
    value_sent_as_given: bool = True,
) -> Any:
    """Call ``send(topic, value, key, ...)`` inside a PRODUCER span, with context added to its
    headers (``headers_position`` None: the broker's message format has no headers, none are
    added) unless they could take the record past ``limit`` bytes (None: not checked).
    ``partition_position``: where the call takes the partition the caller chose.
    ``settle`` (if given) makes the call, so that the delivery's outcome ends the span.
    ``value_sent_as_given`` False: a serializer makes the value inside ``send``, so whether the
    record is a tombstone is not known."""
    topic = args[0] if args else kwargs.get("topic")
    if not isinstance(topic, str) or messaging.publishing():
        return send(*args, **kwargs)
    carrier: dict[str, str] = {}
    callers = (_given_headers(args, kwargs, headers_position), None)
    alone = producer.publish_alone(carrier, callers)  # tracekit's own dict, for this record
    if alone is not None:  # (no span: no delivery report to wait for)
        with alone:
            args, kwargs = _carrying(args, kwargs, carrier, headers_position, limit)
            return send(*args, **kwargs)
    attributes = _record_attributes(args, kwargs, partition_position, value_sent_as_given)
    publishing = messaging.publish(carrier, system=SYSTEM, destination=topic, attributes=attributes)
    publishing._beside(*callers)
    with publishing as sent:
        args, kwargs = _carrying(args, kwargs, carrier, headers_position, limit)
        if settle is not None and sent.span is not None:
            return settle(publishing, send, args, kwargs)
        return send(*args, **kwargs)


def _record_attributes(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    partition_position: int,
    value_sent_as_given: bool,
) -> dict[str, Any] | None:
    """What the PRODUCER span of ``send(topic, value, key, ...)`` says of its record before it
    is sent: its key's text, the partition the caller chose, whether it is a tombstone. None
    for a record without any of them (no dict built)."""
    value = args[1] if len(args) > 1 else kwargs.get("value")
    attributes = tombstone_attributes(value) if value_sent_as_given else None
    key = key_text(args[_KEY_POSITION] if len(args) > _KEY_POSITION else kwargs.get("key"))
    if key is not None:
        attributes = attributes or {}
        attributes[semconv.MESSAGING_KAFKA_MESSAGE_KEY] = key
    given = args[partition_position] if len(args) > partition_position else kwargs.get("partition")
    if _is_partition(given):  # (confluent-kafka's -1: the partitioner chooses)
        attributes = attributes or {}
        attributes[semconv.MESSAGING_DESTINATION_PARTITION_ID] = str(given)
    return attributes


def key_text(key: object) -> str | None:
    """A record key as a span gives it (``messaging.kafka.message.key``): text, or bytes that
    are UTF-8 text decoded, cut to ``MAX_KEY`` characters, either without control characters.
    None for any other key (binary, or an object a serializer makes bytes of): the conventions
    want no value for a key without an unambiguous text form, and tracekit never calls an
    application's ``__str__``. A text key is held to the bytes' rule too: its consumer gets it
    as bytes, and both spans of a record carry its key or neither does."""
    if type(key) is str:
        text = key[:MAX_KEY]
        return None if _CONTROL_CHARACTER.search(text) else text
    if type(key) is not bytes:
        return None
    head = key[: MAX_KEY * 4]  # (a character is at most 4 bytes in UTF-8)
    try:
        text = head.decode("utf-8")[:MAX_KEY]
    except UnicodeDecodeError as error:
        cut = len(key) > len(head) and error.reason == "unexpected end of data"
        if cut:  # the bound cut its last character: the whole ones before it
            return key_text(head[: error.start])
        return None
    return None if _CONTROL_CHARACTER.search(text) else text


# Bytes holding one are a serializer's binary that happens to be UTF-8, not text: an
# IntegerSerializer's 7 is 00 00 00 07, a Schema Registry key starts with a zero byte.
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f]")


def _is_partition(number: object) -> bool:
    """Whether ``number`` can name a partition (Kafka's are 32-bit): a caller's larger one is
    the client's error to raise, and past 4,300 digits ``str`` of it raised one of its own."""
    return type(number) is int and 0 <= number <= _LAST_PARTITION


_LAST_PARTITION = 2**31 - 1


def note_delivered(publishing: messaging.Publishing, partition: object, offset: object) -> None:
    """Put where the broker stored the record (from its delivery report) on its PRODUCER span,
    still open until the report ends it."""
    span: Span | None = publishing.span
    if span is None or not span.is_recording():
        return
    if _is_partition(partition):
        span.set_attribute(semconv.MESSAGING_DESTINATION_PARTITION_ID, str(partition))
    if type(offset) is int and offset >= 0:
        span.set_attribute(semconv.MESSAGING_KAFKA_OFFSET, offset)


def consumed_record_attributes(value: object, key: object) -> dict[str, Any]:
    """What the CONSUMER span of one record says of it: whether it is a tombstone, and its
    key's text (``key_text``)."""
    attributes = tombstone_attributes(value) or {}
    text = key_text(key)
    if text is not None:
        attributes[semconv.MESSAGING_KAFKA_MESSAGE_KEY] = text
    return attributes


def consume_batch(
    headers: list[Any], topics: list[str], attributes: dict[str, Any]
) -> messaging.Delivery:
    """The (not yet started) ``Delivery`` of several records (their ``headers`` and ``topics``,
    in order): one span named by their topics (``destination_of``), each record counted in
    the metrics under its own topic, as its producer's were sent."""
    delivery = messaging.consume_batch(
        headers, system=SYSTEM, destination=destination_of(topics), attributes=attributes
    )
    if len(set(topics)) > 1:  # (the usual batch: one topic, the span's name)
        delivery._count_under(topics)
    return delivery


def destination_of(topics: Iterable[object]) -> str:
    """The one topic of a batch, or the sorted topics joined by commas (bounded)."""
    names = sorted({str(topic) for topic in topics})
    return ",".join(names)[:256]


def tombstone_attributes(value: object) -> dict[str, Any] | None:
    """What marks a record without a value (a tombstone: it deletes its key from a compacted
    topic) on its span, as OpenTelemetry's Kafka conventions require; None for any other
    record (the attribute's absence means false)."""
    return {semconv.MESSAGING_KAFKA_MESSAGE_TOMBSTONE: True} if value is None else None


def _carrying(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    carrier: dict[str, str],
    headers_position: int | None,
    limit: int | None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The send's arguments with tracekit's headers, where the format has headers and the
    record stays within ``limit`` with them."""
    if headers_position is not None and _fits(args, kwargs, carrier, headers_position, limit):
        return _with_headers(args, kwargs, carrier, headers_position)
    return args, kwargs


class SpansAwaitingDelivery:
    """PRODUCER spans whose delivery's outcome is not known yet, oldest first, at most ``limit``.

    Without it a span whose outcome never comes (a confluent-kafka producer that never polls,
    a send still lingering when ``tracekit.shutdown()`` runs) would be lost; here the oldest past
    ``limit``, and every one at ``end_all`` (uninstrumenting, as at shutdown), is recorded with
    its outcome unknown. No lock: single dict operations are atomic, and one that races another
    thread's is left to the next call.
    """

    def __init__(self, limit: int = MOST_AWAITING_DELIVERY) -> None:
        self._limit = limit
        self._spans: dict[messaging.Publishing, None] = {}  # insertion-ordered: oldest first

    def add(self, publishing: messaging.Publishing) -> None:
        self._spans[publishing] = None
        if len(self._spans) > self._limit:
            self._end_oldest()

    def settle(self, publishing: messaging.Publishing, error: BaseException | None = None) -> None:
        """The delivery's outcome is known: end the span, failed if ``error``. A failure of a
        span recorded already (outcome unknown, past ``limit``) is a failed span of its own
        under it: in an outage, when most messages wait past the bound, their failures were
        otherwise recorded nowhere."""
        self.discard(publishing)
        if error is None:
            publishing.end()
        else:
            publishing.fail_after_end(error, DELIVERY_REPORT)

    def discard(self, publishing: messaging.Publishing) -> None:
        self._spans.pop(publishing, None)

    def end_all(self) -> None:
        while self._spans:
            self._end_oldest()

    def _end_oldest(self) -> None:
        try:
            oldest = next(iter(self._spans))
            del self._spans[oldest]
        except (RuntimeError, StopIteration, KeyError):  # changed by another thread meanwhile
            return
        oldest._end_outcome_unknown()


class TransactionAborted(Exception):
    """The producer aborted the Kafka transaction a message was sent in: the broker may have
    stored it, but no ``read_committed`` consumer will see it."""


class Transaction:
    """The sends of a producer's open transaction (at most ``MOST_AWAITING_DELIVERY``) that no
    delivery outcome failed: when the producer aborts the transaction, each is marked aborted (a
    failed ``abort_transaction <topic>`` span under its send). The messages the abort fails
    itself (confluent-kafka purges them, kafka-python fails their futures) fail their own sends
    before the abort returns, and are forgotten then."""

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        self._sent: dict[messaging.Publishing, None] = {}

    def add(self, publishing: messaging.Publishing) -> None:
        if len(self._sent) < MOST_AWAITING_DELIVERY:
            self._sent[publishing] = None

    def forget(self, publishing: messaging.Publishing) -> None:
        """Its delivery failed (or was never made): its span says so already."""
        self._sent.pop(publishing, None)

    def aborted(self, awaiting: SpansAwaitingDelivery) -> None:
        """The producer aborted the transaction: each message not failed already is marked
        (and ``awaiting`` no longer ends its span: an outcome reported later changes nothing)."""
        error = TransactionAborted("the producer aborted the transaction this message was sent in")
        for publishing in list(self._sent):
            awaiting.discard(publishing)
            publishing.fail_after_end(error, ABORT_TRANSACTION)
        self._sent.clear()


def _fits(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    carrier: dict[str, str],
    headers_position: int,
    limit: int | None,
) -> bool:
    """Whether the record, with tracekit's headers, stays within ``limit`` (estimated high).

    Once per record, so the usual one (bytes, no headers of the caller's) costs a few ``len``;
    tracekit's own headers are ASCII, a character a byte.
    """
    if limit is None:
        return True
    value = args[1] if len(args) > 1 else kwargs.get("value")
    key = args[2] if len(args) > 2 else kwargs.get("key")
    given = args[headers_position] if len(args) > headers_position else kwargs.get("headers")
    size = RECORD_OVERHEAD + _HEADER_OVERHEAD * len(carrier)
    size += sum(map(len, carrier)) + sum(map(len, carrier.values()))
    callers = _size_of(value, key, given)
    if callers is None:
        return True  # a type the client refuses: it says so, as without tracekit
    size += callers
    if size <= limit:
        return True
    # Its bytes alone (no overhead: the least either client counts) past the limit: the client
    # refuses it as without tracekit, and no record goes out to warn about.
    alone = _size_of(value, key, given, 0)
    if alone is not None and alone <= limit:
        _message_headers.context_left_out.warn(
            "Kafka record", f"its headers could pass the producer's {limit} bytes"
        )
    return False


def _size_of(
    value: object, key: object, given: object, per_header: int = _HEADER_OVERHEAD
) -> int | None:
    """The bytes of the caller's value, key and headers (each with ``per_header`` bytes for its
    length varints)."""
    if type(value) is bytes and (key is None or type(key) is bytes) and not given:
        return len(value) + (len(key) if key is not None else 0)  # the usual record
    value_size, key_size = byte_length(value), byte_length(key)
    if value_size is None or key_size is None:
        return None
    headers_size = _headers_size(given, per_header)
    return None if headers_size is None else value_size + key_size + headers_size


def _headers_size(given: object, per_header: int) -> int | None:
    if not given:
        return 0
    if isinstance(given, dict):
        pairs: Iterable[object] = given.items()
    elif isinstance(given, list | tuple):
        pairs = given
    else:
        return None  # not a header form the client takes
    size = 0
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return None
        name, value = byte_length(pair[0]), byte_length(pair[1])
        if name is None or value is None:
            return None
        size += name + value + per_header
    return size


def _given_headers(args: tuple[Any, ...], kwargs: dict[str, Any], position: int | None) -> object:
    """The record headers the caller passed, if any (None: the format has none)."""
    if position is None:
        return None
    return args[position] if len(args) > position else kwargs.get("headers")


def _with_headers(
    args: tuple[Any, ...], kwargs: dict[str, Any], carrier: dict[str, str], position: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with tracekit's headers merged into ``headers``."""
    positional = len(args) > position
    merged = merged_headers(args[position] if positional else kwargs.get("headers"), carrier)
    if merged is None:
        return args, kwargs
    if positional:
        return (*args[:position], merged, *args[position + 1 :]), kwargs
    return args, {**kwargs, "headers": merged}


def merged_headers(given: object, carrier: dict[str, str]) -> Any:
    """``given`` (pairs or dict) with tracekit's headers replacing same-named ones; None: leave."""
    if not carrier:
        return None
    encoded = [(name, value.encode("utf-8")) for name, value in carrier.items()]
    # The usual record has no headers of the caller's: none to look through for tracekit's
    # names (which take reading the options).
    if not given and isinstance(given, dict | list | type(None)):
        return dict(encoded) if isinstance(given, dict) else encoded
    ours = {name.lower() for name in carrier} | replaced_names()
    if isinstance(given, dict):
        kept = {k: v for k, v in given.items() if not _named(k, ours)}
        return {**kept, **dict(encoded)}
    if given is None or isinstance(given, list):  # (both clients refuse a tuple)
        pairs = [p for p in given or () if not (isinstance(p, tuple) and _named(p[0], ours))]
        return pairs + encoded
    return None  # a header form the client rejects anyway: let it say so


def _named(name: object, names: set[str]) -> bool:
    return isinstance(name, str) and name.lower() in names


# Record times taken as publish times, as the header's are: from 2001 (an earlier one is a
# producer's clock or unit gone wrong) to the last millisecond signed 64-bit nanoseconds hold.
# Outside them, silently none: the record has no header to warn about.
_EARLIEST_RECORD_MS = 978_307_200_000
_LATEST_RECORD_MS = 2**63 // 1_000_000


def with_record_time(headers: Any, timestamp_ms: object) -> Any:
    """A consumed record's headers; for one without tracekit's publish time (a producer without
    tracekit), the record's own timestamp (CreateTime or LogAppendTime, in milliseconds; None
    when the record has none) as that time, so its queue wait is measured from it, as SQS's
    ``SentTimestamp`` is: checked and bounded like the header (a time before 2001 is ignored,
    one in the future is a wait of 0)."""
    if type(timestamp_ms) is not int or not _EARLIEST_RECORD_MS <= timestamp_ms < _LATEST_RECORD_MS:
        return headers
    if headers is None:
        headers = []
    elif not isinstance(headers, list):
        return headers
    for pair in headers:
        if isinstance(pair, tuple) and len(pair) == 2 and _is_publish_time(pair[0]):
            return headers
    return [*headers, (messaging.PUBLISH_TIME_HEADER, str(timestamp_ms * 1_000_000))]


def _is_publish_time(name: object) -> bool:
    return _message_headers.lower_name(name) == messaging.PUBLISH_TIME_HEADER
