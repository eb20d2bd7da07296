"""pika in correlation-only mode (real broker): the IDs travel, nothing else is made or kept.

This mode publishes and consumes on a path of its own (no span, no metrics): what a consumer
receives and what the handler sees must be what the full path gives, less the trace.
"""

from __future__ import annotations

from typing import Any

import pika
import pytest

import tracekit
from tracekit import correlation, messaging

STALE_TRACEPARENT = f"00-{1:032x}-{1:016x}-01"


@pytest.fixture(autouse=True)
def correlation_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEKIT_MODE", "correlation")


def _received(amqp_url: str, queue: str, count: int) -> list[dict[str, Any]]:
    """What each handler call saw: the headers, the current ID, the delivery, the ID after."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    seen: list[dict[str, Any]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        delivery = messaging.current_delivery()
        seen.append(
            {
                "headers": properties.headers,
                "id": tracekit.correlation_id(),
                "waited": delivery.queue_wait_ms if delivery is not None else None,
                "publishing": messaging.publishing(),
            }
        )

    channel.basic_consume(queue, on_message, auto_ack=True)
    while len(seen) < count:
        connection.process_data_events(time_limit=2)
    assert tracekit.correlation_id() is None and messaging.current_delivery() is None
    connection.close()
    return seen


def test_a_hop_carries_the_id_with_the_callers_headers_and_no_stale_trace(
    amqp_url: str, queue_name: str, spans: Any
) -> None:
    """One properties object used for two messages, with the app's own headers (an ID in other
    capitals, a traceparent relayed from elsewhere): each message carries its own ID once,
    baggage and publish time, and the app's object is never written to."""
    shared = pika.BasicProperties(
        headers={"X-Correlation-ID": "from-the-app", "Traceparent": STALE_TRACEPARENT, "app": "o"}
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for cid in ("request-A", "request-B"):
        token = correlation.set_correlation_id(cid)
        try:
            channel.basic_publish("", queue_name, b"x", shared)
        finally:
            correlation.reset_correlation_id(token)
    assert not messaging.publishing()
    connection.close()

    first, second = _received(amqp_url, queue_name, 2)
    assert shared.headers == {
        "X-Correlation-ID": "from-the-app", "Traceparent": STALE_TRACEPARENT, "app": "o"
    }  # fmt: skip
    for message, cid in ((first, "request-A"), (second, "request-B")):
        headers = message["headers"]
        assert sorted(headers) == ["app", "baggage", "tracekit-publish-time", "x-correlation-id"]
        assert headers["x-correlation-id"] == cid == message["id"]
        assert headers["baggage"] == f"correlation.id={cid}"
        assert headers["tracekit-publish-time"].isdigit()
        assert message["waited"] is not None and message["waited"] >= 0
        assert message["publishing"] is False
    assert spans.get_finished_spans() == ()


def test_a_message_published_outside_a_request_starts_an_id_of_its_own(
    amqp_url: str, queue_name: str, spans: Any
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().basic_publish("", queue_name, b"x")
    connection.close()

    (message,) = _received(amqp_url, queue_name, 1)
    headers = message["headers"]
    assert sorted(headers) == ["baggage", "tracekit-publish-time", "x-correlation-id"]
    assert correlation.is_valid(message["id"]) and headers["x-correlation-id"] == message["id"]
    assert headers["baggage"] == f"correlation.id={message['id']}"
    assert spans.get_finished_spans() == ()


def test_a_message_without_an_id_in_its_headers_takes_its_correlation_property(
    amqp_url: str, queue_name: str, spans: Any
) -> None:
    """Published outside any request (no ID in the headers), with AMQP's correlation_id set, as
    an RPC client does: the handler runs with that ID."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    properties = pika.BasicProperties(correlation_id="rpc-call-7")
    connection.channel().basic_publish("", queue_name, b"x", properties)
    connection.close()

    (message,) = _received(amqp_url, queue_name, 1)
    assert "x-correlation-id" not in message["headers"]
    assert message["id"] == "rpc-call-7"
