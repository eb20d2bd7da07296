"""botocore (and boto3) SQS and SNS: PRODUCER spans on sends, receives that ask for tracekit's
attributes.

- ``SendMessage`` runs inside ``messaging.publish``; the context goes into ``MessageAttributes``
  within SQS's limit of 10 (see ``tracekit.sqs``), and under ``OTEL_PROPAGATORS=xray`` the X-Ray
  header into the ``AWSTraceHeader`` system attribute too, unless the caller set it.
  ``SendMessageBatch`` inside a request is one PRODUCER span whose context every entry
  carries; it ends failed when SQS refused any entry (answering 200 with a ``Failed`` list).
  Outside any request each entry is a job of its own with a PRODUCER span of its own, failed
  when SQS refused that entry: one span for all put unrelated jobs into one trace. A message (or
  batch) that tracekit's attributes would take past SQS's size limit goes out without them,
  with a rate-limited warning.
- ``ReceiveMessage`` adds tracekit's attribute names to ``MessageAttributeNames`` and
  ``SentTimestamp`` (and under ``xray`` ``AWSTraceHeader``) to ``MessageSystemAttributeNames``
  (``AttributeNames`` on a botocore whose model predates it, or when the caller asked under
  that older name alone) unless the caller already asked for all.
  The handler runs in ``tracekit.sqs.consume(message, queue=...)``: boto3 returns a list, so
  there is no handler boundary to trace automatically.
- SNS ``Publish`` and ``PublishBatch`` to a topic are PRODUCER spans whose context goes into
  the message attributes as for SQS (a batch as SQS's is); the queues subscribed to the topic
  hand it on.

Why a wrapper on ``BaseClient._make_api_call`` and not botocore's events: ``before-parameter-build``
fires before parameter validation, and no event follows a validation failure, so a PRODUCER span
(and its attached context) opened there could never be closed. The wrapper sees exactly one call
and re-raises its exception unchanged. Other services and operations pass straight through.
The HTTP request below a call traced here gets no span of its own (nor trace headers): the
PRODUCER span stands for a send, and a receive is a poll, not a request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context

from tracekit import correlation, messaging, propagation, semconv, sqs
from tracekit._digits import ascii_int
from tracekit._messaging import headers as _message_headers
from tracekit._propagation.trace_formats import B3
from tracekit._runtime.guard import mark_failed, report_once, safe, suppress_nested_http_in
from tracekit._runtime.state import current_options
from tracekit.instrumentation._base import Instrumentor

__all__ = ["BotocoreInstrumentor"]

_ALL = frozenset(("All", ".*"))


class BotocoreInstrumentor(Instrumentor):
    """Traces SQS sends and SNS publishes, and prepares SQS receives, on every botocore client."""

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
    return handler(
        lambda new_params: _without_http_span(wrapped, operation, new_params), params, instance
    )


def _without_http_span(wrapped: Callable[..., Any], operation: str, params: dict[str, Any]) -> Any:
    """The call, its HTTP request untraced: a send's PRODUCER span stands for it, and a
    receive is a poll (an idle worker's, every few seconds), not a request of its own."""
    token = suppress_nested_http_in(otel_context.get_current(), None)
    try:
        return wrapped(operation, params)
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]  # attach's token, typed object


def _bind(operation_name: Any, api_params: Any) -> tuple[Any, Any]:
    return operation_name, api_params


def _service_of(client: Any) -> str | None:
    try:
        return str(client.meta.service_model.service_name)
    except AttributeError:
        return None


@dataclass(frozen=True)
class _Sending:
    """What differs between sending to an SQS queue and publishing to an SNS topic."""

    service: str  # as the log names it
    system: str  # OpenTelemetry's messaging.system
    destination: Callable[[dict[str, Any]], str | None]  # None: not traced
    body: str  # the parameter holding a message's body
    entries: str  # the batch operation's parameter listing its messages
    batch_operation: str
    x_ray: bool  # whether the X-Ray header goes into the ``AWSTraceHeader`` system attribute
    delays: bool  # whether a message may ask to be delivered later (SQS's ``DelaySeconds``)


