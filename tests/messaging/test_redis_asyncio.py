"""Redis through redis-py's asyncio client (the private redis-server of conftest.py).

An asyncio command runs when its coroutine is awaited, and that may be in another task than the
one that called the method (``asyncio.wait_for`` on Python 3.11, ``gather``, ``create_task``): the
publish must happen there and leave the caller's context as it was. The asyncio ``PubSub`` hands
subscribers the original payload, with the CONSUMER span the sync one gives.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl

import pytest
import redis
import requests
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from redis import asyncio as aioredis

import tracekit
from tracekit import messaging

CORRELATION_ID = "async-hop-1"

# Ways of awaiting a command's coroutine in a task of its own.
ELSEWHERE: dict[str, Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]] = {
    "wait_for": lambda command: asyncio.wait_for(command, timeout=5),
    "gather": lambda command: asyncio.gather(command),
    "create_task": lambda command: asyncio.create_task(command),
}


@pytest.fixture
def named_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The channels these tests publish on are named for tracing."""
    monkeypatch.setenv("TRACEKIT_REDIS_PUBSUB_CHANNELS", "prices-*")


class _CallerState:
    """What the calling task sees once the command awaited elsewhere is done."""

    def __init__(self) -> None:
        self.publishing = messaging.publishing()
        self.span = trace.get_current_span()


