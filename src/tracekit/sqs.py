"""Amazon SQS messages: where tracekit's context travels in them, and the consumer side.

SQS gives a message at most 10 message attributes. tracekit's producer side (the ``botocore``
instrumentation) writes its fields — ``traceparent``, ``tracestate``, ``baggage``, the
correlation header and ``tracekit-publish-time`` — as one String attribute each when they fit
beside the caller's own, else packs them as JSON into the single attribute ``tracekit-context``,
and adds nothing when the caller already uses all 10 (the message goes out unchanged). Nor does
it add any when they would take a message past ``MAX_MESSAGE_SIZE``, which SQS counts as the body
plus every attribute's name, data type and value (``message_size``).

A message sent with ``DelaySeconds`` also carries when it was due (``tracekit-due-time``), so
that the delay asked for is not counted as a backlog on the consumer's side.

A receiver opens the CONSUMER span around its handler::

    response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    for message in response.get("Messages", []):
        with tracekit.sqs.consume(message, queue=url):
            handle(message["Body"])

The instrumented ``ReceiveMessage`` asks SQS for the attributes this needs. A message an SNS
topic delivered (an envelope, unless raw message delivery is on) carries the publisher's
context in the envelope's message attributes, read the same way. Messages from
producers without tracekit start a new trace, unless ``OTEL_PROPAGATORS`` names ``xray`` and
SQS kept their X-Ray header (``AWSTraceHeader``); their queue wait comes from SQS's
``SentTimestamp`` (millisecond precision) when the receive asked for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from tracekit import messaging
from tracekit._digits import ascii_int
from tracekit._messaging.headers import byte_length, callers_own
from tracekit._runtime.guard import report_once, safe

SYSTEM = "aws_sqs"
PACKED_ATTRIBUTE = "tracekit-context"
MAX_ATTRIBUTES = 10
MAX_PACKED_LENGTH = 16_384  # our fields are bounded far below this; anything longer is not ours
MAX_DELAY_SECONDS = 900  # the longest DelaySeconds SQS takes, of a queue or of a message
MAX_MESSAGE_SIZE = 262_144  # bytes: SQS's long-standing limit (MaximumMessageSize's old default)
MAX_ENVELOPE_LENGTH = 2 * 1_048_576  # an SNS envelope of the largest message, JSON-escaped
TRACE_HEADER_ATTRIBUTE = "AWSTraceHeader"  # the system attribute AWS keeps X-Ray's header in
# When a message sent with ``DelaySeconds`` was due (unix ns): its wait until then was asked for
DUE_TIME_ATTRIBUTE = "tracekit-due-time"
X_RAY_HEADER = "x-amzn-trace-id"

__all__ = [
    "DUE_TIME_ATTRIBUTE",
    "MAX_ATTRIBUTES",
    "MAX_DELAY_SECONDS",
    "MAX_ENVELOPE_LENGTH",
    "MAX_MESSAGE_SIZE",
    "MAX_PACKED_LENGTH",
    "PACKED_ATTRIBUTE",
    "SYSTEM",
    "TRACE_HEADER_ATTRIBUTE",
    "X_RAY_HEADER",
    "add_context",
    "consume",
    "consume_batch",
    "headers_of",
    "is_attribute_name",
    "message_size",
    "queue_name",
]


def queue_name(queue: str) -> str:
    """The queue's name from its URL or ARN (a Lambda record's ``eventSourceARN``), or the
    name itself, bounded."""
    name = queue.rstrip("/").rsplit("/", 1)[-1]
    if name.startswith("arn:"):
        name = name.rsplit(":", 1)[-1]
    return name[:256]


def add_context(attributes: Mapping[str, Any] | None, fields: Mapping[str, str]) -> dict[str, Any]:
    """``attributes`` plus tracekit's ``fields``, as separate or packed String attributes.

    Attributes the caller set under tracekit's names, in any capitals, are replaced (a
    ``tracekit-due-time`` of a message relayed is left out, unless ``fields`` has one). When there
    is no room even for the packed attribute, the caller's attributes come back unchanged.
    Fields named as SQS refuses an attribute name (a configured header such as ``X-Corr!d``)
    are always packed.
    """
    own = callers_own(attributes or {}, fields)
    own.pop(PACKED_ATTRIBUTE, None)
    own.pop(DUE_TIME_ATTRIBUTE, None)  # a relayed message's: this one is due as it is sent
    if len(own) + len(fields) <= MAX_ATTRIBUTES and all(map(is_attribute_name, fields)):
        return {**own, **{name: _string(value) for name, value in fields.items()}}
    if len(own) < MAX_ATTRIBUTES:
        return {**own, PACKED_ATTRIBUTE: _string(json.dumps(dict(fields), sort_keys=True))}
    return dict(attributes or {})


def is_attribute_name(name: str) -> bool:
    """Whether SQS takes ``name`` as a message attribute name: letters, digits, ``_``, ``-``
    and ``.`` (no leading, trailing or doubled period), at most 256, not ``AWS.``/``Amazon.``."""
    return (
        _ATTRIBUTE_NAME.fullmatch(name) is not None
        and ".." not in name
        and not name.lower().startswith(("aws.", "amazon."))
    )


_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,254}[A-Za-z0-9_-])?")


def message_size(body: object, attributes: Mapping[str, Any] | None) -> int:
    """The bytes SQS counts against its size limit: the body (UTF-8) and each message
    attribute's name, data type and value."""
    size = _byte_length(body)
    for name, attribute in (attributes or {}).items():
        size += _byte_length(name)
        if isinstance(attribute, Mapping):
            for part in ("DataType", "StringValue", "BinaryValue"):
                size += _byte_length(attribute.get(part))
    return size


