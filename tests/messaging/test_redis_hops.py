"""Redis streams and pub/sub (a real redis-server started for the session)."""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import time
import tracemalloc
import uuid
from types import MappingProxyType
from typing import Any
from unittest.mock import ANY
from urllib.parse import parse_qsl

import pytest
import rawhttp
import redis
import requests
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

import tracekit
from tracekit.instrumentation import redis as traced_redis

DELAY_S = 0.3
SLACK_MS = 150.0


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(redis_url: str, request: pytest.FixtureRequest) -> redis.Redis:
    return redis.Redis.from_url(redis_url, protocol=request.param)


def _kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_time or 0)


def _covers(outer: ReadableSpan, inner: ReadableSpan) -> bool:
    assert outer.start_time and outer.end_time and inner.start_time and inner.end_time
    return (
        outer.start_time <= inner.start_time <= inner.end_time <= outer.end_time
        and inner.parent is not None
        and inner.parent.span_id == outer.context.span_id
    )


class _Producer:
    """Entry-service handler that XADDs ``count`` entries (instrumented) and notes when."""

    def __init__(self, client: redis.Redis, stream: str, count: int = 1) -> None:
        self.client, self.stream, self.count = client, stream, count
        self.published_at = 0.0

    def __call__(self, request: Any) -> None:
        for n in range(self.count):
            self.client.xadd(self.stream, {"order": str(n)})
        self.published_at = time.monotonic()


def test_stream_entry_continues_the_request(client, spans, downstream, entry_service) -> None:
    stream = f"orders-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "billing", id="0", mkstream=True)
    producer = _Producer(client, stream)
    with entry_service(producer) as entry:
        requests.post(entry, headers={"X-Correlation-ID": "stream-1"})
    time.sleep(max(0.0, producer.published_at + DELAY_S - time.monotonic()))
    response = client.xreadgroup("billing", "worker-1", {stream: ">"}, count=10)
    handled = []
    for name, entry_id, fields in traced_redis.entries(response):
        with traced_redis.consume_entry(name, entry_id, fields):
            handled.append((fields[b"order"], tracekit.correlation_id()))
            requests.get(f"{downstream.url}/bill")
    client.delete(stream)

    finished = spans.get_finished_spans()
    (server,) = _kind(finished, SpanKind.SERVER)
    (sent,) = _kind(finished, SpanKind.PRODUCER)
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    (call,) = [s for s in _kind(finished, SpanKind.CLIENT) if "/bill" in s.attributes["url.full"]]
    assert handled == [(b"0", "stream-1")]
    assert downstream.requests[0]["x-correlation-id"] == "stream-1"
    assert sent.name == f"send {stream}" and consumer.name == f"process {stream}"
    assert sent.parent.span_id == server.context.span_id
    assert consumer.parent.span_id == sent.context.span_id
    assert sent.attributes["messaging.message.id"] == consumer.attributes["messaging.message.id"]
    assert _covers(consumer, call)
    assert (
        DELAY_S * 1000 <= consumer.attributes["tracekit.queue_wait_ms"] <= DELAY_S * 1000 + SLACK_MS
    )


def test_stream_batch_links_every_entry(client, spans, entry_service) -> None:
    stream = f"events-{uuid.uuid4().hex[:8]}"
    for cid in ("a-1", "a-2", "a-3"):
        with entry_service(_Producer(client, stream)) as entry:
            requests.post(entry, headers={"X-Correlation-ID": cid})
    ((name, stream_entries),) = _streams(client.xread({stream: "0"}))
    with traced_redis.consume_entries(name, stream_entries) as batch:
        assert tracekit.correlation_id() == "a-1"
    client.delete(stream)

    finished = spans.get_finished_spans()
    producers = {s.context.span_id: s for s in _kind(finished, SpanKind.PRODUCER)}
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    assert consumer.parent is None and batch.span is not None
    assert consumer.attributes["messaging.batch.message_count"] == 3
    assert [link.context.span_id for link in consumer.links] == list(producers)
    assert [link.attributes["correlation.id"] for link in consumer.links] == ["a-1", "a-2", "a-3"]


def test_a_batch_past_the_link_limit_keeps_its_first_messages_hops(
    client, spans, tracer_provider, reachable
) -> None:
    """A batch with more messages than a span may hold links (here the SDK's default of 128,
    a provider of the user's own) keeps the links of its first messages, whose correlation ID
    the handler runs with, and says how many it left out: the SDK alone keeps the last ones."""
    limit = tracer_provider._span_limits.max_links
    stream = f"events-{uuid.uuid4().hex[:8]}"
    for n in range(limit + 2):
        token = tracekit.correlation.set_correlation_id(f"order-{n}")
        try:
            client.xadd(stream, {"order": str(n)})
        finally:
            tracekit.correlation.reset_correlation_id(token)
    ((name, stream_entries),) = _streams(client.xread({stream: "0"}))
    with traced_redis.consume_entries(name, stream_entries):
        assert tracekit.correlation_id() == "order-0"
    client.delete(stream)

    finished = spans.get_finished_spans()
    producers = [s.context.span_id for s in _kind(finished, SpanKind.PRODUCER)]
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    assert consumer.attributes["messaging.batch.message_count"] == limit + 2
    assert [link.context.span_id for link in consumer.links] == producers[:limit]
    assert consumer.attributes["tracekit.messaging.links_dropped"] == 2
    assert consumer.context.span_id in reachable("order-1", finished)