def _run_as_request(redis_url: str, body: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
    """Run ``body(client)`` in an asyncio task that handles a request: inside a SERVER span,
    with a correlation ID."""

    async def request() -> Any:
        client = aioredis.Redis.from_url(redis_url)
        token = tracekit.correlation.set_correlation_id(CORRELATION_ID)
        tracer = trace.get_tracer("test")
        try:
            with tracer.start_as_current_span("request", kind=SpanKind.SERVER) as server:
                return server, await body(client)
        finally:
            tracekit.correlation.reset_correlation_id(token)
            await client.aclose()

    return asyncio.run(request())


def _assert_published_in_the_request(
    headers: list[dict[str, str]], server: trace.Span, spans: Any
) -> None:
    """Every message carried the context of a PRODUCER span that is a child of the request."""
    producers = {
        f"{s.context.span_id:016x}": s
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.PRODUCER
    }
    assert len(producers) == len(headers)
    for carried in headers:
        producer: ReadableSpan = producers[carried["traceparent"].split("-")[2]]
        assert producer.parent is not None
        assert producer.parent.span_id == server.get_span_context().span_id
        assert carried["x-correlation-id"] == CORRELATION_ID


def _assert_caller_as_it_was(after: _CallerState, server: Any) -> None:
    """No publish block left attached in the caller: not publishing, its request span current."""
    assert not after.publishing
    assert after.span.get_span_context().span_id == server.get_span_context().span_id


def _no_failed_detach(caplog: pytest.LogCaptureFixture) -> bool:
    return not any("Failed to detach" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("elsewhere", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_xadd_awaited_in_another_task_leaves_the_caller_as_it_was(
    redis_url, spans, caplog, elsewhere
) -> None:
    caplog.set_level(logging.ERROR)
    stream = f"async-{uuid.uuid4().hex[:8]}"

    async def publish_twice(client: aioredis.Redis) -> tuple[_CallerState, Any]:
        await elsewhere(client.xadd(stream, {"n": "1"}))
        after = _CallerState()
        await client.xadd(stream, {"n": "2"})  # a later publish of the same task
        entries = await client.xrange(stream)
        await client.delete(stream)
        return after, entries

    server, (after, entries) = _run_as_request(redis_url, publish_twice)

    _assert_caller_as_it_was(after, server)
    assert _no_failed_detach(caplog)
    assert [fields[b"n"] for _, fields in entries] == [b"1", b"2"]
    headers = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]
    _assert_published_in_the_request(headers, server, spans)
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert {s.attributes["messaging.message.id"] for s in producers} == {
        entry_id.decode() for entry_id, _ in entries
    }


@pytest.mark.usefixtures("named_channels")
@pytest.mark.parametrize("elsewhere", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_publish_awaited_in_another_task_leaves_the_caller_as_it_was(
    redis_url, spans, caplog, elsewhere
) -> None:
    caplog.set_level(logging.ERROR)
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    sync_client = redis.Redis.from_url(redis_url)  # kept: collecting it closes its connections
    raw = _raw_subscriber(sync_client, channel)

    async def publish_twice(client: aioredis.Redis) -> _CallerState:
        await elsewhere(client.publish(channel, b"first"))
        after = _CallerState()
        await client.publish(channel, b"second")  # a later publish of the same task
        return after

    server, after = _run_as_request(redis_url, publish_twice)
    envelopes = [_raw_payload(raw).split(b"\x1e", 3), _raw_payload(raw).split(b"\x1e", 3)]
    raw.close()

    _assert_caller_as_it_was(after, server)
    assert _no_failed_detach(caplog)
    assert [(mark, payload) for _, mark, _, payload in envelopes] == [
        (b"tracekit1", b"first"),
        (b"tracekit1", b"second"),
    ]
    headers = [dict(parse_qsl(carried.decode())) for _, _, carried, _ in envelopes]
    _assert_published_in_the_request(headers, server, spans)


def test_a_command_never_awaited_attaches_nothing(redis_url, spans) -> None:
    stream = f"async-{uuid.uuid4().hex[:8]}"

    async def call_without_awaiting(client: aioredis.Redis) -> tuple[_CallerState, Any]:
        pending = client.xadd(stream, {"n": "dropped"})
        after = _CallerState()
        pending.close()  # the caller changed its mind: nothing was sent
        await client.xadd(stream, {"n": "sent"})
        entries = await client.xrange(stream)
        await client.delete(stream)
        return after, entries

    server, (after, entries) = _run_as_request(redis_url, call_without_awaiting)

    _assert_caller_as_it_was(after, server)
    ((_, fields),) = entries
    assert fields[b"n"] == b"sent"
    _assert_published_in_the_request(
        [{k.decode(): v.decode() for k, v in fields.items()}], server, spans
    )


def test_xadd_in_an_asyncio_pipeline_is_traced_when_executed(redis_url, spans) -> None:
    """An asyncio pipeline queues XADD at the call: its span ends with the awaited execute(),
    with the entry's ID, and is a child of the request's span."""
    stream = f"async-piped-{uuid.uuid4().hex[:8]}"

    async def piped(client: aioredis.Redis) -> tuple[list[Any], int]:
        pipeline = client.pipeline()
        pipeline.xadd(stream, {"n": "1"})
        await asyncio.sleep(0.05)
        executed_at = time.time_ns()
        replies = await pipeline.execute()
        await client.delete(stream)
        return replies, executed_at

    server, ((entry_id,), executed_at) = _run_as_request(redis_url, piped)

    (sent,) = _kind(spans, SpanKind.PRODUCER)
    assert sent.attributes is not None and sent.end_time is not None
    assert sent.attributes["messaging.message.id"] == entry_id.decode()
    assert sent.end_time >= executed_at
    assert sent.parent is not None and sent.parent.span_id == server.get_span_context().span_id


def test_a_refused_xadd_in_an_asyncio_pipeline_fails_only_its_own_span(redis_url, spans) -> None:
    """The awaited execute() raises for the XADD Redis refused; the one it wrote succeeded."""
    stream, wrong_type = f"async-piped-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}"

    async def piped(client: aioredis.Redis) -> list[Any]:
        await client.set(wrong_type, "not a stream")
        pipeline = client.pipeline()
        pipeline.xadd(stream, {"n": "1"})
        pipeline.xadd(wrong_type, {"n": "2"})
        with pytest.raises(redis.ResponseError, match="Command # 2"):
            await pipeline.execute()
        written = await client.xrange(stream)
        await client.delete(stream, wrong_type)
        return written

    _, ((entry_id, _),) = _run_as_request(redis_url, piped)

    sent, refused = sorted(_kind(spans, SpanKind.PRODUCER), key=lambda s: s.start_time or 0)
    assert sent.attributes is not None and refused.attributes is not None
    assert sent.status.is_ok and sent.attributes["messaging.message.id"] == entry_id.decode()
    assert not refused.status.is_ok and refused.attributes["error.type"] == "ResponseError"


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def _kind(spans: Any, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind == kind]


async def _published_in_request(redis_url: str, channel: str, payload: bytes) -> None:
    """Publish ``payload`` with the asyncio client, as a request with a correlation ID would."""
    client = aioredis.Redis.from_url(redis_url)
    token = tracekit.correlation.set_correlation_id(CORRELATION_ID)
    try:
        await client.publish(channel, payload)
    finally:
        tracekit.correlation.reset_correlation_id(token)
        await client.aclose()


async def _next_message(pubsub: Any, read: str) -> Any:
    if read == "listen":
        async for message in pubsub.listen():
            return message
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is not None:
            return message
    raise AssertionError("no message within 10 s")


@pytest.mark.usefixtures("named_channels")
@pytest.mark.parametrize("read", ["get_message", "listen"])
def test_asyncio_subscriber_gets_the_original_payload(
    redis_url, protocol, spans, downstream, read
) -> None:
    channel = f"prices-{uuid.uuid4().hex[:8]}"

    async def subscribe_then_publish() -> tuple[Any, str | None, str | None]:
        client = aioredis.Redis.from_url(redis_url, protocol=protocol)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await _published_in_request(redis_url, channel, b'{"order": 42}')
        message = await _next_message(pubsub, read)
        handling = tracekit.correlation_id()
        requests.get(f"{downstream.url}/reprice")
        await pubsub.aclose()  # ends the message's span
        await client.aclose()
        return message["data"], handling, tracekit.correlation_id()

    data, handling, after = asyncio.run(subscribe_then_publish())

    assert data == b'{"order": 42}'
    assert (handling, after) == (CORRELATION_ID, None)
    assert downstream.requests[0]["x-correlation-id"] == CORRELATION_ID
    (sent,) = _kind(spans, SpanKind.PRODUCER)
    (consumer,) = _kind(spans, SpanKind.CONSUMER)
    (call,) = _kind(spans, SpanKind.CLIENT)
    assert consumer.name == f"process {channel}"
    assert consumer.parent is not None and consumer.parent.span_id == sent.context.span_id
    assert call.parent is not None and call.parent.span_id == consumer.context.span_id
    assert consumer.end_time is not None and call.end_time is not None
    assert call.end_time <= consumer.end_time


@pytest.mark.usefixtures("named_channels")
def test_an_asyncio_poll_that_finds_no_message_ends_the_last_ones_span(
    redis_url, protocol, spans
) -> None:
    """The asyncio subscriber polling ``get_message(timeout=...)``: the message's span stayed
    open, and its correlation ID current, through polls that found nothing."""
    channel = f"prices-{uuid.uuid4().hex[:8]}"

    async def read_then_poll() -> tuple[str | None, list[ReadableSpan]]:
        client = aioredis.Redis.from_url(redis_url, protocol=protocol)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await _published_in_request(redis_url, channel, b"price changed")
        await _next_message(pubsub, "get_message")
        assert await pubsub.get_message(timeout=0.3) is None  # nothing more came
        idle = tracekit.correlation_id(), _kind(spans, SpanKind.CONSUMER)
        await pubsub.aclose()
        await client.aclose()
        return idle

    current, consumers = asyncio.run(read_then_poll())
    assert current is None
    assert [c.attributes["correlation.id"] for c in consumers] == [CORRELATION_ID]


@pytest.mark.usefixtures("named_channels")
@pytest.mark.parametrize("asynchronous", [True, False], ids=["async-handler", "sync-handler"])
def test_asyncio_channel_handler_runs_inside_the_span(
    redis_url, protocol, spans, asynchronous
) -> None:
    channel = f"prices-{uuid.uuid4().hex[:8]}"
    received: list[tuple[Any, str | None]] = []

    def note(message: dict[str, Any]) -> None:
        received.append((message["data"], tracekit.correlation_id()))

    async def note_async(message: dict[str, Any]) -> None:
        note(message)

    async def subscribe_then_publish() -> str | None:
        client = aioredis.Redis.from_url(redis_url, protocol=protocol)
        pubsub = client.pubsub()
        await pubsub.subscribe(**{channel: note_async if asynchronous else note})
        await pubsub.get_message(timeout=1)
        await _published_in_request(redis_url, channel, b"\x00binary\xff")
        for _ in range(20):
            if received:
                break
            await pubsub.get_message(timeout=0.5)
        after = tracekit.correlation_id()
        await pubsub.aclose()
        await client.aclose()
        return after

    after = asyncio.run(subscribe_then_publish())

    assert received == [(b"\x00binary\xff", CORRELATION_ID)]
    assert after is None  # the span ended with the handler
    (sent,) = _kind(spans, SpanKind.PRODUCER)
    (consumer,) = _kind(spans, SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == sent.context.span_id
    assert consumer.attributes["correlation.id"] == CORRELATION_ID


@pytest.mark.usefixtures("named_channels")
def test_a_read_bounded_by_asyncio_timeout_keeps_the_message_current(redis_url, spans) -> None:
    """What redis.md tells a subscriber that bounds its wait: ``asyncio.timeout()`` reads in the
    subscriber's own task, so the code after it has the message's correlation ID (under
    ``asyncio.wait_for`` on Python 3.11 the read runs in a task of its own, and it has none)."""
    channel = f"prices-{uuid.uuid4().hex[:8]}"

    async def read_bounded() -> tuple[Any, str | None]:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)  # the subscribe confirmation
        await _published_in_request(redis_url, channel, b"price changed")
        async with asyncio.timeout(5):
            message = await pubsub.get_message(timeout=4)
        current = tracekit.correlation_id()
        await pubsub.aclose()
        await client.aclose()
        return message["data"] if message else None, current

    assert asyncio.run(read_bounded()) == (b"price changed", CORRELATION_ID)


@pytest.mark.usefixtures("named_channels")
def test_asyncio_messages_read_in_tasks_of_their_own(redis_url, spans, caplog) -> None:
    """Each read in a task of its own (``asyncio.wait_for`` does that on Python 3.11): a message's
    span starts there and ends in the next task, or at ``aclose()``, where the context it made
    current is not there to restore."""
    caplog.set_level(logging.ERROR)
    channel = f"prices-{uuid.uuid4().hex[:8]}"

    async def read_in_tasks() -> list[Any]:
        client = aioredis.Redis.from_url(redis_url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(channel)
        await pubsub.get_message(timeout=1)
        for payload in (b"first", b"second"):
            await _published_in_request(redis_url, channel, payload)
        received: list[Any] = []
        for _ in range(20):
            message = await asyncio.create_task(pubsub.get_message(timeout=0.5))
            if message is not None:
                received.append(message["data"])
            if len(received) == 2:
                break
        await pubsub.aclose()
        await client.aclose()
        return received

    assert asyncio.run(read_in_tasks()) == [b"first", b"second"]
    assert _no_failed_detach(caplog)
    producers = _kind(spans, SpanKind.PRODUCER)
    consumers = _kind(spans, SpanKind.CONSUMER)
    assert len(producers) == len(consumers) == 2
    assert {c.parent.span_id for c in consumers if c.parent} == {
        p.context.span_id for p in producers
    }


def _raw_subscriber(client: redis.Redis, channel: str) -> Any:
    """A sync subscriber that reads replies as they travelled (``parse_response``, no tracekit
    on the receiving side)."""
    subscriber = client.pubsub()
    subscriber.subscribe(channel)
    assert subscriber.parse_response(timeout=5)[0] == b"subscribe"
    return subscriber


def _raw_payload(subscriber: Any) -> bytes:
    reply = subscriber.parse_response(timeout=5)
    assert reply is not None and reply[0] == b"message"
    payload: bytes = reply[-1]
    return payload