def _byte_length(value: object) -> int:
    return byte_length(value) or 0  # (a type boto refuses: it says so)


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def headers_of(message: Mapping[str, Any] | Any) -> dict[str, str]:
    """The text message attributes of a received ``message`` (a dict of boto3's client, or
    boto3's resource ``sqs.Message``), with packed context unpacked; none when they cannot be
    read (the message is handled as one without context)."""
    try:
        return _read_headers(_as_mapping(message))
    except Exception as error:
        report_once("sqs message attributes", error)
        return {}


def _as_mapping(message: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    """A received message as boto3's client returns it. boto3's resource API
    (``queue.receive_messages()``) returns ``sqs.Message`` objects holding the same fields as
    attributes; Lambda's SQS event source, records spelling them in camelCase."""
    if isinstance(message, Mapping):
        is_lambda_record = "messageId" in message and "MessageId" not in message
        return _from_lambda_record(message) if is_lambda_record else message
    return {
        "MessageId": getattr(message, "message_id", None),
        "Body": getattr(message, "body", None),  # (an SNS envelope's attributes are in it)
        "MessageAttributes": getattr(message, "message_attributes", None),
        "Attributes": getattr(message, "attributes", None),
    }


def _from_lambda_record(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return {
        "MessageId": record.get("messageId"),
        "Body": record.get("body"),
        "Attributes": record.get("attributes"),
        "MessageAttributes": _from_lambda_attributes(record.get("messageAttributes")),
    }


def _from_lambda_attributes(attributes: object) -> dict[str, Any] | None:
    """Lambda's ``{"stringValue", "dataType", ...}`` message attributes in boto3's spelling."""
    if not isinstance(attributes, Mapping):
        return None
    return {
        name: {"StringValue": attribute.get("stringValue")}
        for name, attribute in attributes.items()
        if isinstance(attribute, Mapping)
    }


def _read_headers(message: Mapping[str, Any]) -> dict[str, str]:
    headers = _text_attributes(message.get("MessageAttributes"))
    if not headers:
        headers = _sns_envelope_attributes(message.get("Body"))
    _unpack(headers)
    if messaging.PUBLISH_TIME_HEADER not in headers:
        _publish_time_from_sent_timestamp(message, headers)
    if not any(name.lower() == X_RAY_HEADER for name in headers):
        _x_ray_from_trace_header(message, headers)
    return headers


def _text_attributes(attributes: object) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(attributes, Mapping):
        for name, attribute in attributes.items():
            value = attribute.get("StringValue") if isinstance(attribute, Mapping) else None
            if isinstance(name, str) and isinstance(value, str):
                headers[name] = value
    return headers


def _sns_envelope_attributes(body: object) -> dict[str, str]:
    """The String message attributes of an SNS notification. Unless raw message delivery is
    on, SNS hands a subscribed queue a JSON envelope holding the publisher's attributes as
    ``{"Type": "String", "Value": ...}``, and sets no SQS message attributes."""
    if not isinstance(body, str) or len(body) > MAX_ENVELOPE_LENGTH or '"TopicArn"' not in body:
        return {}  # (a cheap test first: most bodies are not envelopes)
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):  # not an envelope after all
        return {}
    if not isinstance(envelope, dict) or envelope.get("Type") != "Notification":
        return {}
    attributes = envelope.get("MessageAttributes")
    if not isinstance(attributes, dict):
        return {}
    return {
        name: attribute["Value"]
        for name, attribute in attributes.items()
        if isinstance(attribute, dict)
        and attribute.get("Type") == "String"
        and isinstance(attribute.get("Value"), str)
    }


def _unpack(headers: MutableMapping[str, str]) -> None:
    packed = headers.pop(PACKED_ATTRIBUTE, None)
    if packed is None or len(packed) > MAX_PACKED_LENGTH:
        return
    try:
        fields = json.loads(packed)
    except (ValueError, RecursionError):  # not ours, damaged or nested past the parser's limit
        return  # the message is handled as one without context
    if isinstance(fields, dict):
        headers.update((k, v) for k, v in fields.items() if isinstance(v, str) and k not in headers)


def _publish_time_from_sent_timestamp(
    message: Mapping[str, Any], headers: MutableMapping[str, str]
) -> None:
    system = message.get("Attributes")
    sent = system.get("SentTimestamp") if isinstance(system, Mapping) else None
    millis = ascii_int(sent, 16)
    if millis is not None:
        headers[messaging.PUBLISH_TIME_HEADER] = str(millis * 1_000_000)


def _x_ray_from_trace_header(message: Mapping[str, Any], headers: MutableMapping[str, str]) -> None:
    """AWS's own producers (Lambda, SNS, an AWS SDK with X-Ray) send the trace in the
    ``AWSTraceHeader`` system attribute: it is the message's ``X-Amzn-Trace-Id``, read when
    ``OTEL_PROPAGATORS`` names ``xray`` (a message attribute of that name comes first)."""
    system = message.get("Attributes")
    value = system.get(TRACE_HEADER_ATTRIBUTE) if isinstance(system, Mapping) else None
    if isinstance(value, str):
        headers[X_RAY_HEADER] = value


def consume(
    message: Mapping[str, Any] | Any, *, queue: str, delay_seconds: int = 0, **options: Any
) -> messaging.Delivery:
    """``with consume(message, queue=url_or_name):`` — the CONSUMER span around one handler.

    ``message``: a dict from the client's ``receive_message``, an ``sqs.Message`` from the
    resource API's ``receive_messages``, or a record of a Lambda SQS event (``queue`` may be
    its ``eventSourceARN``). ``delay_seconds``: the queue's own ``DelaySeconds`` setting, which
    no message says: the wait it causes is then counted as asked for, not as a backlog (a
    message sent with a ``DelaySeconds`` of its own goes by that, as SQS does). ``options`` go
    to ``tracekit.messaging.consume`` (``tracer_provider``, ``registry``...).
    """
    delay_ns = _queue_delay_ns(delay_seconds)
    fields = safe("sqs message attributes", lambda: _as_mapping(message)) or {}
    headers = headers_of(fields)
    return messaging.consume(
        headers,
        system=SYSTEM,
        destination=queue_name(queue),
        message_id=fields.get("MessageId"),
        due_unix_nano=_due_time(headers, delay_ns),
        **options,
    )


def consume_batch(
    messages: Sequence[Mapping[str, Any] | Any],
    *,
    queue: str,
    delay_seconds: int = 0,
    **options: Any,
) -> messaging.Delivery:
    """One CONSUMER span around a handler of several messages, linked to each producer
    (``delay_seconds`` as for ``consume``)."""
    delay_ns = _queue_delay_ns(delay_seconds)
    headers = [headers_of(message) for message in messages]
    return messaging.consume_batch(
        headers,
        system=SYSTEM,
        destination=queue_name(queue),
        due_unix_nanos=[_due_time(fields, delay_ns) for fields in headers],
        **options,
    )


def _queue_delay_ns(delay_seconds: int) -> int:
    """A queue's ``DelaySeconds`` (0 to 900, as SQS takes it) in nanoseconds."""
    if type(delay_seconds) is not int or not 0 <= delay_seconds <= MAX_DELAY_SECONDS:
        raise ValueError(
            f"delay_seconds must be a whole number of seconds from 0 to {MAX_DELAY_SECONDS}"
        )
    return delay_seconds * 1_000_000_000


def _due_time(headers: Mapping[str, str], queue_delay_ns: int) -> int | None:
    """When a message was due (unix ns): as its producer wrote it for one sent with
    ``DelaySeconds``, else its publish time plus the queue's delay."""
    due = ascii_int(headers.get(DUE_TIME_ATTRIBUTE), 19)
    if due is not None or not queue_delay_ns:
        return due
    published = ascii_int(headers.get(messaging.PUBLISH_TIME_HEADER), 19)
    return None if published is None else published + queue_delay_ns
