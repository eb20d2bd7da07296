"""botocore (and boto3) SQS and SNS: PRODUCER spans on sends, receives that ask for tracekit's
attributes.

- ``SendMessage`` runs inside ``messaging.publish``; the context goes into ``MessageAttributes``
  within SQS's limit of 10 (see ``tracekit.sqs``), and under ``OTEL_PROPAGATORS=xray`` the X-Ray
  header into the ``AWSTraceHeader`` system attribute too, unless the caller set it.
  ``SendMessageBatch`` is one PRODUCER span whose context every entry carries; it ends failed
  when SQS refused any entry (answering 200 with a ``Failed`` list). A message (or
  batch) that tracekit's attributes would take past SQS's size limit goes out without them,
  with a rate-limited warning.
- ``ReceiveMessage`` adds tracekit's attribute names to ``MessageAttributeNames`` and
  ``SentTimestamp`` and ``AWSTraceHeader`` to ``MessageSystemAttributeNames``
  (``AttributeNames`` on a botocore whose model predates it, or when the caller asked under
  that older name alone) unless the caller already asked for all.
  The handler runs in ``tracekit.sqs.consume(message, queue=...)``: boto3 returns a list, so
  there is no handler boundary to trace automatically.
- SNS ``Publish`` and ``PublishBatch`` to a topic are PRODUCER spans whose context goes into
  the message attributes as for SQS; the queues subscribed to the topic hand it on.

Why a wrapper on ``BaseClient._make_api_call`` and not botocore's events: ``before-parameter-build``
fires before parameter validation, and no event follows a validation failure, so a PRODUCER span
(and its attached context) opened there could never be closed. The wrapper sees exactly one call
and re-raises its exception unchanged. Other services and operations pass straight through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

from tracekit import messaging, propagation, semconv, sqs
from tracekit._messaging import headers as _message_headers
from tracekit._runtime.guard import mark_failed, report_once, safe
from tracekit._runtime.state import current_options
from tracekit.instrumentation._base import Instrumentor

__all__ = ["BotocoreInstrumentor"]

_ALL = frozenset(("All", ".*"))


class BotocoreInstrumentor(Instrumentor):
    """Traces SQS sends and prepares SQS receives on every botocore client."""

    target = "botocore.client"

    def patch(self, module: ModuleType) -> None:
        self.wrap(module.BaseClient, "_make_api_call", _traced_api_call)


def _traced_api_call(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    operation, params = _bind(*args, **kwargs)
    handler = _HANDLERS.get((_service_of(instance), operation))
    if handler is None or not isinstance(params, dict):
        return wrapped(*args, **kwargs)
    return handler(lambda new_params: wrapped(operation, new_params), params, instance)


def _bind(operation_name: Any, api_params: Any) -> tuple[Any, Any]:
    return operation_name, api_params


def _service_of(client: Any) -> str | None:
    try:
        return str(client.meta.service_model.service_name)
    except AttributeError:
        return None


def _send_message(
    call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    carrier: dict[str, str] = {}
    queue = sqs.queue_name(str(params.get("QueueUrl", "")))
    with messaging.publish(carrier, system=sqs.SYSTEM, destination=queue) as sent:
        result = call(_with_attributes(params, carrier))
        if isinstance(result, dict):
            sent.set_message_id(result.get("MessageId"))
        return result


def _send_message_batch(
    call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    entries = params.get("Entries")
    if not isinstance(entries, list | tuple):  # (botocore takes either)
        return call(params)
    carrier: dict[str, str] = {}
    queue = sqs.queue_name(str(params.get("QueueUrl", "")))
    count = {semconv.MESSAGING_BATCH_MESSAGE_COUNT: len(entries)}
    with messaging.publish(carrier, system=sqs.SYSTEM, destination=queue, attributes=count) as sent:
        traced = [_with_attributes(entry, carrier) for entry in entries]
        if _pushed_over(_batch_size(traced), lambda: _batch_size(entries)):
            _left_out("message batch to SQS")  # SQS bounds a batch's total by the same size
            traced = [_with_x_ray_only(entry, carrier) for entry in entries]
        result = call({**params, "Entries": traced})
        _settle_batch(sent, result, len(entries), client, "SendMessageBatch")
        return result


def _settle_batch(
    sent: messaging.Publication, result: Any, total: int, client: Any, operation: str
) -> None:
    """SQS and SNS answer a batch per entry: some may be refused."""
    accepted = result.get("Successful") if isinstance(result, dict) else None
    if isinstance(accepted, list):
        sent.set_accepted(len(accepted))
    safe("aws batch result", lambda: _note_refused(sent, result, total, client, operation))


def _note_refused(
    sent: messaging.Publication, result: Any, total: int, client: Any, operation: str
) -> None:
    """SQS and SNS answer a batch 200 and list the entries they refused apart (``Failed``): the
    span fails with the error a send refused for the first one's reason raises. A batch refused
    whole failed as a send does; one refused in part still counts the messages taken."""
    failed = result.get("Failed") if isinstance(result, dict) else None
    if not isinstance(failed, list) or not failed:
        return
    code = _error_code(failed[0])
    service = _service_of(client) or "aws"
    message = f"{service.upper()} refused {len(failed)} of {total} messages of the batch"
    refusal = client.exceptions.from_code(code)  # botocore's class for the code, as raised
    error = refusal({"Error": {"Code": code, "Message": message}}, operation)
    if len(failed) >= total:
        sent.fail(error)
    elif sent.span is not None:
        mark_failed(sent.span, error)


def _error_code(entry: object) -> str:
    code = entry.get("Code") if isinstance(entry, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else "Unknown"


_ERROR_CODE = re.compile(r"[A-Za-z0-9_.]{1,128}")  # AWS's codes; anything else is not shown


def _batch_size(entries: Sequence[Any]) -> int:
    return sum(_size_of(entry) for entry in entries if isinstance(entry, dict))


def _size_of(message: dict[str, Any]) -> int:
    return sqs.message_size(message.get("MessageBody"), message.get("MessageAttributes"))


def _with_attributes(message: Any, carrier: dict[str, str]) -> Any:
    """``message`` (params or a batch entry) with tracekit's attributes; unchanged if unsure
    (an entry that is not a dict: botocore refuses it, as it would without tracekit)."""
    if not carrier or not isinstance(message, dict):
        return message
    attributes = message.get("MessageAttributes")
    if not (attributes is None or isinstance(attributes, dict)):
        return message
    merged = _with_context(attributes, carrier, "SQS")
    x_ray = _x_ray_system_attribute(message, carrier)
    traced = {**message, "MessageAttributes": merged, **x_ray}
    if _pushed_over(_size_of(traced), lambda: _size_of(message)):
        _left_out("message to SQS")
        return {**message, **x_ray}  # SQS does not count a system attribute towards the size
    return traced


def _with_x_ray_only(message: Any, carrier: dict[str, str]) -> Any:
    """A batch entry sent without tracekit's attributes for want of room: the X-Ray header,
    which does not count towards the size, still goes."""
    if not carrier or not isinstance(message, dict):
        return message
    return {**message, **_x_ray_system_attribute(message, carrier)}


def _x_ray_system_attribute(message: dict[str, Any], carrier: dict[str, str]) -> dict[str, Any]:
    """Under ``OTEL_PROPAGATORS=xray``: the X-Ray header in the ``AWSTraceHeader`` system
    attribute as well, where AWS's own consumers (a Lambda SQS trigger, X-Ray) read it; none
    when the caller set that attribute itself."""
    header = next((v for k, v in carrier.items() if k.lower() == sqs.X_RAY_HEADER), None)
    system = message.get("MessageSystemAttributes")
    if header is None or not (system is None or isinstance(system, dict)):
        return {}
    if system and sqs.TRACE_HEADER_ATTRIBUTE in system:
        return {}
    value = {"DataType": "String", "StringValue": header}
    return {"MessageSystemAttributes": {**(system or {}), sqs.TRACE_HEADER_ATTRIBUTE: value}}


def _pushed_over(size: int, size_without: Callable[[], int]) -> bool:
    """Whether tracekit's attributes take a message (or batch) past SQS's limit; one already
    past it without them goes out as it is, for SQS to refuse as it would without tracekit."""
    return size > sqs.MAX_MESSAGE_SIZE and size_without() <= sqs.MAX_MESSAGE_SIZE


def _left_out(what: str) -> None:
    _message_headers.context_left_out.warn(
        what, f"its attributes would pass the {sqs.MAX_MESSAGE_SIZE} bytes SQS and SNS take"
    )


def _with_context(
    attributes: dict[str, Any] | None, carrier: dict[str, str], service: str
) -> dict[str, Any]:
    """``attributes`` with tracekit's; the caller's own alone when they leave no room, which
    the log says (rate-limited: it is the caller's choice, not tracekit's failure)."""
    merged = sqs.add_context(attributes, carrier)
    if sqs.PACKED_ATTRIBUTE not in merged and not any(name in merged for name in carrier):
        reason = f"it already has the {sqs.MAX_ATTRIBUTES} message attributes {service} allows"
        _message_headers.context_left_out.warn(f"message to {service}", reason)
    return merged


def _receive_message(
    call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    try:
        params = _asking_for_context(params, _system_names_parameter(client))
    except Exception as error:
        report_once("sqs receive attributes", error)
    return call(params)


def _asking_for_context(params: dict[str, Any], system_parameter: str) -> dict[str, Any]:
    """``params`` asking for what tracekit reads too. System attributes go where the caller asked
    for its own: into ``AttributeNames`` when it used only that older name (SQS is not known to
    honour both names in one request, and the caller's own, ``ApproximateReceiveCount`` for a
    dead-letter decision, must not be lost)."""
    if "AttributeNames" in params and "MessageSystemAttributeNames" not in params:
        system_parameter = "AttributeNames"
    names = _attribute_names()
    wanted = _with_names(params.get("MessageAttributeNames"), names)
    system = params.get("MessageSystemAttributeNames")
    legacy = params.get("AttributeNames")
    asked_all = any(_asks_all(given) for given in (system, legacy))
    new = {**params, "MessageAttributeNames": wanted}
    if not asked_all:
        new[system_parameter] = _with_names(
            params.get(system_parameter), ["SentTimestamp", sqs.TRACE_HEADER_ATTRIBUTE]
        )
    return new


def _system_names_parameter(client: Any) -> str:
    """Where this client asks for system attributes: ``MessageSystemAttributeNames``, or the
    older ``AttributeNames`` on a botocore whose SQS model predates it (it refuses the new one)."""
    request = client.meta.service_model.operation_model("ReceiveMessage").input_shape
    current = "MessageSystemAttributeNames"
    return current if current in request.members else "AttributeNames"


def _attribute_names() -> list[str]:
    """The message attributes tracekit reads. SQS matches the names asked for case-sensitively:
    the correlation headers are asked for as tracekit writes them (lower case) and as
    configured (``X-Correlation-ID``, ``X-Request-ID``), the spelling a producer without
    tracekit uses. A name SQS refuses is not asked for (SQS would refuse the whole receive);
    tracekit sends such a field packed."""
    options = current_options()
    correlation_headers = (options.response_header, *options.correlation_headers)
    names = (
        "traceparent",
        "tracestate",
        "baggage",
        *propagation.carried_fields(),
        *(name.lower() for name in correlation_headers),
        *correlation_headers,
        messaging.PUBLISH_TIME_HEADER,
        sqs.PACKED_ATTRIBUTE,
    )
    return [name for name in dict.fromkeys(names) if sqs.is_attribute_name(name)]


def _asks_all(given: object) -> bool:
    return isinstance(given, list | tuple) and any(name in _ALL for name in given)


def _with_names(given: object, names: Iterable[str]) -> Any:
    if given is not None and not isinstance(given, list | tuple):
        return given  # botocore will reject it with its own message
    if _asks_all(given):
        return given
    current = list(given or [])
    return current + [name for name in names if name not in current]


def _publish_to_topic(
    call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    """SNS ``Publish`` to a topic: a PRODUCER span, and the context in the message attributes
    as for SQS (a subscribed queue gets them as its own attributes with raw delivery, else in
    SNS's envelope, where ``tracekit.sqs.consume`` reads them). A text message to a phone number
    or a push to a mobile endpoint passes untouched: SNS reads their attributes itself."""
    topic = _topic_name(params)
    if topic is None:
        return call(params)
    carrier: dict[str, str] = {}
    with messaging.publish(carrier, system=_SNS_SYSTEM, destination=topic) as sent:
        result = call(_with_topic_attributes(params, carrier))
        if isinstance(result, dict):
            sent.set_message_id(result.get("MessageId"))
        return result


def _publish_batch_to_topic(
    call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    """SNS ``PublishBatch``: one PRODUCER span whose context every entry carries."""
    entries = params.get("PublishBatchRequestEntries")
    topic = _topic_name(params)
    if topic is None or not isinstance(entries, list | tuple):
        return call(params)
    carrier: dict[str, str] = {}
    count = {semconv.MESSAGING_BATCH_MESSAGE_COUNT: len(entries)}
    with messaging.publish(
        carrier, system=_SNS_SYSTEM, destination=topic, attributes=count
    ) as sent:
        traced = [_with_topic_attributes(entry, carrier) for entry in entries]
        if _pushed_over(_topic_batch_size(traced), lambda: _topic_batch_size(entries)):
            _left_out("message batch to SNS")  # SNS bounds a batch's total by the same size
            traced = list(entries)
        result = call({**params, "PublishBatchRequestEntries": traced})
        _settle_batch(sent, result, len(entries), client, "PublishBatch")
        return result


def _topic_batch_size(entries: Sequence[Any]) -> int:
    return sum(_topic_message_size(entry) for entry in entries if isinstance(entry, dict))


def _topic_name(params: dict[str, Any]) -> str | None:
    arn = params.get("TopicArn") or params.get("TargetArn")
    if not isinstance(arn, str) or "/" in arn:  # (a mobile endpoint's ARN: .../endpoint/...)
        return None
    return sqs.queue_name(arn)


def _with_topic_attributes(params: Any, carrier: dict[str, str]) -> Any:
    """``params`` (or a batch entry) with tracekit's attributes, within the 10 and the size SNS
    takes (the same as SQS's, which its queues apply again on delivery); unchanged if unsure."""
    if not carrier or not isinstance(params, dict):
        return params
    attributes = params.get("MessageAttributes")
    if not (attributes is None or isinstance(attributes, dict)):
        return params
    traced = {**params, "MessageAttributes": _with_context(attributes, carrier, "SNS")}
    if _pushed_over(_topic_message_size(traced), lambda: _topic_message_size(params)):
        _left_out("message to SNS")
        return params
    return traced


def _topic_message_size(params: dict[str, Any]) -> int:
    return sqs.message_size(params.get("Message"), params.get("MessageAttributes"))


_SNS_SYSTEM = "aws.sns"  # OpenTelemetry's messaging.system for Amazon SNS

_Handler = Callable[[Callable[[dict[str, Any]], Any], dict[str, Any], Any], Any]
_HANDLERS: dict[tuple[str | None, str], _Handler] = {
    ("sqs", "SendMessage"): _send_message,
    ("sqs", "SendMessageBatch"): _send_message_batch,
    ("sqs", "ReceiveMessage"): _receive_message,
    ("sns", "Publish"): _publish_to_topic,
    ("sns", "PublishBatch"): _publish_batch_to_topic,
}