def test_stream_batch_of_a_reply_as_redis_py_returns_it(client, spans) -> None:
    """``consume_entries`` takes a stream's entries straight from the reply, under RESP2 and
    RESP3 alike (RESP3 nests them one list deeper)."""
    stream = f"events-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        client.xadd(stream, {"order": str(n)})
    reply = client.xread({stream: "0"})
    per_stream = reply.items() if isinstance(reply, dict) else reply
    for name, stream_entries in per_stream:
        with traced_redis.consume_entries(name, stream_entries):
            pass
    client.delete(stream)

    finished = spans.get_finished_spans()
    producers = [s.context.span_id for s in _kind(finished, SpanKind.PRODUCER)]
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    assert consumer.attributes["messaging.batch.message_count"] == 3
    assert [link.context.span_id for link in consumer.links] == producers


def _streams(response: Any) -> list[tuple[Any, Any]]:
    entries = list(traced_redis.entries(response))
    return [(entries[0][0], [(entry_id, fields) for _, entry_id, fields in entries])]


def test_stream_entry_from_producer_without_tracekit(client, spans) -> None:
    stream = f"legacy-{uuid.uuid4().hex[:8]}"
    client.execute_command("XADD", stream, "*", "correlation_id", "legacy-7", "body", "x")
    (_, entry_id, fields), *_ = traced_redis.entries(client.xread({stream: "0"}))
    with traced_redis.consume_entry(stream, entry_id, fields) as delivery:
        assert tracekit.correlation_id() == "legacy-7"
    client.delete(stream)
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.parent is None and delivery.queue_wait_ms is None
    assert consumer.attributes["correlation.id"] == "legacy-7"


def test_entries_of_a_reply_without_pending_entries_is_empty(client) -> None:
    """A consumer that starts by re-reading its pending entries (XREADGROUP from 0) and has
    none: RESP2 replies ``[[stream, []]]``, RESP3 ``{stream: [[]]}``; neither has an entry."""
    stream = f"pending-{uuid.uuid4().hex[:8]}"
    client.xadd(stream, {"order": "1"})
    client.xgroup_create(stream, "workers", id="0")
    reply = client.xreadgroup("workers", "worker-1", {stream: "0"})
    client.delete(stream)
    assert list(traced_redis.entries(reply)) == []


def _claimable(client: redis.Redis, stream: str, correlation_ids: list[str], entry_service) -> None:
    """Entries published in requests, read by a worker that then died without acknowledging."""
    client.xgroup_create(stream, "billing", id="0", mkstream=True)
    for cid in correlation_ids:
        with entry_service(_Producer(client, stream)) as entry:
            requests.post(entry, headers={"X-Correlation-ID": cid})
    client.xreadgroup("billing", "crashed-worker", {stream: ">"})


@pytest.mark.parametrize("command", ["xautoclaim", "xclaim"])
def test_claimed_entries_continue_their_requests(client, spans, entry_service, command) -> None:
    """Taking over a dead worker's pending entries (XAUTOCLAIM, XCLAIM): their replies name no
    stream, so entries() takes it; each entry's span is still its producer's child."""
    stream = f"claimed-{uuid.uuid4().hex[:8]}"
    _claimable(client, stream, ["claim-1", "claim-2"], entry_service)
    if command == "xautoclaim":
        reply = client.xautoclaim(stream, "billing", "worker-2", min_idle_time=0, start_id="0")
    else:
        pending = client.xpending_range(stream, "billing", "-", "+", 10)
        ids = [p["message_id"] for p in pending]
        reply = client.xclaim(stream, "billing", "worker-2", min_idle_time=0, message_ids=ids)
    handled = []
    for name, entry_id, fields in traced_redis.entries(reply, stream=stream):
        with traced_redis.consume_entry(name, entry_id, fields):
            handled.append((name, fields[b"order"], tracekit.correlation_id()))
    client.delete(stream)

    finished = spans.get_finished_spans()
    producers = _kind(finished, SpanKind.PRODUCER)
    consumers = _kind(finished, SpanKind.CONSUMER)
    assert handled == [(stream, b"0", "claim-1"), (stream, b"0", "claim-2")]
    assert [c.name for c in consumers] == [f"process {stream}"] * 2
    assert [c.parent.span_id for c in consumers] == [p.context.span_id for p in producers]


def test_an_autoclaimed_batch_links_every_entry(client, spans, entry_service) -> None:
    stream = f"claimed-{uuid.uuid4().hex[:8]}"
    _claimable(client, stream, ["claim-1", "claim-2"], entry_service)
    reply = client.xautoclaim(stream, "billing", "worker-2", min_idle_time=0, start_id="0")
    with traced_redis.consume_entries(stream, reply):
        assert tracekit.correlation_id() == "claim-1"
    client.delete(stream)

    finished = spans.get_finished_spans()
    producers = [s.context.span_id for s in _kind(finished, SpanKind.PRODUCER)]
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    assert consumer.attributes["messaging.batch.message_count"] == 2
    assert [link.context.span_id for link in consumer.links] == producers


@pytest.mark.parametrize("command", ["xautoclaim", "xclaim", "xrange"])
def test_a_reply_naming_no_stream_given_without_it_says_what_is_missing(client, command) -> None:
    stream = f"claimed-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "billing", id="0", mkstream=True)
    entry_id = client.xadd(stream, {"order": "0"})
    client.xreadgroup("billing", "crashed-worker", {stream: ">"})
    if command == "xautoclaim":
        reply = client.xautoclaim(stream, "billing", "worker-2", min_idle_time=0)
    elif command == "xclaim":
        ids = [entry_id]
        reply = client.xclaim(stream, "billing", "worker-2", min_idle_time=0, message_ids=ids)
    else:
        reply = client.xrange(stream)
    client.delete(stream)
    with pytest.raises(TypeError, match=r"names no stream: entries\(reply, stream=\.\.\.\)"):
        list(traced_redis.entries(reply))
    assert list(traced_redis.entries(reply, stream=stream)) == [(stream, entry_id.decode(), ANY)]


