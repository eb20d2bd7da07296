"""Publisher confirms on pika's asynchronous adapters (real broker): the broker's ack, nack or
return of each message, which comes after ``basic_publish`` has returned, is on its PRODUCER
span, and no span waits for a confirm that cannot come any more."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest
from loopback import CuttableLink
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from pika.adapters.asyncio_connection import AsyncioConnection

from tracekit.instrumentation import pika as traced_pika

ADAPTERS = ["select", "asyncio"]


def _run(adapter: str, url: str, on_channel: Callable[[Any], None]) -> None:
    """Open a connection with ``adapter``, hand its first channel to ``on_channel`` and run the
    ioloop until the connection closes, or 5 s at most."""
    params = pika.URLParameters(url)

    def on_open(connection: Any) -> None:
        connection.channel(on_open_callback=on_channel)

    if adapter == "select":
        connection = pika.SelectConnection(
            params, on_open_callback=on_open, on_close_callback=lambda c, r: c.ioloop.stop()
        )
        connection.ioloop.call_later(5, connection.ioloop.stop)
        connection.ioloop.start()
        return
    loop = asyncio.new_event_loop()
    try:
        AsyncioConnection(
            params,
            on_open_callback=on_open,
            on_close_callback=lambda c, r: loop.stop(),
            custom_ioloop=loop,
        )
        loop.call_later(5, loop.stop)
        loop.run_forever()
    finally:
        loop.close()


def _producers(spans: Any) -> dict[str, ReadableSpan]:
    """The PRODUCER spans recorded, by their messages' IDs."""
    found = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    return {s.attributes["messaging.message.id"]: s for s in found}


def _publish(channel: Any, routing_key: str, message_id: str, **kwargs: Any) -> None:
    properties = pika.BasicProperties(message_id=message_id)
    channel.basic_publish("", routing_key, b"order", properties, **kwargs)


class _Confirms:
    """The app's own confirm callback: what the broker said of each delivery tag."""

    def __init__(self, expected: int, then: Callable[[], None] | None = None) -> None:
        self.said: dict[int, str] = {}
        self.expected, self.then = expected, then

    def __call__(self, frame: Any) -> None:
        method = frame.method
        tags = [method.delivery_tag]
        if method.multiple:
            tags = [t for t in range(1, method.delivery_tag + 1) if t not in self.said]
        for tag in tags:
            self.said[tag] = method.NAME
        if len(self.said) == self.expected and self.then is not None:
            self.then()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_brokers_ack_nack_or_return_is_on_each_messages_span(amqp_url, spans, adapter) -> None:
    """``confirm_delivery(callback)``: a queue at its ``x-max-length`` with ``reject-publish``
    nacks the second message, and a ``mandatory`` message no queue takes comes back. Their
    spans fail as a ``BlockingConnection``'s do (pika's ``NackError``, ``UnroutableError``);
    the acked one stays a success. Each span keeps the publish call's timing, and the app's
    own callbacks see every confirm and the return, as without tracekit."""
    full = f"tracekit-test-full-{uuid.uuid4().hex[:8]}"
    returned: list[str] = []
    published_by = [0]

    def on_channel(channel: Any) -> None:
        confirms.then = channel.connection.close
        channel.add_on_return_callback(lambda ch, m, p, b: returned.append(p.message_id))

        def on_select_ok(_: Any) -> None:
            _publish(channel, full, "acked")
            _publish(channel, full, "nacked")
            _publish(channel, "no-such-queue", "returned", mandatory=True)
            published_by[0] = time.time_ns()

        def on_declared(_: Any) -> None:
            channel.confirm_delivery(confirms, callback=on_select_ok)

        arguments = {"x-max-length": 1, "x-overflow": "reject-publish"}
        channel.queue_declare(full, exclusive=True, arguments=arguments, callback=on_declared)

    confirms = _Confirms(3)
    _run(adapter, amqp_url, on_channel)

    assert confirms.said == {1: "Basic.Ack", 2: "Basic.Nack", 3: "Basic.Ack"}
    assert returned == ["returned"]
    producers = _producers(spans)
    assert producers["acked"].status.status_code.name == "UNSET"
    nacked, unroutable = producers["nacked"], producers["returned"]
    assert nacked.status.description == "NackError: 0 message(s) NACKed"
    assert nacked.attributes["error.type"] == "NackError"
    assert unroutable.status.description == "UnroutableError: 1 unroutable message(s) returned"
    assert unroutable.attributes["error.type"] == "UnroutableError"
    for span in producers.values():
        assert span.end_time is not None and span.end_time <= published_by[0]
        assert "tracekit.delivery.outcome" not in span.attributes
    assert traced_pika._confirming == {}


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("closed_by", ["broker", "lost connection"])
def test_a_channel_closed_with_confirms_pending_fails_their_spans(
    amqp_url, spans, adapter, closed_by
) -> None:
    """No confirm comes for a message whose channel closes first: published to an exchange
    that is not there (the broker closes the channel), or sent as the connection drops. Its
    span is recorded then, failed with the reason (the app has to publish it again), its
    outcome unknown."""
    relay = CuttableLink(amqp_url)

    def on_channel(channel: Any) -> None:
        def on_select_ok(_: Any) -> None:
            if closed_by == "broker":
                channel.basic_publish("no-such-exchange", "orders", b"order", properties)
            else:
                channel.basic_publish("", "orders", b"order", properties)
                relay.cut()

        def on_closed(closed: Any, reason: Exception) -> None:
            if closed.connection.is_open:  # (closed by the broker: the connection is left)
                closed.connection.close()

        channel.add_on_close_callback(on_closed)
        channel.confirm_delivery(lambda frame: None, callback=on_select_ok)

    properties = pika.BasicProperties(message_id="pending")
    _run(adapter, relay.url, on_channel)

    pending = _producers(spans)["pending"]
    expected = "ChannelClosedByBroker" if closed_by == "broker" else "StreamLostError"
    assert pending.attributes["error.type"] == expected
    assert pending.attributes["tracekit.delivery.outcome"] == "unknown"
    if closed_by == "broker":
        assert "NOT_FOUND" in (pending.status.description or "")
    assert traced_pika._confirming == {}


