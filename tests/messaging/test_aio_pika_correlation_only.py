"""aio-pika in correlation-only mode (real broker): the IDs travel, nothing else is made or kept.

This mode publishes and consumes on a path of its own (no span, no metrics): what a consumer
receives and what the handler sees must be what the full path gives, less the trace.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest

import tracekit
from tracekit import correlation, messaging

STALE_TRACEPARENT = f"00-{1:032x}-{1:016x}-01"
CALLERS_HEADERS = {"X-Correlation-ID": "from-the-app", "Traceparent": STALE_TRACEPARENT, "app": "o"}


@pytest.fixture(autouse=True)
def correlation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")


def _run(amqp_url: str, work: Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]) -> Any:
    async def connected() -> Any:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            return await work(await connection.channel())

    return asyncio.run(connected())


def _publish_as(channel: Any, queue: str, message: aio_pika.Message, *cids: str | None) -> Any:
    async def publish() -> None:
        for cid in cids:
            token = correlation.set_correlation_id(cid) if cid is not None else None
            try:
                await channel.default_exchange.publish(message, routing_key=queue)
            finally:
                if token is not None:
                    correlation.reset_correlation_id(token)
        assert not messaging.publishing()

    return publish()


def _received(amqp_url: str, queue: str, count: int) -> list[dict[str, Any]]:
    """What each handler call saw: the message, the current ID, the delivery's queue wait."""

    async def consume(channel: Any) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        done = asyncio.Event()

        async def on_message(message: Any) -> None:
            delivery = messaging.current_delivery()
            seen.append(
                {
                    "message": message,
                    "id": tracekit.correlation_id(),
                    "waited": delivery.queue_wait_ms if delivery is not None else None,
                    "publishing": messaging.publishing(),
                }
            )
            if len(seen) == count:
                done.set()

        declared = await channel.declare_queue(queue)
        tag = await declared.consume(on_message, no_ack=True)
        await asyncio.wait_for(done.wait(), 10)
        await declared.cancel(tag)
        assert tracekit.correlation_id() is None and messaging.current_delivery() is None
        return seen

    result: list[dict[str, Any]] = _run(amqp_url, consume)
    return result


def test_a_hop_carries_the_id_with_the_callers_headers_and_no_stale_trace(
    amqp_url: str, queue_name: str, spans: Any
) -> None:
    """One message object published twice, with the app's own headers (an ID in other
    capitals, a traceparent relayed from elsewhere): each message carries its own ID once,
    baggage and publish time, and the app's message and headers are never written to."""
    shared = aio_pika.Message(b"x", headers=dict(CALLERS_HEADERS))
    callers_headers = shared.headers
    _run(amqp_url, lambda ch: _publish_as(ch, queue_name, shared, "request-A", "request-B"))

    first, second = _received(amqp_url, queue_name, 2)
    assert shared.headers is callers_headers and callers_headers == CALLERS_HEADERS
    for seen, cid in ((first, "request-A"), (second, "request-B")):
        headers = seen["message"].headers
        assert sorted(headers) == ["app", "baggage", "tracekit-publish-time", "x-correlation-id"]
        assert headers["x-correlation-id"] == cid == seen["id"]
        assert headers["baggage"] == f"correlation.id={cid}"
        assert headers["tracekit-publish-time"].isdigit()
        assert seen["waited"] is not None and seen["waited"] >= 0
        assert seen["publishing"] is False
    assert spans.get_finished_spans() == ()


def test_the_message_sent_has_every_property_the_caller_gave(
    amqp_url: str, queue_name: str
) -> None:
    """tracekit sends a copy of the caller's message with headers of its own: the copy keeps
    every property, and the caller's message stays as it was (unlocked, usable again)."""
    stamp = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)
    message = aio_pika.Message(
        b'{"order": 1}', headers={"app": "o"}, content_type="application/json",
        content_encoding="utf-8", delivery_mode=aio_pika.DeliveryMode.PERSISTENT, priority=3,
        correlation_id="rpc-9", reply_to="replies", expiration=60, message_id="m-1",
        timestamp=stamp, type="order.created", app_id="orders",
    )  # fmt: skip
    _run(amqp_url, lambda ch: _publish_as(ch, queue_name, message, "request-P"))

    (seen,) = _received(amqp_url, queue_name, 1)
    got = seen["message"]
    assert got.body == b'{"order": 1}'
    assert (got.content_type, got.content_encoding) == ("application/json", "utf-8")
    assert (got.delivery_mode, got.priority) == (aio_pika.DeliveryMode.PERSISTENT, 3)
    assert (got.correlation_id, got.reply_to, got.message_id) == ("rpc-9", "replies", "m-1")
    assert (got.type, got.app_id, got.expiration) == ("order.created", "orders", 60)
    assert got.timestamp == stamp
    assert got.headers["app"] == "o" and got.headers["x-correlation-id"] == "request-P"
    assert message.headers == {"app": "o"} and not message.locked