@pytest.mark.parametrize("claimed", [1, 2], ids=["one-entry", "two-entries"])
@pytest.mark.parametrize("command", ["xautoclaim", "xclaim"])
def test_a_justid_claim_reply_is_refused_for_what_it_is(client, command, claimed) -> None:
    """XAUTOCLAIM and XCLAIM with JUSTID answer entry IDs alone: no fields, so no trace to
    continue. Read as an XAUTOCLAIM reply (it begins with an ID), one ID was no entry at all and
    two failed with 'cannot unpack non-iterable int object'; each now says what it is."""
    stream = f"claimed-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "billing", id="0", mkstream=True)
    ids = [client.xadd(stream, {"order": str(n)}) for n in range(claimed)]
    client.xreadgroup("billing", "crashed-worker", {stream: ">"})
    if command == "xautoclaim":
        reply = client.xautoclaim(stream, "billing", "worker-2", 0, justid=True)
    else:
        reply = client.xclaim(stream, "billing", "worker-2", 0, ids, justid=True)
    client.delete(stream)
    assert len(reply) == claimed
    justid = r"a JUSTID reply holds entry IDs alone, no fields: claim without JUSTID"
    with pytest.raises(TypeError, match=justid):
        list(traced_redis.entries(reply, stream=stream))
    with pytest.raises(TypeError, match=justid):
        list(traced_redis.entries(reply))
    with pytest.raises(TypeError, match=justid):
        traced_redis.consume_entries(stream, reply)


@pytest.mark.parametrize("fields", [{}, MappingProxyType({"order": "1"})], ids=["empty", "proxy"])
def test_xadd_fields_redis_py_refuses_are_refused_as_without_tracekit(
    client, spans, fields
) -> None:
    """redis-py takes only a non-empty dict: tracekit's own fields must not make it a write."""
    stream = f"refused-{uuid.uuid4().hex[:8]}"
    with pytest.raises(redis.DataError, match="XADD fields must be a non-empty dict"):
        client.xadd(stream, fields)
    assert client.exists(stream) == 0
    assert spans.get_finished_spans() == ()


@pytest.mark.parametrize("positional", [False, True], ids=["keyword", "positional"])
def test_xadd_idmpauto_sends_only_the_callers_fields(client, spans, positional) -> None:
    """IDMPAUTO derives the idempotent ID from the fields: a traceparent and publish time new
    on every call would make every retry a new entry. The span is still recorded."""
    stream = f"idempotent-{uuid.uuid4().hex[:8]}"
    names = list(inspect.signature(client.xadd).parameters)
    if positional:
        args = [None] * names.index("idmpauto") + ["producer-1"]
        args[:3] = [stream, {"order": "1"}, "*"]
        call, kwargs = tuple(args), {}
    else:
        call, kwargs = (stream, {"order": "1"}), {"idmpauto": "producer-1"}
    with client.monitor() as monitor:
        # A server before Redis 8.6 knows no IDMPAUTO and refuses it: what was sent is the point.
        with contextlib.suppress(redis.ResponseError):
            client.xadd(*call, **kwargs)
        sent = next(c for c in iter(monitor.next_command, None) if c["command"].startswith("XADD"))
    client.delete(stream)
    assert sent["command"] == f"XADD {stream} IDMPAUTO producer-1 * order 1"
    (producer,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert producer.name == f"send {stream}"


def test_stream_fields_named_like_ours_in_other_capitals_are_replaced(client, spans) -> None:
    """The app's own ``Traceparent`` (or ``b"traceparent"``) field beside tracekit's: the
    consumer would read two and trust neither (a new trace)."""
    stream = f"spelled-{uuid.uuid4().hex[:8]}"
    stale = f"00-{1:032x}-{1:016x}-01"
    client.xadd(stream, {"Traceparent": stale, b"x-correlation-id": b"app", "body": "x"})
    (_, entry_id, fields), *_ = traced_redis.entries(client.xread({stream: "0"}))
    with traced_redis.consume_entry(stream, entry_id, fields):
        pass
    client.delete(stream)
    producer = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)[0]
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    names = [k.decode() if isinstance(k, bytes) else k for k in fields]
    assert sorted(n.lower() for n in names) == sorted({n.lower() for n in names})
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


def test_xadd_in_a_pipeline_is_sent_and_traced_at_execute(client, spans) -> None:
    """A pipeline only queues XADD: its PRODUCER span ends when execute() sends it, with the
    entry's ID; an XADD Redis refuses there is a failed span; one never executed is none."""
    stream, wrong_type = f"piped-{uuid.uuid4().hex[:8]}", f"string-{uuid.uuid4().hex[:8]}"
    client.set(wrong_type, "not a stream")
    with client.pipeline() as discarded:
        discarded.xadd(stream, {"order": "never sent"})
    pipeline = client.pipeline(transaction=False)
    pipeline.xadd(stream, {"order": "1"})
    pipeline.xadd(wrong_type, {"order": "2"})
    time.sleep(DELAY_S)
    executed_at = time.time_ns()
    entry_id, refused = pipeline.execute(raise_on_error=False)
    client.delete(stream, wrong_type)
    assert isinstance(refused, redis.ResponseError)
    sent, failed = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert sent.name == f"send {stream}" and failed.name == f"send {wrong_type}"
    assert sent.attributes["messaging.message.id"] == _text(entry_id)
    assert sent.end_time is not None and sent.end_time >= executed_at
    assert sent.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "ResponseError"


