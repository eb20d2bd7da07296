"""SQS via boto3 against a local moto server, which stands in for Amazon SQS on loopback."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hopscene import check_hop, check_wait_within, check_wait_within_spans, one, start_scene
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from reference_propagators import B3_SPELLINGS

import tracekit
import tracekit.sqs
from tracekit import instrumentation, semconv
from tracekit._messaging import headers as _message_headers
from tracekit._runtime.ratelimit import RateLimitedWarning

pytestmark = pytest.mark.usefixtures("instrumented")

DELAY_S = 0.4


@pytest.fixture
def in_request() -> Iterator[None]:
    """A request's correlation ID current, as in a web handler: a batch sent there is one
    PRODUCER span whose context every entry carries (outside any request, each entry has
    its own: see test_a_batch_sent_outside_a_request_is_one_hop_per_entry)."""
    token = tracekit.correlation.set_correlation_id("request-1")
    yield
    tracekit.correlation.reset_correlation_id(token)


def receive(client: Any, queue_url: str, count: int = 1, **params: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(messages) < count and time.monotonic() < deadline:
        response = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **params
        )
        messages += response.get("Messages", [])
    return messages


def test_message_continues_the_request(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    with start_scene(lambda: sqs_client.send_message(QueueUrl=queue_url, MessageBody="o")) as scene:
        cid = scene.call_entry("order-" + uuid.uuid4().hex)
        time.sleep(DELAY_S)
        [message] = receive(sqs_client, queue_url)  # asks for no attributes: tracekit does
        with tracekit.sqs.consume(message, queue=queue_url) as delivery:
            inside = tracekit.correlation_id()
            scene.call_downstream()
    finished = list(spans.get_finished_spans())
    producer = one(finished, SpanKind.PRODUCER)
    consumer = one(finished, SpanKind.CONSUMER)
    assert inside == delivery.correlation_id == cid
    assert producer.attributes is not None and consumer.attributes is not None
    assert producer.attributes[semconv.MESSAGING_MESSAGE_ID] == message["MessageId"]
    assert consumer.attributes[semconv.MESSAGING_DESTINATION_NAME] == queue_url.rsplit("/")[-1]
    assert set(message["MessageAttributes"]) >= {"traceparent", "x-correlation-id"}
    check_hop(finished, scene, cid, consumer, DELAY_S)


def test_many_user_attributes_fall_back_to_one_packed_attribute(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    # Outside a request tracekit writes two fields (traceparent, publish time): 9 + 2 > 10.
    own = {f"a{n}": {"DataType": "String", "StringValue": str(n)} for n in range(9)}
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="x", MessageAttributes=own)
    [message] = receive(sqs_client, queue_url, MessageAttributeNames=["All"])
    attributes = message["MessageAttributes"]
    assert len(attributes) == 10 and "tracekit-context" in attributes
    packed = json.loads(attributes["tracekit-context"]["StringValue"])
    assert packed["traceparent"].startswith("00-")
    with tracekit.sqs.consume(message, queue=queue_url):
        pass
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


def test_ten_user_attributes_are_sent_unchanged(
    sqs_client: Any,
    queue_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message goes out as the caller made it, and the log says why it has no context, at
    most once a minute with a count: tracekit logged "sqs context injection failed
    (ValueError)" with a traceback, as for a bug of its own, once per process, then nothing."""
    fresh = RateLimitedWarning(60, "tracekit: sent a %s without trace context (%s)")
    monkeypatch.setattr(_message_headers, "context_left_out", fresh)
    own = {f"a{n}": {"DataType": "String", "StringValue": str(n)} for n in range(10)}
    for _ in range(2):
        sqs_client.send_message(QueueUrl=queue_url, MessageBody="x", MessageAttributes=own)
    messages = receive(sqs_client, queue_url, count=2, MessageAttributeNames=["All"])
    assert [message["MessageAttributes"] for message in messages] == [own, own]
    [warning] = [r for r in caplog.records if r.name.startswith("tracekit")]
    assert warning.getMessage() == (
        "tracekit: sent a message to SQS without trace context "
        "(it already has the 10 message attributes SQS allows)"
    )
    assert warning.exc_info is None


@pytest.mark.usefixtures("in_request")
def test_batch_send_and_batch_consume_link_each_message(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    entries = [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(3)]
    assert (
        len(sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)["Successful"]) == 3
    )
    time.sleep(DELAY_S)
    messages = receive(sqs_client, queue_url, count=3)
    with tracekit.sqs.consume_batch(messages, queue=queue_url):
        pass
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert producer.attributes is not None
    assert producer.attributes[semconv.MESSAGING_BATCH_MESSAGE_COUNT] == 3
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id] * 3
    assert consumer.parent is None
    check_wait_within_spans(consumer, [producer], DELAY_S)


@pytest.mark.usefixtures("in_request")
@pytest.mark.parametrize("refused", [1, 2], ids=["one-of-two", "both"])
def test_a_batch_with_entries_sqs_refused_shows_a_failed_send(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, refused: int
) -> None:
    """SQS answers a SendMessageBatch 200 and lists the entries it refused apart (``Failed``):
    the PRODUCER span said the send succeeded, so the lost messages showed nowhere in the
    trace. It now ends failed with SQS's error code and how many of the batch were refused."""
    entries: list[dict[str, Any]] = [{"Id": f"e{n}", "MessageBody": f"m{n}"} for n in range(2)]
    for entry in entries[:refused]:
        entry["DelaySeconds"] = 901  # SQS allows up to 900
    answer = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    assert len(answer["Failed"]) == refused
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    assert producer.status.status_code is StatusCode.ERROR
    assert producer.status.description is not None
    assert f"{refused} of 2 messages" in producer.status.description
    assert "InvalidParameterValue" in producer.status.description
    assert producer.attributes is not None and producer.attributes["error.type"] == "ClientError"


@pytest.mark.usefixtures("in_request")
def test_a_batch_sqs_took_whole_ends_unset(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    entries = [{"Id": f"e{n}", "MessageBody": f"m{n}"} for n in range(2)]
    assert sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed") in (
        None,
        [],
    )
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    assert producer.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize("bad_entry", ["oops", ["Id", "1"]], ids=["str", "list"])
def test_a_batch_entry_botocore_refuses_is_refused_as_without_tracekit(
    sqs_client: Any, queue_url: str, bad_entry: Any
) -> None:
    """botocore says which entry is wrong (ParamValidationError); tracekit adds no error of
    its own (it raised TypeError: 'str' object is not a mapping)."""
    from botocore.exceptions import ParamValidationError

    good = {"Id": "good", "MessageBody": "kept"}
    with pytest.raises(ParamValidationError, match=r"Entries\[1\]"):
        sqs_client.send_message_batch(QueueUrl=queue_url, Entries=[good, bad_entry])
    nothing_sent = sqs_client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    assert nothing_sent.get("Messages", []) == []