def test_a_message_published_outside_a_request_starts_an_id_of_its_own(
    amqp_url: str, queue_name: str, spans: Any
) -> None:
    _run(amqp_url, lambda ch: _publish_as(ch, queue_name, aio_pika.Message(b"x"), None))

    (seen,) = _received(amqp_url, queue_name, 1)
    headers = seen["message"].headers
    assert sorted(headers) == ["baggage", "tracekit-publish-time", "x-correlation-id"]
    assert correlation.is_valid(seen["id"]) and headers["x-correlation-id"] == seen["id"]
    assert spans.get_finished_spans() == ()


def test_a_message_without_an_id_in_its_headers_takes_its_correlation_property(
    amqp_url: str, queue_name: str
) -> None:
    """Published outside any request (no ID in the headers), with AMQP's correlation_id set, as
    an RPC client does: the handler runs with that ID."""
    message = aio_pika.Message(b"x", correlation_id="rpc-call-7")
    _run(amqp_url, lambda ch: _publish_as(ch, queue_name, message, None))

    (seen,) = _received(amqp_url, queue_name, 1)
    assert "x-correlation-id" not in seen["message"].headers
    assert seen["id"] == "rpc-call-7"


def test_a_publish_inside_the_callers_own_block_carries_what_the_block_wrote(
    amqp_url: str, queue_name: str
) -> None:
    """An app that opens ``messaging.publish`` itself around aio-pika's publish: the headers it
    wrote go out once, not written again."""

    async def publish(channel: Any) -> None:
        message = aio_pika.Message(b"x")
        token = correlation.set_correlation_id("from-the-block")
        try:
            with messaging.publish(message.headers, system="rabbitmq", destination=queue_name):
                written = dict(message.headers)
                await channel.default_exchange.publish(message, routing_key=queue_name)
        finally:
            correlation.reset_correlation_id(token)
        assert written["x-correlation-id"] == "from-the-block"

    _run(amqp_url, publish)
    (seen,) = _received(amqp_url, queue_name, 1)
    headers = seen["message"].headers
    assert headers["x-correlation-id"] == "from-the-block" == seen["id"]
    assert sorted(headers) == ["baggage", "tracekit-publish-time", "x-correlation-id"]


class _Handler:
    """A callable object with an async ``__call__``: not a coroutine function itself."""

    def __init__(self, seen: list[str | None]) -> None:
        self.seen = seen

    async def __call__(self, message: Any) -> None:
        self.seen.append(tracekit.correlation_id())


def test_every_kind_of_callback_runs_with_its_messages_id(amqp_url: str, queue_name: str) -> None:
    """A coroutine function, a callable object with an async ``__call__`` and a plain function
    (deprecated by aio-pika, still run): each handles its message with the message's ID, and
    what a handler raises leaves nothing of that message current."""
    seen: list[str | None] = []

    def plain(message: Any) -> None:
        seen.append(tracekit.correlation_id())

    async def failing(message: Any) -> None:
        seen.append(tracekit.correlation_id())
        raise RuntimeError("handler failed")

    async def hop(channel: Any) -> None:
        queue = await channel.declare_queue(queue_name)
        handlers = (("by-coro", failing), ("by-object", _Handler(seen)), ("by-plain", plain))
        for handled, (cid, handler) in enumerate(handlers, 1):
            token = correlation.set_correlation_id(cid)
            await channel.default_exchange.publish(aio_pika.Message(b"x"), routing_key=queue_name)
            correlation.reset_correlation_id(token)
            tag = await queue.consume(handler, no_ack=True)
            while len(seen) < handled:
                await asyncio.sleep(0.01)
            await queue.cancel(tag)
        assert tracekit.correlation_id() is None and messaging.current_delivery() is None

    _run(amqp_url, lambda ch: asyncio.wait_for(hop(ch), 10))
    assert seen == ["by-coro", "by-object", "by-plain"]