@pytest.mark.parametrize("transaction", [True, False], ids=["multi-exec", "plain"])
def test_a_refused_xadd_that_raises_fails_only_its_own_span(client, spans, transaction) -> None:
    """execute() raises for the first command Redis refused, once every reply is in: the other
    entries were written, and their spans say so, with their entry IDs."""
    stream, wrong_type = f"piped-{uuid.uuid4().hex[:8]}", f"string-{uuid.uuid4().hex[:8]}"
    client.set(wrong_type, "not a stream")
    pipeline = client.pipeline(transaction=transaction)
    pipeline.xadd(stream, {"order": "1"})
    pipeline.xadd(wrong_type, {"order": "2"})
    pipeline.xadd(stream, {"order": "3"})
    with pytest.raises(redis.ResponseError, match="Command # 2"):
        pipeline.execute()
    written = [_text(entry_id) for entry_id, _ in client.xrange(stream)]
    client.delete(stream, wrong_type)
    spans_by_outcome = [
        (s.name, s.status.status_code, s.attributes.get("messaging.message.id"))
        for s in _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    ]
    assert len(written) == 2
    assert spans_by_outcome == [
        (f"send {stream}", StatusCode.UNSET, written[0]),
        (f"send {wrong_type}", StatusCode.ERROR, None),
        (f"send {stream}", StatusCode.UNSET, written[1]),
    ]


def test_a_pipeline_redis_never_answered_fails_every_span(client, spans) -> None:
    """A pipeline that fails before Redis answers (WATCH saw a change) wrote nothing."""
    stream = f"piped-{uuid.uuid4().hex[:8]}"
    watched = f"watched-{uuid.uuid4().hex[:8]}"
    pipeline = client.pipeline()
    pipeline.watch(watched)
    client.set(watched, "changed meanwhile")
    pipeline.multi()
    pipeline.xadd(stream, {"order": "1"})
    with pytest.raises(redis.WatchError):
        pipeline.execute()
    client.delete(watched)
    assert client.exists(stream) == 0
    (span,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "WatchError"


def test_xadds_queued_in_a_pipeline_at_shutdown_keep_their_spans(
    client, spans, instrumented
) -> None:
    """``tracekit.shutdown()`` (uninstrumenting) while a pipeline holds a queued XADD: its span
    was never recorded, and once tracekit was back, the same pipeline's next execute() ended
    it with the next entry's ID, so two spans claimed one entry."""
    stream = f"piped-{uuid.uuid4().hex[:8]}"
    redis_instrumentor = instrumented["RedisInstrumentor"]
    pipeline = client.pipeline(transaction=False)
    pipeline.xadd(stream, {"order": "1"})
    redis_instrumentor.uninstrument()
    try:
        recorded_at_shutdown = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
        pipeline.execute()
    finally:
        redis_instrumentor.instrument()
    pipeline.xadd(stream, {"order": "2"})
    (entry_id,) = pipeline.execute()
    client.delete(stream)
    (queued,) = recorded_at_shutdown
    assert queued.name == f"send {stream}"
    assert queued.attributes["tracekit.delivery.outcome"] == "unknown"
    assert "messaging.message.id" not in queued.attributes
    producers = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert [s.attributes.get("messaging.message.id") for s in producers] == [
        None,
        _text(entry_id),
    ]


def test_a_relayed_tracestate_never_rides_beside_a_new_traceparent(client, spans) -> None:
    """A relay forwards an entry's fields, ``tracestate`` of another trace included, outside
    any context carrying one: tracekit's new ``traceparent`` went out with that foreign
    ``tracestate`` beside it. The relay's own correlation ID stays."""
    stream = f"relayed-{uuid.uuid4().hex[:8]}"
    foreign = {"traceparent": f"00-{7:032x}-{7:016x}-01", "tracestate": "vendor=stale",
               "x-correlation-id": "relay-3", "body": "x"}  # fmt: skip
    client.xadd(stream, foreign)
    (_, _, fields), *_ = traced_redis.entries(client.xread({stream: "0"}))
    client.delete(stream)
    sent = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
    producer = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)[0]
    assert _text(sent["traceparent"]).split("-")[1] == f"{producer.context.trace_id:032x}"
    assert "tracestate" not in sent and _text(sent["x-correlation-id"]) == "relay-3"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture
def named_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channels these tests publish on are named for tracing (globs)."""
    monkeypatch.setenv("TRACEKIT_REDIS_PUBSUB_CHANNELS", "prices-*, alerts-*")


@pytest.mark.usefixtures("named_channels")
def test_pubsub_get_message_strips_the_envelope(client, spans, downstream, entry_service) -> None:
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)  # the subscribe confirmation

    def publish(request: Any) -> None:
        client.publish(channel, "price changed")

    with entry_service(publish) as entry:
        requests.post(entry, headers={"X-Correlation-ID": "pubsub-1"})
    message = subscriber.get_message(timeout=5)
    assert message is not None
    assert message["data"] in (b"price changed", "price changed")  # the original payload
    assert tracekit.correlation_id() == "pubsub-1"
    requests.get(f"{downstream.url}/reprice")
    subscriber.close()  # ends the message's span
    assert tracekit.correlation_id() is None

    finished = spans.get_finished_spans()
    (sent,) = _kind(finished, SpanKind.PRODUCER)
    (consumer,) = _kind(finished, SpanKind.CONSUMER)
    (call,) = [
        s for s in _kind(finished, SpanKind.CLIENT) if "/reprice" in s.attributes["url.full"]
    ]
    assert consumer.parent.span_id == sent.context.span_id
    assert _covers(consumer, call)
    assert downstream.requests[0]["x-correlation-id"] == "pubsub-1"


@pytest.mark.usefixtures("named_channels")
def test_a_poll_that_finds_no_message_ends_the_last_ones_span(client, spans) -> None:
    """A subscriber polling ``get_message(timeout=...)``: the message's span stayed open, and
    its correlation ID current, through every poll that found nothing, until the next message
    came; its span covered the idle wait, not the handling."""
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    token = tracekit.correlation.set_correlation_id("pubsub-idle-1")
    client.publish(channel, "price changed")
    tracekit.correlation.reset_correlation_id(token)
    assert subscriber.get_message(timeout=5) is not None
    assert tracekit.correlation_id() == "pubsub-idle-1"
    polled_at = time.time_ns()
    assert subscriber.get_message(timeout=DELAY_S) is None  # nothing more came
    idle = (tracekit.correlation_id(), _kind(spans.get_finished_spans(), SpanKind.CONSUMER))
    subscriber.close()
    current, (consumer,) = idle
    assert current is None
    assert consumer.attributes["correlation.id"] == "pubsub-idle-1"
    assert consumer.end_time is not None and consumer.end_time <= polled_at + DELAY_S * 1e9 / 2


@pytest.mark.usefixtures("named_channels")
def test_leaving_a_pubsubs_with_block_ends_the_message_span(client, spans) -> None:
    """``with client.pubsub() as p:`` closes it on the way out (redis-py calls reset()): the
    span of the last message read ends there, and its context is no longer current."""
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    with client.pubsub(ignore_subscribe_messages=True) as subscriber:
        subscriber.subscribe(channel)
        subscriber.get_message(timeout=1)  # the subscribe confirmation
        token = tracekit.correlation.set_correlation_id("pubsub-with-1")
        client.publish(channel, "price changed")
        tracekit.correlation.reset_correlation_id(token)
        message = subscriber.get_message(timeout=5)
        assert message is not None and tracekit.correlation_id() == "pubsub-with-1"
    assert tracekit.correlation_id() is None
    assert not trace.get_current_span().get_span_context().is_valid
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.attributes["correlation.id"] == "pubsub-with-1"


@pytest.mark.usefixtures("named_channels")
def test_a_subscribers_metrics_show_no_control_character_in_a_channel_name(
    client, spans, monkeypatch
) -> None:
    """The channel is the destination label: one named with a terminal's escape sequences (a
    window title, a hyperlink, a carriage return; a name a subscriber was handed) was scraped
    raw, acted on by whoever read /metrics in a terminal. Such characters read as ``?``, like
    those UTF-8 cannot encode. (Under a pattern subscription, where publishers choose the
    channel, the label is the pattern: see the test of pattern subscriptions above.)"""
    from prometheus_client import REGISTRY, generate_latest

    service = f"pattern-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    tag = uuid.uuid4().hex[:8]
    channel = f"prices-{tag}\x1b]0;owned\x07\r\x9b2J\x7f"
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    token = tracekit.correlation.set_correlation_id("pattern-1")
    client.publish(channel, "price changed")
    tracekit.correlation.reset_correlation_id(token)
    message = subscriber.get_message(timeout=5)
    subscriber.close()
    assert message is not None and _text(message["channel"]) == channel  # the app gets it as sent

    scrape = generate_latest(REGISTRY).decode()
    ours = [line for line in scrape.split("\n") if f'service_name="{service}"' in line]
    assert any("messaging_process_duration_seconds_count" in line for line in ours)
    assert all(line.isprintable() for line in ours), [ln for ln in ours if not ln.isprintable()]
    assert f'messaging_destination_name="prices-{tag}?]0;owned???2J?"' in "\n".join(ours)


@pytest.mark.usefixtures("named_channels")
def test_a_channel_named_in_printed_text_keeps_its_name_in_the_metrics(
    client, spans, monkeypatch
) -> None:
    """Text a person reads as printed (a no-break space, an emoji joined by a zero-width
    joiner, a Persian word with its zero-width non-joiner) is not a control character: it was
    scraped as it is, and stays one series under that name. Python calls those characters not
    printable, and they read as ``?``: every such series was renamed, and two names differing
    only there became one."""
    from prometheus_client import REGISTRY, generate_latest

    service = f"printed-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    tag = uuid.uuid4().hex[:8]
    # "café", a no-break space, the woman-technologist emoji (two joined), Persian "I want"
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645"
    channel = f"prices-{tag}-caf\u00e9\u00a0\U0001f469\u200d\U0001f4bb-{persian}"
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    client.publish(channel, "price changed")
    message = subscriber.get_message(timeout=5)
    subscriber.close()
    assert message is not None and _text(message["channel"]) == channel

    scrape = generate_latest(REGISTRY).decode()
    ours = [line for line in scrape.split("\n") if f'service_name="{service}"' in line]
    assert any("messaging_process_duration_seconds_count" in line for line in ours)
    assert f'messaging_destination_name="{channel}"' in "\n".join(ours)


@pytest.mark.usefixtures("named_channels")
def test_a_pattern_subscription_names_its_spans_by_the_pattern(client, spans, monkeypatch) -> None:
    """Publishers choose the channel a pattern subscriber gets (``prices-<sku>``): named by it,
    the subscriber's spans had a name per channel, which Jaeger and Tempo list as operations,
    and its metrics a series per channel, up to the label's cap. As OpenTelemetry's messaging
    conventions ask of a destination of high cardinality, the span is named, and the metrics
    labelled, by the pattern (``messaging.destination.template``); the channel stays the span's
    ``messaging.destination.name``."""
    from prometheus_client import REGISTRY, generate_latest

    service = f"pattern-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    tag = uuid.uuid4().hex[:8]
    pattern = f"prices-{tag}-*"
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.psubscribe(pattern)
    subscriber.get_message(timeout=1)  # the psubscribe confirmation
    for sku in ("a1", "b2"):
        client.publish(f"prices-{tag}-{sku}", "price changed")
        assert subscriber.get_message(timeout=5) is not None
    subscriber.get_message(timeout=0.1)  # the next fetch ends the second message's span
    subscriber.close()
    consumers = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert [s.name for s in consumers] == [f"process {pattern}"] * 2
    assert [s.attributes["messaging.destination.name"] for s in consumers] == [
        f"prices-{tag}-a1", f"prices-{tag}-b2"
    ]  # fmt: skip
    assert {s.attributes["messaging.destination.template"] for s in consumers} == {pattern}
    scrape = generate_latest(REGISTRY).decode()
    counts = [
        line
        for line in scrape.split("\n")
        if line.startswith("messaging_process_duration_seconds_count")
        and f'service_name="{service}"' in line
    ]
    assert len(counts) == 1 and f'messaging_destination_name="{pattern}"' in counts[0], counts
    assert counts[0].endswith(" 2.0")


@pytest.mark.usefixtures("named_channels")
def test_pubsub_channel_handler_runs_inside_the_span(client, spans) -> None:
    channel = f"alerts-{uuid.uuid4().hex[:8]}"
    received: list[tuple[Any, str | None]] = []
    subscriber = client.pubsub()
    subscriber.subscribe(
        **{channel: lambda m: received.append((m["data"], tracekit.correlation_id()))}
    )
    subscriber.get_message(timeout=1)
    token = tracekit.correlation.set_correlation_id("alert-5")
    client.publish(channel, b"\x00binary\xff")
    tracekit.correlation.reset_correlation_id(token)
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        subscriber.get_message(timeout=0.5)
    subscriber.close()
    assert received == [(b"\x00binary\xff", "alert-5")]
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.attributes["correlation.id"] == "alert-5"


def _raw_subscriber(client: redis.Redis, pattern: str) -> Any:
    """A subscriber that reads replies the way kombu does (``parse_response``), so it sees the
    payload exactly as it travelled, with no tracekit on the receiving side."""
    subscriber = client.pubsub()
    subscriber.psubscribe(pattern)
    assert subscriber.parse_response(timeout=5)[0] in (b"psubscribe", "psubscribe")
    return subscriber


def _raw_payload(subscriber: Any) -> Any:
    reply = subscriber.parse_response(timeout=5)
    assert reply is not None and reply[0] in (b"pmessage", "pmessage")
    return reply[-1]


@pytest.mark.usefixtures("named_channels")
def test_uninstrument_ends_a_held_pubsub_message(client, spans, instrumented) -> None:
    """``get_message`` holds the message's span until the next fetch; uninstrumenting ends it,
    or its correlation ID would stay current for good."""
    redis_instrumentor = instrumented["RedisInstrumentor"]
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    subscriber = client.pubsub()
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    token = tracekit.correlation.set_correlation_id("price-1")
    client.publish(channel, "42")
    tracekit.correlation.reset_correlation_id(token)
    message = subscriber.get_message(timeout=2)
    held = tracekit.correlation_id()
    try:
        redis_instrumentor.uninstrument()
        after = tracekit.correlation_id()
    finally:
        redis_instrumentor.instrument()
    subscriber.close()
    assert message is not None and (held, after) == ("price-1", None)
    assert [
        s.attributes["correlation.id"] for s in _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    ] == ["price-1"]


@pytest.mark.usefixtures("named_channels")
def test_pubsub_leaves_channels_not_named_untouched(client, spans) -> None:
    channel = f"ticks-{uuid.uuid4().hex[:8]}"
    subscriber = _raw_subscriber(client, channel)
    token = tracekit.correlation.set_correlation_id("tick-1")
    client.publish(channel, b"\x1e{raw}")
    tracekit.correlation.reset_correlation_id(token)
    assert _raw_payload(subscriber) == b"\x1e{raw}"
    subscriber.close()
    assert _kind(spans.get_finished_spans(), SpanKind.PRODUCER) == []


# What a request may carry: a valid 32-member tracestate whose values use characters tracestate
# allows but URL encoding triples ('/', '+'), and a few KiB of baggage.
INBOUND_TRACE_ID = "ab" * 16
INBOUND = {
    "traceparent": f"00-{INBOUND_TRACE_ID}-{'cd' * 8}-01",
    "tracestate": ",".join(f"v{i:02d}=" + "/+" * 120 for i in range(32)),
    "baggage": ",".join(f"k{i:02d}=" + "v" * 90 for i in range(30)),
    "X-Correlation-ID": "big-context-1",
}
ALWAYS_SENT = {"traceparent", "x-correlation-id", "tracekit-publish-time"}


@pytest.mark.usefixtures("named_channels")
@pytest.mark.parametrize(
    ("limit", "envelope_fields"),
    [
        (traced_redis.MAX_ENVELOPE_HEADERS, {*ALWAYS_SENT, "baggage"}),  # tracestate dropped
        (1024, ALWAYS_SENT),  # baggage dropped too
        (64, None),  # not even traceparent fits: the bare payload
    ],
    ids=["without-tracestate", "without-baggage", "bare"],
)
def test_pubsub_envelope_always_fits_what_subscribers_accept(
    client, spans, entry_service, monkeypatch, limit, envelope_fields
) -> None:
    monkeypatch.setattr(traced_redis, "MAX_ENVELOPE_HEADERS", limit)  # publisher and subscriber
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    raw = _raw_subscriber(client, channel)
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)

    def publish(request: Any) -> None:
        client.publish(channel, b'{"order": 42}')

    with entry_service(publish) as entry:  # the headers exactly as given (no instrumented client)
        lines = [f"{name}: {value}".encode() for name, value in INBOUND.items()]
        assert rawhttp.send(entry, lines, "POST").status == 202
    on_the_wire = _raw_payload(raw)
    message = subscriber.get_message(timeout=5)
    handling = tracekit.correlation_id()
    subscriber.close()
    raw.close()

    assert message is not None and message["data"] == b'{"order": 42}'  # never altered
    (sent,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert f"{sent.context.trace_id:032x}" == INBOUND_TRACE_ID
    if envelope_fields is None:
        assert on_the_wire == b'{"order": 42}'
        assert _kind(spans.get_finished_spans(), SpanKind.CONSUMER) == []
        return
    _, mark, carried, payload = on_the_wire.split(b"\x1e", 3)
    assert (mark, payload) == (b"tracekit1", b'{"order": 42}')
    assert set(dict(parse_qsl(carried.decode()))) == envelope_fields
    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == sent.context.span_id
    assert handling == "big-context-1"


def test_a_broken_setting_never_stops_xadd_or_publish(client, spans, monkeypatch) -> None:
    """A TRACEKIT_* variable tracekit cannot read (no ``init`` to refuse it first): XADD and
    PUBLISH go out as the caller made them, as every other queue client's do."""
    monkeypatch.setenv("TRACEKIT_MODE", "bogus")
    monkeypatch.setenv("TRACEKIT_REDIS_PUBSUB_CHANNELS", "*")
    stream, channel = f"broken-{uuid.uuid4().hex[:8]}", f"prices-{uuid.uuid4().hex[:8]}"
    subscriber = _raw_subscriber(client, channel)
    client.xadd(stream, {"order": "1", "traceparent": "kept: not tracekit's to drop"})
    client.publish(channel, "42.0")
    assert _raw_payload(subscriber) in (b"42.0", "42.0")
    subscriber.close()
    [(_, fields)] = client.xrange(stream)
    assert fields == {b"order": b"1", b"traceparent": b"kept: not tracekit's to drop"}
    assert spans.get_finished_spans() == ()