def _send_one(
    how: _Sending, call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    """SQS ``SendMessage``, SNS ``Publish``: a PRODUCER span, and its context in the message."""
    destination = how.destination(params)
    if destination is None:
        return call(params)
    carrier: dict[str, str] = {}
    publishing = messaging.publish(carrier, system=how.system, destination=destination)
    with publishing._beside(_callers_attributes(params)) as sent:
        result = call(_with_attributes(params, carrier, how))
        if isinstance(result, dict):
            sent.set_message_id(result.get("MessageId"))
        return result


def _send_batch(
    how: _Sending, call: Callable[[dict[str, Any]], Any], params: dict[str, Any], client: Any
) -> Any:
    """SQS ``SendMessageBatch``, SNS ``PublishBatch``: inside a request, one PRODUCER span whose
    context every entry carries; outside any request, one span per entry (``_send_each``)."""
    entries = params.get(how.entries)
    destination = how.destination(params)
    if destination is None or not isinstance(entries, list | tuple):  # (botocore takes either)
        return call(params)
    if correlation.correlation_id() is None:
        return _send_each(how, call, params, client, entries, destination)
    carrier: dict[str, str] = {}
    count = {semconv.MESSAGING_BATCH_MESSAGE_COUNT: len(entries)}
    publishing = messaging.publish(
        carrier, system=how.system, destination=destination, attributes=count
    )
    with publishing as sent:
        traced = _traced_batch(entries, [carrier] * len(entries), how)
        result = call({**params, how.entries: traced})
        _settle_batch(sent, result, len(entries), client, how.batch_operation)
        return result


def _send_each(
    how: _Sending,
    call: Callable[[dict[str, Any]], Any],
    params: dict[str, Any],
    client: Any,
    entries: Sequence[Any],
    destination: str,
) -> Any:
    """A batch sent outside any request (a script, a cron job): its entries are as many jobs,
    each a message of its own as if sent alone, with its own PRODUCER span (a trace of its own
    where no span is current), its own correlation ID (the entry's, else a new one) and its own
    outcome. One span for all put every job's consumer into one trace, shown by ``tracekit
    trace`` of any of them."""
    sends = [_start_entry(how, destination, entry) for entry in entries]
    traced = _traced_batch(entries, [carrier for _, _, carrier in sends], how)
    try:
        result = call({**params, how.entries: traced})
    except BaseException as error:
        for publishing, _, _ in sends:
            publishing.end(error)
        raise
    try:
        safe("aws batch result", lambda: _settle_each(sends, entries, result, client, how))
    finally:
        for publishing, _, _ in sends:
            publishing.end()
    return result


def _start_entry(
    how: _Sending, destination: str, entry: object
) -> tuple[messaging.Publishing, messaging.Publication, dict[str, str]]:
    """A PRODUCER span for one entry, kept open until the batch is answered, and the entry's
    carrier."""
    carrier: dict[str, str] = {}
    publishing = messaging.publish(carrier, system=how.system, destination=destination)
    with publishing._beside(_callers_attributes(entry)) as sent:
        publishing.keep_open()
    return publishing, sent, carrier


def _traced_batch(
    entries: Sequence[Any], carriers: list[dict[str, str]], how: _Sending
) -> list[Any]:
    """``entries``, each with its carrier's attributes, unless they take the batch past the
    size SQS and SNS bound a batch's total by (the same as one message's): then as the caller
    made them (with the X-Ray header, which does not count)."""
    pairs = list(zip(entries, carriers, strict=True))
    traced = [_with_attributes(entry, carrier, how) for entry, carrier in pairs]
    if not _pushed_over(_batch_size(traced, how), lambda: _batch_size(entries, how)):
        return traced
    _left_out(f"message batch to {how.service}")
    return [_with_x_ray_only(entry, carrier, how) for entry, carrier in pairs]


def _settle_each(
    sends: list[tuple[messaging.Publishing, messaging.Publication, dict[str, str]]],
    entries: Sequence[Any],
    result: Any,
    client: Any,
    how: _Sending,
) -> None:
    """Each entry's span takes its message ID from the answer's ``Successful``, or fails as a
    send refused for its ``Failed`` code does."""
    answered = _answers_by_id(result)
    for (_, sent, _), entry in zip(sends, entries, strict=True):
        answer = answered.get(entry.get("Id")) if isinstance(entry, dict) else None
        if answer is None:
            continue
        accepted, details = answer
        if accepted:
            sent.set_message_id(details.get("MessageId"))
        else:
            service = (_service_of(client) or "aws").upper()
            message = f"{service} refused the message of the batch"
            sent.fail(_refusal(client, _error_code(details), message, how.batch_operation))


def _answers_by_id(result: Any) -> dict[object, tuple[bool, dict[str, Any]]]:
    """A batch's answer per entry ``Id``: accepted or not, and SQS's or SNS's details."""
    answers: dict[object, tuple[bool, dict[str, Any]]] = {}
    for key, accepted in (("Successful", True), ("Failed", False)):
        listed = result.get(key) if isinstance(result, dict) else None
        for details in listed if isinstance(listed, list) else ():
            if isinstance(details, dict) and isinstance(details.get("Id"), str):
                answers[details["Id"]] = (accepted, details)
    return answers


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
    service = _service_of(client) or "aws"
    message = f"{service.upper()} refused {len(failed)} of {total} messages of the batch"
    error = _refusal(client, _error_code(failed[0]), message, operation)
    if len(failed) >= total:
        sent.fail(error)
    elif sent.span is not None:
        mark_failed(sent.span, error)


def _refusal(client: Any, code: str, message: str, operation: str) -> BaseException:
    """The error botocore raises for ``code`` (its class for the code, as a refused send)."""
    refusal = client.exceptions.from_code(code)
    return refusal({"Error": {"Code": code, "Message": message}}, operation)  # type: ignore[no-any-return]


def _error_code(entry: object) -> str:
    code = entry.get("Code") if isinstance(entry, dict) else None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else "Unknown"


_ERROR_CODE = re.compile(r"[A-Za-z0-9_.]{1,128}")  # AWS's codes; anything else is not shown


def _batch_size(entries: Sequence[Any], how: _Sending) -> int:
    return sum(_size_of(entry, how) for entry in entries if isinstance(entry, dict))


def _size_of(message: dict[str, Any], how: _Sending) -> int:
    return sqs.message_size(message.get(how.body), message.get("MessageAttributes"))


def _callers_attributes(message: object) -> dict[str, str]:
    """The text attributes the caller gave a message (params or a batch entry): a correlation
    ID of its own there is the message's outside a request."""
    if not isinstance(message, dict):
        return {}
    return sqs.headers_of({"MessageAttributes": message.get("MessageAttributes")})


def _with_attributes(message: Any, carrier: dict[str, str], how: _Sending) -> Any:
    """``message`` (params or a batch entry) with tracekit's attributes, within the 10 and the
    size SQS and SNS take (SNS's queues apply SQS's again on delivery); unchanged if unsure (an
    entry that is not a dict: botocore refuses it, as it would without tracekit)."""
    if not carrier or not isinstance(message, dict):
        return message
    attributes = message.get("MessageAttributes")
    if not (attributes is None or isinstance(attributes, dict)):
        return message
    if how.delays:
        carrier = _with_due_time(message, carrier)
    merged = _with_context(attributes, carrier, how.service)
    x_ray = _x_ray_system_attribute(message, carrier) if how.x_ray else {}
    traced = {**message, "MessageAttributes": merged, **x_ray}
    if _pushed_over(_size_of(traced, how), lambda: _size_of(message, how)):
        _left_out(f"message to {how.service}")
        return {**message, **x_ray}  # SQS does not count a system attribute towards the size
    return traced


def _with_due_time(message: dict[str, Any], carrier: dict[str, str]) -> dict[str, str]:
    """``carrier`` with the time a message sent with ``DelaySeconds`` becomes due, its publish
    time plus the delay: its consumer counts the wait until then as asked for, not as a
    backlog (``tracekit.scheduled_delay_ms``). SQS refuses a delay past 900 seconds itself."""
    delay = message.get("DelaySeconds")
    published = ascii_int(carrier.get(messaging.PUBLISH_TIME_HEADER), 19)
    if type(delay) is not int or not 0 < delay <= sqs.MAX_DELAY_SECONDS or published is None:
        return carrier
    return {**carrier, sqs.DUE_TIME_ATTRIBUTE: str(published + delay * 1_000_000_000)}


def _with_x_ray_only(message: Any, carrier: dict[str, str], how: _Sending) -> Any:
    """A batch entry sent without tracekit's attributes for want of room: the X-Ray header,
    which does not count towards the size, still goes."""
    if not how.x_ray or not carrier or not isinstance(message, dict):
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
        new[system_parameter] = _with_names(params.get(system_parameter), _system_names())
    return new


def _system_names() -> list[str]:
    """The system attributes tracekit reads: ``SentTimestamp`` (the queue wait of a message
    from a producer without tracekit), and ``AWSTraceHeader`` where a configured propagator
    reads X-Ray's header; elsewhere it was one more attribute in the caller's messages, which
    nothing read."""
    x_ray = any(name.lower() == sqs.X_RAY_HEADER for name in propagation.carried_fields())
    return ["SentTimestamp", sqs.TRACE_HEADER_ATTRIBUTE] if x_ray else ["SentTimestamp"]


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
    tracekit uses; B3's ``x-b3-*`` as tracekit writes them and as OpenTelemetry Java's
    propagator does (``X-B3-TraceId``). A name SQS refuses is not asked for (SQS would refuse
    the whole receive); tracekit sends such a field packed."""
    options = current_options()
    correlation_headers = (options.response_header, *options.correlation_headers)
    carried = propagation.carried_fields()
    names = (
        "traceparent",
        "tracestate",
        "baggage",
        *carried,
        *(B3.CAPITALISED[name] for name in carried if name in B3.CAPITALISED),
        *(name.lower() for name in correlation_headers),
        *correlation_headers,
        messaging.PUBLISH_TIME_HEADER,
        sqs.DUE_TIME_ATTRIBUTE,
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


def _queue_name(params: dict[str, Any]) -> str:
    return sqs.queue_name(str(params.get("QueueUrl", "")))


def _topic_name(params: dict[str, Any]) -> str | None:
    """The topic a publish goes to; None for a text message to a phone number or a push to a
    mobile endpoint, which pass untouched: SNS reads their attributes itself."""
    arn = params.get("TopicArn") or params.get("TargetArn")
    if not isinstance(arn, str) or "/" in arn:  # (a mobile endpoint's ARN: .../endpoint/...)
        return None
    return sqs.queue_name(arn)


_SQS = _Sending(
    service="SQS", system=sqs.SYSTEM, destination=_queue_name, body="MessageBody",
    entries="Entries", batch_operation="SendMessageBatch", x_ray=True, delays=True,
)  # fmt: skip
# A subscribed queue gets the attributes as its own with raw delivery, else in SNS's envelope,
# where ``tracekit.sqs.consume`` reads them.
_SNS = _Sending(
    service="SNS", system="aws.sns", destination=_topic_name, body="Message",
    entries="PublishBatchRequestEntries", batch_operation="PublishBatch", x_ray=False,
    delays=False,
)  # fmt: skip

_Handler = Callable[[Callable[[dict[str, Any]], Any], dict[str, Any], Any], Any]
_HANDLERS: dict[tuple[str | None, str], _Handler] = {
    ("sqs", "SendMessage"): partial(_send_one, _SQS),
    ("sqs", "SendMessageBatch"): partial(_send_batch, _SQS),
    ("sqs", "ReceiveMessage"): _receive_message,
    ("sns", "Publish"): partial(_send_one, _SNS),
    ("sns", "PublishBatch"): partial(_send_batch, _SNS),
}