@pytest.mark.usefixtures("in_request")
def test_a_batch_given_as_a_tuple_carries_the_context(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """botocore takes a tuple of entries as it takes a list: so does tracekit."""
    entries = tuple({"Id": str(n), "MessageBody": f"m{n}"} for n in range(2))
    sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    messages = receive(sqs_client, queue_url, count=2)
    assert [set(m["MessageAttributes"]) >= {"traceparent"} for m in messages] == [True, True]
    with tracekit.sqs.consume_batch(messages, queue=queue_url):
        pass
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id] * 2


def test_messages_of_the_resource_api_continue_the_trace(
    sqs_endpoint: str, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """boto3's resource API hands back ``sqs.Message`` objects, not dicts: the consumer still
    continues the producer's trace with its correlation ID (it started a new one, with a
    warning and a traceback)."""
    import boto3

    resource = boto3.resource(
        "sqs",
        endpoint_url=sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    queue = resource.Queue(queue_url)
    token = tracekit.correlation.set_correlation_id("order-res-1")
    queue.send_message(MessageBody="one")
    queue.send_message(MessageBody="two")
    tracekit.correlation.reset_correlation_id(token)
    messages: list[Any] = []
    deadline = time.monotonic() + 10
    while len(messages) < 2 and time.monotonic() < deadline:
        messages += queue.receive_messages(MaxNumberOfMessages=10, WaitTimeSeconds=1)
    with tracekit.sqs.consume(messages[0], queue=queue.url) as delivery:
        inside = tracekit.correlation_id()
    with tracekit.sqs.consume_batch(messages, queue=queue.url):
        pass
    producers = sorted(
        (s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER),
        key=lambda s: s.start_time or 0,
    )
    single, batch = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert inside == delivery.correlation_id == "order-res-1"
    assert single.parent is not None
    assert single.parent.span_id in {p.context.span_id for p in producers}
    assert single.attributes is not None
    assert single.attributes[semconv.MESSAGING_MESSAGE_ID] == messages[0].message_id
    assert sorted(link.context.span_id for link in batch.links) == sorted(
        p.context.span_id for p in producers
    )


def _as_lambda_delivers(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """``message`` as one record of the event Lambda's SQS event source hands a function:
    camelCase keys, attributes as ``stringValue``/``dataType``, the queue as an ARN."""
    attributes = message.get("MessageAttributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message["Attributes"],
        "messageAttributes": {
            name: {
                "stringValue": value["StringValue"],
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in attributes.items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    }


def test_a_record_of_a_lambda_sqs_event_continues_the_trace(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """A Lambda function gets its messages as event records, not boto3 dicts: the consumer
    continues the producer's trace with its correlation ID, named for the queue of the
    record's ARN (it started a new trace and named the destination by the whole ARN)."""
    token = tracekit.correlation.set_correlation_id("order-lambda-1")
    try:
        sqs_client.send_message(QueueUrl=queue_url, MessageBody="to a function")
    finally:
        tracekit.correlation.reset_correlation_id(token)
    queue_arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    [message] = receive(sqs_client, queue_url, MessageAttributeNames=["All"])
    record = _as_lambda_delivers(message, queue_arn["Attributes"]["QueueArn"])

    with tracekit.sqs.consume(record, queue=record["eventSourceARN"]) as delivery:
        assert tracekit.correlation_id() == delivery.correlation_id == "order-lambda-1"

    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.attributes is not None
    assert consumer.attributes[semconv.MESSAGING_DESTINATION_NAME] == queue_url.rsplit("/")[-1]
    assert consumer.attributes[semconv.MESSAGING_MESSAGE_ID] == message["MessageId"]


@pytest.mark.parametrize("header", ["X-Correlation-ID", "X-Request-ID"])
def test_a_correlation_attribute_spelt_as_configured_is_received(
    sqs_client: Any, queue_url: str, header: str
) -> None:
    """SQS returns only the attributes asked for, matching names case-sensitively: a producer
    that sets the correlation header itself, spelt as configured, is heard (tracekit asked
    only for ``x-correlation-id`` and the consumer minted a new ID)."""
    assert tracekit.correlation_id() is None
    attribute = {"DataType": "String", "StringValue": "legacy-9"}
    sqs_client.send_message(
        QueueUrl=queue_url, MessageBody="o", MessageAttributes={header: attribute}
    )
    [message] = receive(sqs_client, queue_url)  # asks for no attributes: tracekit does
    with tracekit.sqs.consume(message, queue=queue_url):
        assert tracekit.correlation_id() == "legacy-9"
    assert message["MessageAttributes"][header] == attribute


def test_a_header_name_sqs_refuses_travels_packed(
    sqs_client: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``X-Corr!d`` is a valid HTTP header name but not an SQS attribute name: SQS refused every
    send and receive (InvalidParameterValue) once tracekit added or asked for it."""
    monkeypatch.setenv("TRACEKIT_RESPONSE_HEADER", "X-Corr!d")
    token = tracekit.correlation.set_correlation_id("order-bang-1")
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="o")
    tracekit.correlation.reset_correlation_id(token)
    [message] = receive(sqs_client, queue_url)
    assert set(message["MessageAttributes"]) == {"tracekit-context"}
    with tracekit.sqs.consume(message, queue=queue_url):
        assert tracekit.correlation_id() == "order-bang-1"


def _sent_attributes(sqs_client: Any, operation: str) -> list[dict[str, Any]]:
    """The MessageAttributes of each message as boto3 puts them on the wire (moto does not
    check SQS's size limit, so the request is where tracekit's choice shows)."""
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        request = json.loads(params["body"])
        for message in request.get("Entries", [request]):
            sent.append(message.get("MessageAttributes", {}))

    sqs_client.meta.events.register(f"before-call.sqs.{operation}", record)
    return sent


def test_a_message_at_the_size_limit_goes_without_context(
    sqs_client: Any,
    queue_url: str,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQS counts attribute names, types and values towards its 262,144 bytes: a body at the
    limit (one with a user attribute, just under it) is sent as the caller made it."""
    fresh = RateLimitedWarning(60, "tracekit: sent a %s without trace context (%s)")
    monkeypatch.setattr(_message_headers, "context_left_out", fresh)
    sent = _sent_attributes(sqs_client, "SendMessage")
    user = {"kind": {"DataType": "String", "StringValue": "é" * 10}}  # 25 bytes counted
    token = tracekit.correlation.set_correlation_id("big-1")
    try:
        sqs_client.send_message(QueueUrl=queue_url, MessageBody="x" * 262_144)
        sqs_client.send_message(
            QueueUrl=queue_url, MessageBody="x" * (262_144 - 40), MessageAttributes=user
        )
        sqs_client.send_message(QueueUrl=queue_url, MessageBody="x" * 200_000)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    assert sent[0] == {} and sent[1] == user
    assert {"traceparent", "x-correlation-id"} <= set(sent[2])
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert len(producers) == 3
    assert all(p.attributes and p.attributes["correlation.id"] == "big-1" for p in producers)
    warnings = [r.getMessage() for r in caplog.records if "without trace context" in r.getMessage()]
    assert len(warnings) == 1 and "é" not in warnings[0] and "xxx" not in warnings[0]


@pytest.mark.usefixtures("in_request")
def test_under_x_ray_a_message_at_the_size_limit_keeps_its_aws_trace_header(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQS does not count a system attribute towards a message's size: a message sent without
    tracekit's attributes for want of room still gets the AWSTraceHeader that Lambda and X-Ray
    read (it went without, and its AWS consumer started a new trace)."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    sent: list[dict[str, Any]] = []
    sqs_client.meta.events.register(
        "before-call.sqs.SendMessage", lambda params, **_: sent.append(json.loads(params["body"]))
    )
    sqs_client.meta.events.register(
        "before-call.sqs.SendMessageBatch",
        lambda params, **_: sent.extend(json.loads(params["body"])["Entries"]),
    )
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="x" * 262_144)
    halves = [{"Id": str(n), "MessageBody": "x" * 131_072} for n in range(2)]  # 262,144 in all
    sqs_client.send_message_batch(QueueUrl=queue_url, Entries=halves)
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    parents = [producers[0]] + [producers[1]] * 2
    assert len(sent) == 3 and not any("MessageAttributes" in message for message in sent)
    for message, producer in zip(sent, parents, strict=True):
        header = message["MessageSystemAttributes"]["AWSTraceHeader"]["StringValue"]
        assert f"Parent={producer.context.span_id:016x}" in header


@pytest.mark.usefixtures("in_request")
def test_batch_entries_and_batches_at_the_size_limit_go_without_context(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    sent = _sent_attributes(sqs_client, "SendMessageBatch")
    big, small = {"Id": "big", "MessageBody": "x" * 262_144}, {"Id": "small", "MessageBody": "s"}
    sqs_client.send_message_batch(QueueUrl=queue_url, Entries=[big, small])
    halves = [{"Id": str(n), "MessageBody": "x" * 131_072} for n in range(2)]  # 262,144 in all
    sqs_client.send_message_batch(QueueUrl=queue_url, Entries=halves)
    assert sent[0] == {} and "traceparent" in sent[1]
    assert sent[2:] == [{}, {}]
    assert len([s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]) == 2


def test_message_from_a_producer_without_tracekit_uses_sent_timestamp(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    instrumentation.uninstrument()
    before_send = time.time_ns()
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="plain")
    after_send = time.time_ns()
    instrumentation.instrument(["botocore"])
    time.sleep(DELAY_S)
    [message] = receive(sqs_client, queue_url)
    assert "SentTimestamp" in message["Attributes"]
    with tracekit.sqs.consume(message, queue=queue_url) as delivery:
        assert delivery.correlation_id is not None
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is None
    # SQS stamps SentTimestamp during the send, in whole milliseconds (rounded down)
    check_wait_within(consumer, before_send - 1_000_000, after_send, DELAY_S - 0.001)


SNS_TRACE = 0x5A5


def _publish_under(sns_client: Any, topic: str, message: str, correlation_id: str) -> None:
    """Publish ``message`` to ``topic`` with ``correlation_id`` current, as in a request."""
    token = tracekit.correlation.set_correlation_id(correlation_id)
    try:
        sns_client.publish(TopicArn=topic, Message=message)
    finally:
        tracekit.correlation.reset_correlation_id(token)


@pytest.mark.parametrize("raw", [False, True], ids=["sns-envelope", "raw-delivery"])
def test_a_message_fanned_out_by_sns_continues_the_publishers_trace(
    sqs_client: Any, sns_client: Any, queue_url: str, spans: InMemorySpanExporter, raw: bool
) -> None:
    """A publisher to an SNS topic (an OpenTelemetry-instrumented one, or one calling
    ``tracekit.messaging.inject``) puts the context in the SNS message attributes. Unless raw
    message delivery is on, SNS hands the subscribed queue a JSON envelope holding them as
    ``{"Type", "Value"}``, with no SQS message attributes: the consumer started a new trace."""
    topic = _subscribed_topic(sqs_client, sns_client, queue_url, raw)
    # (a trace of its own: tracekit remembers each remote trace's flags, and other tests' 0xABC
    # expects none remembered)
    context = {
        "traceparent": f"00-{SNS_TRACE:032x}-{0xDEF:016x}-01",
        "x-correlation-id": "order-sns-1",
    }
    instrumentation.uninstrument()  # a publisher that is not tracekit
    sns_client.publish(
        TopicArn=topic,
        Message='{"id": 1}',
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value} for name, value in context.items()
        },
    )
    instrumentation.instrument(["botocore"])
    [message] = receive(sqs_client, queue_url)  # asks for no attributes: tracekit does
    with tracekit.sqs.consume(message, queue=queue_url) as delivery:
        assert tracekit.correlation_id() == delivery.correlation_id == "order-sns-1"
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == 0xDEF
    assert consumer.context.trace_id == SNS_TRACE
    assert (json.loads(message["Body"])["Message"] if not raw else message["Body"]) == '{"id": 1}'


def _subscribed_topic(sqs_client: Any, sns_client: Any, queue_url: str, raw: bool) -> str:
    """A new SNS topic delivering to ``queue_url``, raw or in SNS's JSON envelope."""
    arn = sqs_client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    topic = str(sns_client.create_topic(Name=f"events-{uuid.uuid4().hex[:8]}")["TopicArn"])
    sns_client.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn["Attributes"]["QueueArn"],
        Attributes={"RawMessageDelivery": str(raw).lower()},
    )
    return topic


@pytest.mark.parametrize("raw", [False, True], ids=["sns-envelope", "raw-delivery"])
def test_a_publish_to_sns_is_traced_and_its_queues_consumers_continue_it(
    sqs_client: Any, sns_client: Any, queue_url: str, spans: InMemorySpanExporter, raw: bool
) -> None:
    """SNS Publish had no PRODUCER span and carried no context: every consumer of a fanned-out
    message started a new trace with a new correlation ID."""
    topic = _subscribed_topic(sqs_client, sns_client, queue_url, raw)
    own = {"kind": {"DataType": "String", "StringValue": "order"}}
    token = tracekit.correlation.set_correlation_id("order-fan-1")
    try:
        published = sns_client.publish(TopicArn=topic, Message="placed", MessageAttributes=own)
    finally:
        tracekit.correlation.reset_correlation_id(token)
    [message] = receive(sqs_client, queue_url, MessageAttributeNames=["All"])
    with tracekit.sqs.consume(message, queue=queue_url) as delivery:
        assert delivery.correlation_id == "order-fan-1"
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert producer.attributes is not None
    assert producer.attributes[semconv.MESSAGING_SYSTEM] == "aws.sns"
    assert producer.attributes[semconv.MESSAGING_DESTINATION_NAME] == topic.rsplit(":", 1)[1]
    assert producer.attributes[semconv.MESSAGING_MESSAGE_ID] == published["MessageId"]
    body = message["Body"] if raw else json.loads(message["Body"])["Message"]
    assert body == "placed"


@pytest.mark.usefixtures("in_request")
def test_a_batch_published_to_sns_is_traced_and_its_consumers_link_to_it(
    sqs_client: Any, sns_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """SNS PublishBatch in a request: one PRODUCER span whose context every entry carries, as
    for SQS's SendMessageBatch (each fanned-out message started a new trace)."""
    topic = _subscribed_topic(sqs_client, sns_client, queue_url, raw=False)
    entries = [{"Id": str(n), "Message": f"m{n}"} for n in range(2)]
    answer = sns_client.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    assert len(answer["Successful"]) == 2
    messages = receive(sqs_client, queue_url, count=2)
    with tracekit.sqs.consume_batch(messages, queue=queue_url):
        pass
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert producer.attributes is not None
    assert producer.attributes[semconv.MESSAGING_SYSTEM] == "aws.sns"
    assert producer.attributes[semconv.MESSAGING_BATCH_MESSAGE_COUNT] == 2
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id] * 2


def test_a_message_fanned_out_by_sns_continues_the_trace_through_the_resource_api(
    sqs_endpoint: str, sqs_client: Any, sns_client: Any, queue_url: str
) -> None:
    """boto3's resource API hands back ``sqs.Message`` objects: the envelope in their body is
    read too (only their attributes were, and the consumer started a new trace)."""
    import boto3

    topic = _subscribed_topic(sqs_client, sns_client, queue_url, raw=False)
    _publish_under(sns_client, topic, "placed", "order-res-sns-1")
    queue = boto3.resource(
        "sqs", endpoint_url=sqs_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).Queue(queue_url)  # fmt: skip
    [message] = queue.receive_messages(WaitTimeSeconds=1)
    with tracekit.sqs.consume(message, queue=queue.url) as delivery:
        assert delivery.correlation_id == "order-res-sns-1"


def test_a_text_message_to_a_phone_number_is_sent_untouched(
    sns_client: Any, spans: InMemorySpanExporter
) -> None:
    """SNS reads an SMS's message attributes itself (``AWS.SNS.SMS.*``): tracekit adds none."""
    sent: list[Any] = []
    sns_client.meta.events.register(
        "before-call.sns.Publish", lambda params, **_: sent.append(params["body"])
    )
    sns_client.publish(PhoneNumber="+15555550100", Message="your code is 1234")
    assert "MessageAttributes" not in str(sent)
    assert [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER] == []


@pytest.mark.parametrize(
    "body",
    [
        '{"TopicArn": "t", "Type": "Notification", "MessageAttributes": ' + "[" * 10_000,
        '{"TopicArn": "t", "Type": "Notification", "MessageAttributes": {"traceparent": 1}}',
        '{"TopicArn": "t", "Type": "Other", "MessageAttributes": {"traceparent": '
        f'{{"Type": "String", "Value": "00-{1:032x}-{1:016x}-01"}}}}}}',
        '["TopicArn"]',
    ],
    ids=["nested", "not-an-attribute", "not-a-notification", "a-list"],
)
def test_a_body_that_is_not_an_sns_envelope_is_handled_without_context(
    queue_url: str, spans: InMemorySpanExporter, body: str
) -> None:
    """Any producer writes the body: one that merely looks like an envelope is handled as a
    message without context, never raising into the consumer's loop."""
    with tracekit.sqs.consume({"MessageId": "m-2", "Body": body}, queue=queue_url):
        pass
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is None


def test_an_aws_producers_x_ray_trace_header_continues_its_trace(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Lambda, SNS or an AWS SDK with X-Ray sends: no message attributes, the trace in the
    AWSTraceHeader system attribute. Under OTEL_PROPAGATORS=xray the consumer continues it."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    consumer = _consumer_of_aws_message(sqs_client, queue_url, spans, header)
    assert consumer.parent is not None and consumer.parent.span_id == 0x53995C3F42CD8AD8
    assert consumer.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793


@pytest.mark.parametrize("names", list(B3_SPELLINGS.values()), ids=list(B3_SPELLINGS))
def test_b3_attributes_of_a_producer_in_another_language_continue_its_trace(
    sqs_client: Any,
    queue_url: str,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    names: tuple[str, str, str],
) -> None:
    """Under OTEL_PROPAGATORS=b3multi, a Java service's message carries ``X-B3-TraceId`` and
    its kin as message attributes. SQS returns only the attributes asked for, by exact name:
    tracekit asked for ``x-b3-traceid`` alone, got none of them, and the consumer started a
    new trace."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "b3multi")
    trace_id, span_id = "463ac35c9f6413ad48485a3953bb6124", "0020000000000001"
    attributes = {
        name: {"DataType": "String", "StringValue": value}
        for name, value in zip(names, (trace_id, span_id, "1"), strict=True)
    }
    instrumentation.uninstrument()
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="o", MessageAttributes=attributes)
    instrumentation.instrument(["botocore"])
    [message] = receive(sqs_client, queue_url)  # asks for no attributes: tracekit does
    with tracekit.sqs.consume(message, queue=queue_url):
        pass
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.context.trace_id == int(trace_id, 16)
    assert consumer.parent is not None and consumer.parent.span_id == int(span_id, 16)


def _consumer_of_aws_message(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, header: str
) -> ReadableSpan:
    """The CONSUMER span of a message sent without tracekit, as Lambda, SNS or an AWS SDK with
    X-Ray send it: no message attributes, ``header`` in the AWSTraceHeader system attribute."""
    instrumentation.uninstrument()
    sqs_client.send_message(
        QueueUrl=queue_url,
        MessageBody="from aws",
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": header}},
    )
    instrumentation.instrument(["botocore"])
    [message] = receive(sqs_client, queue_url)  # asks for no attributes: tracekit does
    with tracekit.sqs.consume(message, queue=queue_url):
        pass
    return one(list(spans.get_finished_spans()), SpanKind.CONSUMER)


@pytest.mark.parametrize("sampled", ["?", " ? "])
def test_an_x_ray_header_leaving_the_decision_to_the_consumer_continues_its_trace(
    sqs_client: Any,
    queue_url: str,
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    sampled: str,
) -> None:
    """``Sampled=?`` asks the receiver to make the sampling decision (X-Ray's "requested"
    state): tracekit records the message as its default sampler would a new trace, in the
    sender's trace under the sender's span. The header was refused and the consumer started an
    unrelated trace."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    header = f"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled={sampled}"
    consumer = _consumer_of_aws_message(sqs_client, queue_url, spans, header)
    assert consumer.parent is not None and consumer.parent.span_id == 0x53995C3F42CD8AD8
    assert consumer.context.trace_id == 0x5759E988BD862E3FE1BE46A994272793


def test_under_x_ray_a_send_sets_the_aws_trace_header_aws_consumers_read(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Lambda SQS trigger and X-Ray read a message's trace from its AWSTraceHeader system
    attribute, not from a message attribute: tracekit wrote only the latter, so an AWS consumer
    started a new trace. moto stands in for SQS and keeps the system attribute as SQS does."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="to lambda")
    producer = one(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    instrumentation.uninstrument()  # an AWS consumer, asking for the system attribute only

    [message] = receive(sqs_client, queue_url, MessageSystemAttributeNames=["AWSTraceHeader"])

    trace_id = f"{producer.context.trace_id:032x}"
    assert message["Attributes"]["AWSTraceHeader"] == (
        f"Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={producer.context.span_id:016x};Sampled=1"
    )


def test_damaged_packed_context_is_ignored(queue_url: str, spans: InMemorySpanExporter) -> None:
    hostile = {
        "MessageId": "m-1",
        "MessageAttributes": {
            "tracekit-context": {"DataType": "String", "StringValue": "{not json" * 3000},
            "traceparent": {"DataType": "Binary", "BinaryValue": b"\xff" * 60},
        },
    }
    with tracekit.sqs.consume(hostile, queue=queue_url):
        pass
    consumer = one(list(spans.get_finished_spans()), SpanKind.CONSUMER)
    assert consumer.parent is None


@pytest.mark.parametrize("packed", ["[" * 10_000, '{"traceparent": ' + "[" * 10_000])
def test_packed_context_nested_past_the_parser_is_ignored(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, packed: str
) -> None:
    """Any producer may set the packed attribute: nesting deep enough to exhaust the JSON parser
    (under the length bound) must not reach the consumer's loop."""
    attribute = {"tracekit-context": {"DataType": "String", "StringValue": packed}}
    instrumentation.uninstrument()  # a producer that is not tracekit
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="hostile", MessageAttributes=attribute)
    instrumentation.instrument(["botocore"])
    [message] = receive(sqs_client, queue_url, MessageAttributeNames=["All"])
    assert message["MessageAttributes"]["tracekit-context"]["StringValue"] == packed

    handled = []
    with tracekit.sqs.consume(message, queue=queue_url):
        handled.append(message["Body"])
    with tracekit.sqs.consume_batch([message], queue=queue_url):
        handled.append(message["Body"])

    assert handled == ["hostile", "hostile"]
    consumers = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert len(consumers) == 2 and all(s.parent is None for s in consumers)


@pytest.fixture
def client_with_an_older_sqs_model(sqs_endpoint: str, tmp_path: Path) -> Any:
    """A real boto3 client whose SQS model predates ``MessageSystemAttributeNames`` (botocore
    before 1.34.x's model update, which ``boto3>=1.34`` still allows): it refuses that
    parameter, as such a botocore does, and knows only ``AttributeNames``."""
    import boto3
    import botocore

    installed = Path(botocore.__file__).parent / "data" / "sqs"
    (version,) = [p.name for p in installed.iterdir() if p.is_dir()]
    model = json.loads(gzip.decompress((installed / version / "service-2.json.gz").read_bytes()))
    del model["shapes"]["ReceiveMessageRequest"]["members"]["MessageSystemAttributeNames"]
    folder = tmp_path / "sqs" / version
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(model))
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(tmp_path))
    return boto3.Session(botocore_session=session).client(
        "sqs", endpoint_url=sqs_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def test_receive_on_a_botocore_without_message_system_attribute_names(
    client_with_an_older_sqs_model: Any, sqs_client: Any, queue_url: str
) -> None:
    old = client_with_an_older_sqs_model
    request = old.meta.service_model.operation_model("ReceiveMessage").input_shape
    assert "MessageSystemAttributeNames" not in request.members
    token = tracekit.correlation.set_correlation_id("order-old-1")
    try:
        sqs_client.send_message(QueueUrl=queue_url, MessageBody="from a new client")
    finally:
        tracekit.correlation.reset_correlation_id(token)

    [message] = receive(old, queue_url)

    assert message["Body"] == "from a new client"
    assert "SentTimestamp" in message["Attributes"]  # asked for under the older name
    with tracekit.sqs.consume(message, queue=queue_url) as delivery:
        assert delivery.correlation_id == "order-old-1"


def test_a_receive_asking_with_the_older_name_gets_tracekit_s_names_there_too(
    sqs_client: Any, queue_url: str
) -> None:
    """A caller asking for ``AttributeNames=["ApproximateReceiveCount"]`` (the older name) got
    tracekit's ``SentTimestamp`` under ``MessageSystemAttributeNames`` beside it: SQS is not
    known to honour both in one request, and losing the count would break the caller's own
    dead-letter logic. What boto3 is given to send is checked: moto answers either way."""
    sent: list[dict[str, Any]] = []
    sqs_client.meta.events.register(
        "before-parameter-build.sqs.ReceiveMessage", lambda params, **_: sent.append(dict(params))
    )
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="counted")

    [message] = receive(sqs_client, queue_url, AttributeNames=["ApproximateReceiveCount"])

    assert "MessageSystemAttributeNames" not in sent[-1]
    assert sent[-1]["AttributeNames"][:2] == ["ApproximateReceiveCount", "SentTimestamp"]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "SentTimestamp" in message["Attributes"]


def test_a_callers_attribute_in_other_capitals_is_replaced() -> None:
    """``Traceparent`` set by the app beside tracekit's ``traceparent``: Amazon SQS keeps both
    (names are case-sensitive) and the consumer would read two and trust neither. Checked on
    what boto3 is given to send: moto, standing in for SQS here, keeps one name per spelling
    only by chance of its storage, so a round trip through it cannot show the difference."""
    stale = {"DataType": "String", "StringValue": f"00-{1:032x}-{1:016x}-01"}
    ours = {"traceparent": f"00-{2:032x}-{2:016x}-01", "x-correlation-id": "order-3"}
    sent = tracekit.sqs.add_context({"Traceparent": stale, "X-CORRELATION-ID": stale,
                                     "app": stale}, ours)  # fmt: skip
    assert sorted(sent) == ["app", "traceparent", "x-correlation-id"]
    assert sent["traceparent"]["StringValue"] == ours["traceparent"]


def test_messages_sent_count_a_batchs_messages_and_not_a_refused_send(
    sqs_client: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``messaging_client_sent_messages_total`` counted one for a batch of five, a batch entry
    SQS refused (answering 200, per entry), and a send SQS refused: a sent-minus-consumed
    backlog drifted both ways. Measured as a service of its own: the suite's other tests, each
    on a queue of its own, fill the default service's 200 destinations, past which a new one is
    counted as _other."""
    from botocore.exceptions import ClientError
    from prometheus_client import REGISTRY

    monkeypatch.setenv("OTEL_SERVICE_NAME", "sqs-sent-count")

    def sent(queue: str) -> float:
        labels = {"messaging_system": "aws_sqs", "messaging_destination_name": queue,
                  "service_name": "sqs-sent-count", "service_version": ""}  # fmt: skip
        return REGISTRY.get_sample_value("messaging_client_sent_messages_total", labels) or 0.0

    def refusals(queue: str) -> float:
        labels = {"messaging_system": "aws_sqs", "messaging_destination_name": queue,
                  "error_type": "QueueDoesNotExist", "service_name": "sqs-sent-count",
                  "service_version": ""}  # fmt: skip
        name = "messaging_client_operation_duration_seconds_count"
        return REGISTRY.get_sample_value(name, labels) or 0.0

    queue = queue_url.rsplit("/", 1)[1]
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    entries = [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(5)]
    assert (
        len(sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)["Successful"]) == 5
    )
    refused = {"Id": "late", "MessageBody": "x", "DelaySeconds": 901}  # SQS allows up to 900
    answer = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=[entries[0], refused])
    assert (len(answer["Successful"]), len(answer["Failed"])) == (1, 1)  # answered 200
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="one more")
    with pytest.raises(ClientError):
        sqs_client.send_message(QueueUrl=queue_url.replace(queue, missing), MessageBody="lost")

    assert sent(queue) == 5 + 1 + 1  # of the second batch, only the entry SQS accepted
    assert sent(missing) == 0 and refusals(missing) == 1


def test_a_sent_timestamp_that_is_no_number_loses_no_trace_context() -> None:
    """A message as ``receive_message`` returns it, its ``SentTimestamp`` system attribute
    ``²`` (a digit to ``str.isdigit``, not to ``int``: a relay or a Lambda test event that
    fills it by hand). Reading it failed, and the message's trace context went with it."""
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = {
        "MessageId": "1", "Body": "x", "Attributes": {"SentTimestamp": "²"},
        "MessageAttributes": {"traceparent": {"DataType": "String", "StringValue": traceparent}},
    }  # fmt: skip

    assert tracekit.sqs.headers_of(message) == {"traceparent": traceparent}


def test_a_message_sent_outside_a_request_keeps_one_id_when_received_again(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """A script sends with no correlation ID current; the worker lets the message become
    visible again and receives it a second time: each receive made an ID of its own. Now both,
    and the PRODUCER span, carry the message's own ID."""
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="job")
    assert tracekit.correlation_id() is None
    ids = []
    for _ in range(2):
        [message] = receive(sqs_client, queue_url, VisibilityTimeout=0)
        with tracekit.sqs.consume(message, queue=queue_url):
            ids.append(tracekit.correlation_id())
    (sent,) = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert ids[0] is not None and ids == [ids[0], ids[0]]
    assert sent.attributes is not None and sent.attributes["correlation.id"] == ids[0]


def test_a_batch_sent_outside_a_request_gives_each_entry_one_id_when_received_again(
    sqs_client: Any, queue_url: str
) -> None:
    """A script sends a batch in which one entry carries a correlation ID of its own and one
    none: the one with none got no ID at all (the batch's was taken to be the first entry's),
    so each receive of it made a new one. Now it keeps one ID over receives, and the other
    entry keeps its own."""
    own = {"X-Correlation-ID": {"DataType": "String", "StringValue": "job-41"}}
    sqs_client.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": "a", "MessageBody": "mine", "MessageAttributes": own},
            {"Id": "b", "MessageBody": "plain"},
        ],
    )
    ids: dict[str, list[str | None]] = {"mine": [], "plain": []}
    for _ in range(2):
        for message in receive(sqs_client, queue_url, count=2, VisibilityTimeout=0):
            with tracekit.sqs.consume(message, queue=queue_url):
                ids[message["Body"]].append(tracekit.correlation_id())
    assert ids["mine"] == ["job-41", "job-41"]
    plain = ids["plain"]
    assert plain[0] is not None and plain == [plain[0], plain[0]]


def test_a_batch_sent_outside_a_request_is_one_hop_per_entry(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """A cron job sends three jobs in one SendMessageBatch, one with a correlation ID of its
    own: all three went out under one PRODUCER span, so every consumer joined its trace and
    ``tracekit trace job-41`` showed the other two jobs' work as well (and a send carrying
    another ID); the two without an ID shared one. Now each entry is a hop of its own, as a
    SendMessage is. (moto's server stands in for SQS: real HTTP, real boto3 answers.)"""
    from tracekit.path import reconstruct
    from tracekit.store import Store
    from tracekit.store.exporter import StoreSpanExporter

    own = {"X-Correlation-ID": {"DataType": "String", "StringValue": "job-41"}}
    entries = [{"Id": "a", "MessageBody": "a", "MessageAttributes": own}]
    entries += [{"Id": body, "MessageBody": body} for body in ("b", "c")]
    answer = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    message_ids = {entry["Id"]: entry["MessageId"] for entry in answer["Successful"]}
    ids = {}
    for message in receive(sqs_client, queue_url, count=3):
        with tracekit.sqs.consume(message, queue=queue_url):
            ids[message["Body"]] = tracekit.correlation_id()
    with Store(tmp_path / "t.db") as store:
        StoreSpanExporter(store=store).export(spans.get_finished_spans())
        path = reconstruct(store, "job-41")
    assert path is not None
    document = path.to_json()
    kinds = [(span["kind"], span["attributes"]["correlation.id"]) for span in document["spans"]]
    assert kinds == [("PRODUCER", "job-41"), ("CONSUMER", "job-41")]
    [sent, _] = document["spans"]
    assert sent["attributes"][semconv.MESSAGING_MESSAGE_ID] == message_ids["a"]
    assert semconv.MESSAGING_BATCH_MESSAGE_COUNT not in sent["attributes"]
    assert [hop["type"] for hop in document["hops"]] == ["messaging"]
    assert ids["a"] == "job-41" and len({ids["a"], ids["b"], ids["c"]}) == 3


def test_an_entry_sqs_refused_outside_a_request_fails_its_own_span(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """Outside a request each entry has its span: the one SQS refused fails with its code, the
    one it took ends unset with its message ID."""
    refused = {"Id": "late", "MessageBody": "x", "DelaySeconds": 901}  # SQS allows up to 900
    answer = sqs_client.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": "ok", "MessageBody": "y"}, refused]
    )
    [taken] = answer["Successful"]
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert [p.status.status_code for p in producers] == [StatusCode.UNSET, StatusCode.ERROR]
    sent, failed = (p.attributes or {} for p in producers)
    assert sent[semconv.MESSAGING_MESSAGE_ID] == taken["MessageId"]
    assert failed["error.type"] == "ClientError"
    description = producers[1].status.description or ""
    assert "InvalidParameterValue" in description and "refused the message" in description


def test_a_batch_outside_a_request_at_the_size_limit_goes_without_context(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """Outside a request too, a batch whose entries' attributes would take it past SQS's
    limit goes as the caller made it; each entry's span is still recorded, in its own trace."""
    sent = _sent_attributes(sqs_client, "SendMessageBatch")
    halves = [{"Id": str(n), "MessageBody": "x" * 131_072} for n in range(2)]  # 262,144 in all
    sqs_client.send_message_batch(QueueUrl=queue_url, Entries=halves)
    assert sent == [{}, {}]
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert len({p.context.trace_id for p in producers}) == 2


def test_sends_and_polls_make_no_http_span_of_their_own(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """boto3 sends over urllib3, which ``tracekit.init()`` instruments too: an idle worker's
    long poll was a root trace "POST" of its own every second (``tracekit search`` listed one
    per poll as a request), and each send had a second span, "POST", under its PRODUCER span."""
    instrumentation.instrument(["urllib3"])
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="o")
    [message] = receive(sqs_client, queue_url)
    sqs_client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)  # an idle poll
    with tracekit.sqs.consume(message, queue=queue_url):
        pass
    finished = [(span.name, span.kind) for span in spans.get_finished_spans()]
    name = tracekit.sqs.queue_name(queue_url)
    assert finished == [(f"send {name}", SpanKind.PRODUCER), (f"process {name}", SpanKind.CONSUMER)]


def test_a_delay_asked_for_is_a_scheduled_delay_not_a_backlog_on_the_dashboard(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages sent with ``DelaySeconds`` (a retry with backoff, a reminder) wait in the queue
    because they were asked to: the CONSUMER span says how much of the wait was asked for
    (``tracekit.scheduled_delay_ms``), and the queue-wait histogram dashboards alert on counts
    only the wait past it. It counted the delay: every delayed message was that much backlog.
    One message of the batch has 9 attributes of its own, so its due time travels packed."""
    from prometheus_client import REGISTRY

    monkeypatch.setenv("OTEL_SERVICE_NAME", "sqs-delayed")
    queue = queue_url.rsplit("/")[-1]
    labels = {"messaging_system": "aws_sqs", "messaging_destination_name": queue,
              "service_name": "sqs-delayed", "service_version": ""}  # fmt: skip
    own = {f"app{n}": {"DataType": "String", "StringValue": "v"} for n in range(9)}
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="later", DelaySeconds=1)
    sqs_client.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": "a", "MessageBody": "later too", "DelaySeconds": 1},
            {"Id": "b", "MessageBody": "packed", "DelaySeconds": 1, "MessageAttributes": own},
        ],
    )
    messages = receive(sqs_client, queue_url, count=3)
    for message in messages:
        with tracekit.sqs.consume(message, queue=queue_url):
            pass

    consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert len(messages) == len(consumers) == 3
    packed = next(m for m in messages if m["Body"] == "packed")
    assert "tracekit-context" in packed["MessageAttributes"]
    waits = [(s.attributes or {})[semconv.QUEUE_WAIT_MS] for s in consumers]
    assert all(wait >= 1000 for wait in waits)  # moto holds a delayed message back, as SQS
    assert [(s.attributes or {}).get(semconv.SCHEDULED_DELAY_MS) for s in consumers] == [1000.0] * 3
    past_due_s = sum(wait - 1000.0 for wait in waits) / 1e3
    name = "tracekit_messaging_queue_wait_seconds"
    assert REGISTRY.get_sample_value(f"{name}_count", labels) == 3
    assert REGISTRY.get_sample_value(f"{name}_sum", labels) == pytest.approx(past_due_s, abs=1e-5)


def test_a_delayed_message_relayed_without_a_delay_is_not_sent_its_due_time(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """A worker relays a message it received (a delayed retry) to another queue with all its
    attributes, as a dead-letter or fan-out step does: the first message's due time went along,
    an attribute of the 10 spent on a time already past."""
    relay_url = sqs_client.create_queue(QueueName=f"relay-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="retry", DelaySeconds=1)
    [delayed] = receive(sqs_client, queue_url, MessageAttributeNames=["All"])
    assert "tracekit-due-time" in delayed["MessageAttributes"]

    sqs_client.send_message(
        QueueUrl=relay_url, MessageBody="retry", MessageAttributes=delayed["MessageAttributes"]
    )
    [relayed] = receive(sqs_client, relay_url, MessageAttributeNames=["All"])

    assert "tracekit-due-time" not in relayed["MessageAttributes"]
    assert "traceparent" in relayed["MessageAttributes"]


def test_delays_asked_for_are_no_backlog_for_a_batch_consumer_either(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``consume_batch`` of messages sent with ``DelaySeconds`` and without: the histogram
    counted every delayed message's whole wait. Now each counts its wait past its delay; each
    link still carries the whole wait (``tracekit.queue_wait_ms``)."""
    from prometheus_client import REGISTRY

    monkeypatch.setenv("OTEL_SERVICE_NAME", "sqs-delayed-batch")
    queue = queue_url.rsplit("/")[-1]
    labels = {"messaging_system": "aws_sqs", "messaging_destination_name": queue,
              "service_name": "sqs-delayed-batch", "service_version": ""}  # fmt: skip
    sqs_client.send_message_batch(
        QueueUrl=queue_url,
        Entries=[
            {"Id": "now", "MessageBody": "now"},
            {"Id": "later", "MessageBody": "later", "DelaySeconds": 1},
        ],
    )
    time.sleep(1.2)  # both visible: one receive, one batch
    messages = receive(sqs_client, queue_url, count=2)
    with tracekit.sqs.consume_batch(messages, queue=queue_url):
        pass

    [consumer] = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    waits = [(link.attributes or {})[semconv.QUEUE_WAIT_MS] for link in consumer.links]
    assert len(messages) == len(waits) == 2 and min(waits) >= 1000
    past_due_s = (sum(waits) - 1000.0) / 1e3  # the delayed one's delay is no backlog
    name = "tracekit_messaging_queue_wait_seconds"
    assert REGISTRY.get_sample_value(f"{name}_count", labels) == 2
    assert REGISTRY.get_sample_value(f"{name}_sum", labels) == pytest.approx(past_due_s, abs=1e-5)


def test_the_documented_sns_lambda_handler_continues_the_publishers_trace(
    sqs_client: Any, sns_client: Any, queue_url: str, spans: InMemorySpanExporter
) -> None:
    """docs/queues/sqs.md's handler for a Lambda function subscribed to a topic, run on a
    record made of the envelope SNS delivered to a queue (the same fields Lambda's ``Sns``
    holds): its CONSUMER span is a child of the publish, under the publisher's ID."""
    topic = _subscribed_topic(sqs_client, sns_client, queue_url, raw=False)
    _publish_under(sns_client, topic, '{"id": 9}', "order-sns-lambda")
    [message] = receive(sqs_client, queue_url)
    handled: list[tuple[str, str | None]] = []

    def handle(body: str) -> None:
        handled.append((body, tracekit.correlation_id()))

    def handler(event: dict[str, Any], context: object) -> None:  # as the page writes it
        for record in event["Records"]:
            sns = record["Sns"]
            headers = {
                name: attribute["Value"]
                for name, attribute in (sns.get("MessageAttributes") or {}).items()
                if attribute.get("Type") == "String"
            }
            topic = sns["TopicArn"].rsplit(":", 1)[-1]
            with tracekit.messaging.consume(
                headers, system="aws.sns", destination=topic, message_id=sns["MessageId"]
            ):
                handle(sns["Message"])

    handler({"Records": [{"EventSource": "aws:sns", "Sns": json.loads(message["Body"])}]}, None)

    finished = list(spans.get_finished_spans())
    producer, consumer = one(finished, SpanKind.PRODUCER), one(finished, SpanKind.CONSUMER)
    assert handled == [('{"id": 9}', "order-sns-lambda")]
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.name == f"process {topic.rsplit(':', 1)[-1]}"


def test_a_receive_asks_for_the_x_ray_header_only_where_it_is_read(
    sqs_client: Any, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the default propagators (no ``xray``) nothing reads ``AWSTraceHeader``, yet every
    receive asked for it: a message from Lambda, SNS or an X-Ray-enabled SDK came back with it
    among the caller's ``Attributes``. Under ``xray`` it is still asked for."""
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    system = {"AWSTraceHeader": {"DataType": "String", "StringValue": header}}
    for _ in range(2):
        sqs_client.send_message(
            QueueUrl=queue_url, MessageBody="from aws", MessageSystemAttributes=system
        )

    def receive_one() -> dict[str, Any]:
        asked = {"AttributeNames": ["ApproximateReceiveCount"], "WaitTimeSeconds": 5}
        [message] = sqs_client.receive_message(QueueUrl=queue_url, **asked)["Messages"]
        return dict(message)

    default = receive_one()
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,xray")
    x_ray = receive_one()

    assert sorted(default["Attributes"]) == ["ApproximateReceiveCount", "SentTimestamp"]
    assert x_ray["Attributes"]["AWSTraceHeader"] == header


def test_a_queue_s_own_delay_named_to_consume_is_no_backlog_on_the_dashboard(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue created with ``DelaySeconds`` holds every message back; no message says so, and
    the histogram counted the delay as backlog: 1.04 s of a 1 s delay. Named to ``consume`` and
    ``consume_batch`` (``delay_seconds``), it is the part of the wait asked for, as a
    message's own ``DelaySeconds`` is; a message from a producer without tracekit included."""
    from prometheus_client import REGISTRY

    monkeypatch.setenv("OTEL_SERVICE_NAME", "sqs-queue-delay")
    name = f"delayed-{uuid.uuid4().hex[:8]}"
    url = sqs_client.create_queue(QueueName=name, Attributes={"DelaySeconds": "1"})["QueueUrl"]
    labels = {"messaging_system": "aws_sqs", "messaging_destination_name": name,
              "service_name": "sqs-queue-delay", "service_version": ""}  # fmt: skip
    sqs_client.send_message(QueueUrl=url, MessageBody="traced")
    instrumentation.uninstrument()
    sqs_client.send_message(QueueUrl=url, MessageBody="plain")
    instrumentation.instrument(["botocore"])
    messages = receive(sqs_client, url, count=2)
    for message in messages:
        with tracekit.sqs.consume(message, queue=url, delay_seconds=1):
            pass
    traced = [m for m in messages if m["Body"] == "traced"]
    with tracekit.sqs.consume_batch(traced, queue=url, delay_seconds=1):
        pass

    *alone, batch = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    waits = [(s.attributes or {})[semconv.QUEUE_WAIT_MS] for s in alone]
    waits += [(link.attributes or {})[semconv.QUEUE_WAIT_MS] for link in batch.links]
    assert len(waits) == 3 and min(waits) >= 1000  # moto holds the messages back, as SQS
    scheduled = [(s.attributes or {}).get(semconv.SCHEDULED_DELAY_MS) for s in alone]
    assert scheduled == [1000.0, 1000.0]
    histogram = "tracekit_messaging_queue_wait_seconds"
    assert REGISTRY.get_sample_value(f"{histogram}_count", labels) == 3
    past_due_s = sum(wait - 1000.0 for wait in waits) / 1e3
    assert REGISTRY.get_sample_value(f"{histogram}_sum", labels) == pytest.approx(
        past_due_s, abs=1e-5
    )


@pytest.mark.parametrize("delay", [-1, 901, 1.5, "60", True])
def test_a_queue_delay_sqs_would_not_take_is_refused_with_a_clear_error(delay: Any) -> None:
    message = {"MessageId": "m-1", "Body": "x"}
    with pytest.raises(ValueError, match="delay_seconds must be a whole number of seconds"):
        tracekit.sqs.consume(message, queue="orders", delay_seconds=delay)
    with pytest.raises(ValueError, match="delay_seconds must be a whole number of seconds"):
        tracekit.sqs.consume_batch([message], queue="orders", delay_seconds=delay)


def test_inside_a_span_of_your_own_sends_are_its_children_and_consumers_continue_the_message(
    sqs_client: Any, queue_url: str, spans: InMemorySpanExporter, tracer_provider: Any
) -> None:
    """As docs/queues/sqs.md says: a batch sent in a span of the caller's (a cron job's, no
    request) is one PRODUCER span per entry under it; a consumer inside the caller's polling span
    is a child of the message's producer, and a batch consumer links to every producer."""
    tracer = tracer_provider.get_tracer("the-app")
    with tracer.start_as_current_span("nightly") as nightly:
        entries = [{"Id": str(n), "MessageBody": f"m{n}"} for n in range(2)]
        sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries)
    messages = receive(sqs_client, queue_url, count=2)
    with tracer.start_as_current_span("poll"):
        with tracekit.sqs.consume(messages[0], queue=queue_url):
            pass
        with tracekit.sqs.consume_batch(messages, queue=queue_url):
            pass

    finished = list(spans.get_finished_spans())
    producers = [s for s in finished if s.kind == SpanKind.PRODUCER]
    one_message, batch = [s for s in finished if s.kind == SpanKind.CONSUMER]
    assert len(producers) == 2
    assert all(p.parent is not None and p.parent.span_id == nightly.get_span_context().span_id
               for p in producers)  # fmt: skip
    assert one_message.parent is not None
    assert one_message.parent.span_id in {p.context.span_id for p in producers}
    assert sorted(link.context.span_id for link in batch.links) == sorted(
        p.context.span_id for p in producers
    )


def test_fifo_content_based_deduplication_is_kept_with_tracekit_s_attributes(
    sqs_client: Any,
) -> None:
    """SQS hashes only the body for content-based deduplication: the same body sent from two
    requests, whose attributes differ (traceparent, correlation ID, publish time), is delivered
    once, as without tracekit, with the first send's context."""
    url = sqs_client.create_queue(
        QueueName=f"jobs-{uuid.uuid4().hex[:8]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for correlation_id in ("order-fifo-1", "order-fifo-2"):
        token = tracekit.correlation.set_correlation_id(correlation_id)
        try:
            sqs_client.send_message(QueueUrl=url, MessageBody="same", MessageGroupId="g")
        finally:
            tracekit.correlation.reset_correlation_id(token)
    answer = sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    [message] = answer["Messages"]
    with tracekit.sqs.consume(message, queue=url) as delivery:
        assert delivery.correlation_id == "order-fifo-1"