def test_a_redis_py_whose_asyncio_cluster_pipeline_has_no_reset_is_traced(
    client, spans, instrumented, monkeypatch
) -> None:
    """redis-py before 6.2 (5.0 and later are what tracekit's ``redis`` extra allows) has no
    ``reset`` on its asyncio ``ClusterPipeline``. Patching failed on it, so redis-py was not
    instrumented at all: one warning, then stream entries without the correlation ID or trace
    context, and no PRODUCER span."""
    redis_instrumentor = instrumented["RedisInstrumentor"]
    stream = f"old-redis-{uuid.uuid4().hex[:8]}"
    token = tracekit.correlation.set_correlation_id("order-50")
    try:
        redis_instrumentor.uninstrument()
        monkeypatch.delattr(redis.asyncio.cluster.ClusterPipeline, "reset")
        redis_instrumentor.instrument()
        client.xadd(stream, {"order": "1"})
    finally:
        tracekit.correlation.reset_correlation_id(token)
        redis_instrumentor.uninstrument()
        monkeypatch.undo()
        redis_instrumentor.instrument()
    [(_, fields)] = client.xrange(stream)
    client.delete(stream)
    assert fields[b"order"] == b"1"
    assert fields[b"x-correlation-id"] == b"order-50"
    (sent,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert sent.name == f"send {stream}"
    assert fields[b"traceparent"].decode().split("-")[2] == format(sent.context.span_id, "016x")


def test_pubsub_is_off_by_default(client, spans, monkeypatch) -> None:
    monkeypatch.delenv("TRACEKIT_REDIS_PUBSUB_CHANNELS", raising=False)
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    subscriber = _raw_subscriber(client, channel)
    client.publish(channel, "42.0")
    assert _raw_payload(subscriber) in (b"42.0", "42.0")
    subscriber.close()
    assert _kind(spans.get_finished_spans(), SpanKind.PRODUCER) == []


def test_kombu_publishes_are_never_enveloped(redis_url, client, spans, monkeypatch) -> None:
    from kombu import Connection, Exchange, Producer

    monkeypatch.setenv("TRACEKIT_REDIS_PUBSUB_CHANNELS", "*")  # every channel named
    exchange = Exchange(f"bcast-{uuid.uuid4().hex[:8]}", type="fanout")
    subscriber = _raw_subscriber(client, f"*{exchange.name}*")
    with Connection(redis_url) as connection:
        producer = Producer(connection.channel(), exchange=exchange)
        producer.publish({"method": "ping"}, declare=[exchange], serializer="json")
    message = json.loads(_raw_payload(subscriber))  # what kombu's subscriber does with it
    subscriber.close()
    assert json.loads(base64.b64decode(message["body"])) == {"method": "ping"}
    assert _kind(spans.get_finished_spans(), SpanKind.PRODUCER) == []


def test_asyncio_client_xadd_span_ends_after_the_await(redis_url, spans) -> None:
    import asyncio

    from redis import asyncio as aioredis

    stream = f"async-{uuid.uuid4().hex[:8]}"

    async def produce() -> bytes:
        client = aioredis.Redis.from_url(redis_url)
        try:
            entry_id = await client.xadd(stream, {"n": "1"})
            ((_, entries),) = await client.xread({stream: "0"})
            assert b"traceparent" in entries[0][1]
            await client.delete(stream)
            return entry_id
        finally:
            await client.aclose()

    entry_id = asyncio.run(produce())
    (sent,) = _kind(spans.get_finished_spans(), SpanKind.PRODUCER)
    assert sent.attributes["messaging.message.id"] == entry_id.decode()


def test_a_pubsub_closed_from_a_collected_objects_del_does_not_hang(redis_url: str) -> None:
    """An app object in a reference cycle closes its PubSub in ``__del__``; the garbage
    collector runs it whenever it likes, even inside tracekit's own bookkeeping of the messages
    it holds. That must not wait for itself (a lock there hung after 71 messages)."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import redis
        from tracekit.instrumentation.redis import RedisInstrumentor
        RedisInstrumentor().instrument()
        client = redis.Redis.from_url({redis_url!r})

        class Worker:
            def __init__(self):
                self.pubsub, self.me = client.pubsub(), self
            def __del__(self):
                self.pubsub.close()

        pubsub = client.pubsub()
        for _ in range(3000):
            Worker()
            pubsub.handle_message([b"message", b"prices-1", b"42"])
        print("done")
    """)
    environ = {**os.environ, "TRACEKIT_REDIS_PUBSUB_CHANNELS": "*"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=environ)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr


def test_a_batch_links_no_span_made_up_for_a_b3_denial(client, spans, monkeypatch) -> None:
    """A Zipkin producer's entry saying only ``b3: 0`` (leave it out, no ids) was linked to a
    span of a made-up trace, which exists nowhere, beside the real producer's; the batch
    now links only the producer that named its span (its correlation ID still counts)."""
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage,b3")
    stream = f"zipkin-{uuid.uuid4().hex[:8]}"
    traced = f"00-{'4bf92f3577b34da6a3ce929d0e0e4736'}-{'00f067aa0ba902b7'}-01"
    client.execute_command("XADD", stream, "*", "b3", "0", "x-correlation-id", "denied-1")
    client.execute_command("XADD", stream, "*", "traceparent", traced, "body", "x")
    ((name, stream_entries),) = _streams(client.xread({stream: "0"}))
    with traced_redis.consume_entries(name, stream_entries):
        assert tracekit.correlation_id() == "denied-1"
    client.delete(stream)

    (consumer,) = _kind(spans.get_finished_spans(), SpanKind.CONSUMER)
    assert consumer.attributes["messaging.batch.message_count"] == 2
    assert [(link.context.trace_id, link.context.span_id) for link in consumer.links] == [
        (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    ]


@pytest.mark.parametrize("mode", ["full", "correlation"])
def test_an_entry_added_outside_a_request_keeps_one_id_through_every_redelivery(
    client, spans, mode, monkeypatch
) -> None:
    """A cron job XADDs with no correlation ID current: each delivery of the entry (read,
    pending re-read, XAUTOCLAIM twice) made an ID of its own, so ``tracekit trace`` showed one
    delivery, and in correlation-only mode nothing linked them. The entry now carries an ID of
    its own; the job's next entry another; and the job itself still has none current."""
    monkeypatch.setenv("TRACEKIT_MODE", mode)
    stream = f"jobs-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, "workers", id="0", mkstream=True)
    client.xadd(stream, {"job": "1"})
    client.xadd(stream, {"job": "2"})
    assert tracekit.correlation_id() is None

    seen: dict[bytes, list[str | None]] = {b"1": [], b"2": []}

    def handle(reply: Any, named: str | None = None) -> None:
        for name, entry_id, fields in traced_redis.entries(reply, named):
            with traced_redis.consume_entry(name, entry_id, fields):
                seen[fields[b"job"]].append(tracekit.correlation_id())

    handle(client.xreadgroup("workers", "w1", {stream: ">"}))
    handle(client.xreadgroup("workers", "w1", {stream: "0"}))  # its pending entries again
    handle(client.xautoclaim(stream, "workers", "w2", 0, "0-0"), stream)
    handle(client.xautoclaim(stream, "workers", "w3", 0, "0-0"), stream)
    client.delete(stream)

    first, second = seen[b"1"], seen[b"2"]
    assert len(first) == len(second) == 4
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]
    assert all(tracekit.correlation.is_valid(cid) for cid in (first[0], second[0]))
    if mode == "full":
        sent = _kind(list(spans.get_finished_spans()), SpanKind.PRODUCER)
        assert [s.attributes["correlation.id"] for s in sent] == [first[0], second[0]]