def test_spans_past_the_bound_are_recorded_outcome_unknown(amqp_url, spans, monkeypatch) -> None:
    """A broker that does not confirm must not keep spans open without end: past the bound,
    the oldest is recorded at once, outcome unknown; the rest wait for their confirms."""
    monkeypatch.setattr(traced_pika, "_MOST_AWAITING_CONFIRM", 2)
    recorded_before_confirms: list[str] = []

    def on_channel(channel: Any) -> None:
        def on_select_ok(_: Any) -> None:
            for n in range(5):
                _publish(channel, "nowhere", f"m{n}")
            recorded_before_confirms.extend(sorted(_producers(spans)))

        channel.confirm_delivery(_Confirms(5, channel.connection.close), callback=on_select_ok)

    _run("select", amqp_url, on_channel)

    assert recorded_before_confirms == ["m0", "m1", "m2"]
    producers = _producers(spans)
    assert sorted(producers) == ["m0", "m1", "m2", "m3", "m4"]
    outcomes = [producers[f"m{n}"].attributes.get("tracekit.delivery.outcome") for n in range(5)]
    assert outcomes == ["unknown", "unknown", "unknown", None, None]
    assert traced_pika._confirming == {}


def test_uninstrumenting_records_the_spans_waiting_for_confirms(
    amqp_url, spans, instrumented
) -> None:
    """``tracekit.shutdown()`` with confirms still to come: their spans are recorded then,
    outcome unknown, and tracekit keeps nothing of the channel."""
    instrumentor = instrumented["PikaInstrumentor"]
    recorded: list[str] = []

    def on_channel(channel: Any) -> None:
        def on_select_ok(_: Any) -> None:
            _publish(channel, "nowhere", "in flight")
            instrumentor.uninstrument()
            recorded.extend(_producers(spans))
            instrumentor.instrument()

        channel.confirm_delivery(_Confirms(1, channel.connection.close), callback=on_select_ok)

    _run("select", amqp_url, on_channel)

    assert recorded == ["in flight"]
    in_flight = _producers(spans)["in flight"]
    assert in_flight.attributes["tracekit.delivery.outcome"] == "unknown"
    assert traced_pika._confirming == {}


def test_confirms_asked_for_behind_another_call_are_not_followed(amqp_url, spans) -> None:
    """``confirm_delivery`` while a ``queue_declare`` awaits its answer: pika sends
    ``Confirm.Select`` only after it, so the messages published meanwhile go before it and the
    broker confirms none of them (its first ack is for the message published later). tracekit
    cannot number them as the broker does: no span waits for a confirm, and none is recorded
    with another message's."""
    recorded_at_publish: list[str] = []

    def on_channel(channel: Any) -> None:
        def later() -> None:
            _publish(channel, "nowhere", "after select")
            recorded_at_publish.extend(sorted(_producers(spans)))

        confirms = _Confirms(1, channel.connection.close)
        channel.queue_declare("", exclusive=True, callback=lambda frame: None)
        channel.confirm_delivery(confirms, callback=lambda frame: later())
        _publish(channel, "nowhere", "before select 1")
        _publish(channel, "nowhere", "before select 2")

    _run("select", amqp_url, on_channel)

    assert recorded_at_publish == ["after select", "before select 1", "before select 2"]
    for span in _producers(spans).values():
        assert "tracekit.delivery.outcome" not in span.attributes
    assert traced_pika._confirming == {}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_confirm_delivery_asked_twice_calls_the_apps_callback_once_per_confirm(
    amqp_url, spans, adapter
) -> None:
    """pika registers an ack/nack callback it already has only once: an app that turns confirm
    mode on twice with the same callback (as on a reconnect path) sees each confirm once, as
    without tracekit, and its spans are recorded when the broker confirms them."""
    seen: list[int] = []

    def on_channel(channel: Any) -> None:
        def on_confirm(frame: Any) -> None:
            seen.append(frame.method.delivery_tag)
            if len(seen) == 2:  # (a second call of each confirm would come at once)
                channel.connection.ioloop.call_later(0.3, channel.connection.close)

        def on_second_select_ok(_: Any) -> None:
            _publish(channel, "nowhere", "first")
            _publish(channel, "nowhere", "second")

        channel.confirm_delivery(
            on_confirm, callback=lambda _: channel.confirm_delivery(on_confirm, on_second_select_ok)
        )

    _run(adapter, amqp_url, on_channel)

    assert seen == [1, 2]
    producers = _producers(spans)
    assert sorted(producers) == ["first", "second"]
    for span in producers.values():
        assert "tracekit.delivery.outcome" not in span.attributes
    assert traced_pika._confirming == {}