def test_an_entry_with_a_correlation_id_field_of_its_own_keeps_it(client, spans) -> None:
    """Outside a request, an entry's own ``correlation_id`` field is its ID: no new one
    is made over it."""
    stream = f"jobs-{uuid.uuid4().hex[:8]}"
    client.xadd(stream, {"job": "1", "correlation_id": "nightly-7"})
    ((_, entry_id, fields),) = traced_redis.entries(client.xrange(stream), stream)
    with traced_redis.consume_entry(stream, entry_id, fields):
        handled = tracekit.correlation_id()
    client.delete(stream)
    assert handled == "nightly-7" and b"x-correlation-id" not in fields
    (sent,) = _kind(list(spans.get_finished_spans()), SpanKind.PRODUCER)
    assert sent.attributes["correlation.id"] == "nightly-7"


def _peak_bytes_reading(subscriber: Any) -> tuple[Any, int]:
    """The next message ``get_message`` returns, and the most memory Python held reading it."""
    tracemalloc.start()
    try:
        message = subscriber.get_message(timeout=5)
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_payload_posing_as_an_envelope_costs_what_any_payload_costs(
    redis_url: str, spans
) -> None:
    """Subscribers read at most 16 KiB of an envelope's headers. A payload that began with the
    envelope's mark and had its separator 8 MiB further on was copied and decoded whole before
    being found too long: reading it held 40 MiB where a plain payload of that size holds 25.
    (Over RESP2: the RESP3 reader's own peak, 89 MiB, hides the difference.)"""
    client = redis.Redis.from_url(redis_url, protocol=2)
    channel = f"ticks-{uuid.uuid4().hex[:8]}"
    subscriber = client.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel)
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    plain = b"\xff" * (8 << 20)
    posing = traced_redis.ENVELOPE_MARK.encode() + plain + traced_redis.SEPARATOR.encode()
    client.publish(channel, plain)
    plain_message, plain_peak = _peak_bytes_reading(subscriber)
    client.publish(channel, posing)
    posing_message, posing_peak = _peak_bytes_reading(subscriber)
    subscriber.close()
    assert plain_message is not None and plain_message["data"] == plain
    assert posing_message is not None and posing_message["data"] == posing  # handed over as sent
    assert posing_peak < plain_peak + (1 << 20)
    assert _kind(spans.get_finished_spans(), SpanKind.CONSUMER) == []
