"""A handler stopped with SIGTERM while it waits on a call out: an HTTP request to a server that
has not answered yet, a publish to a broker that holds it.

SIGTERM's default action ends the process there. tracekit records the handler's span, failed,
and the span of the call it was stuck in, failed too: the path shows what it was waiting on.
"""

from __future__ import annotations

import importlib.util
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conditions import need, wait_for
from loopback import serving_werkzeug
from stopping import Service

from tracekit.records import SpanRecord

HANDLER_CUT = "HandlerInterrupted: SIGTERM ended the process before the handler returned"
CALL_CUT = "HandlerInterrupted: SIGTERM ended the process before the call returned"

HANDLER = """
    import sys, tracekit
    from tracekit import messaging

    tracekit.init("consumer")
    {client}

    with messaging.consume({{}}, system="rabbitmq", destination="orders"):
        call(sys.argv[1])
"""

CLIENTS = {
    "requests": """
    import requests

    def call(url):
        requests.get(url, timeout=60)
    """,
    "httpx": """
    import httpx

    def call(url):
        httpx.get(url, timeout=60)
    """,
    "urllib3": """
    import urllib3

    def call(url):
        urllib3.PoolManager().request("GET", url, timeout=60)
    """,
    "aiohttp": """
    import asyncio, aiohttp

    async def get(url):
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            await response.read()

    def call(url):
        asyncio.run(get(url))
    """,
}


class StuckServer:
    """A real HTTP server whose answers wait until the test is over."""

    def __init__(self) -> None:
        self.asked, self.over = threading.Event(), threading.Event()

    def __call__(self, environ: dict[str, object], start_response: Any) -> list[bytes]:
        self.asked.set()
        self.over.wait(60)
        start_response("200 OK", [])
        return [b"ok"]


@pytest.fixture
def stuck() -> Iterator[tuple[str, threading.Event]]:
    """The URL of a stuck server, and what is set once a request reached it."""
    server = StuckServer()
    with serving_werkzeug(server) as url:
        yield f"{url}/inventory/42", server.asked
        server.over.set()


def _interrupted(spans: list[SpanRecord], kind: str) -> SpanRecord:
    [span] = [s for s in spans if s.kind == kind]
    assert span.status == "ERROR"
    return span


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_call_a_handler_waits_on_as_sigterm_lands_keeps_its_span(
    service: Service, stuck: tuple[str, threading.Event], client: str
) -> None:
    url, asked = stuck
    service.write("consumer.py", HANDLER.format(client=CLIENTS[client]))
    service.start("consumer.py", url)
    assert asked.wait(60), service.output()

    assert service.terminate() == -signal.SIGTERM, service.output()
    spans = service.spans()
    handler, call = _interrupted(spans, "CONSUMER"), _interrupted(spans, "CLIENT")
    assert handler.status_message == HANDLER_CUT
    assert (call.name, call.status_message) == ("GET", CALL_CUT)
    assert call.attributes["url.full"].endswith("/inventory/42")
    assert call.parent_span_id == handler.span_id
    assert call.end_unix_nano == handler.end_unix_nano


PUBLISHER = """
    import sys, redis, tracekit
    from tracekit import messaging

    tracekit.init("consumer")
    shipments = redis.Redis.from_url(sys.argv[1])

    with messaging.consume({}, system="rabbitmq", destination="orders"):
        shipments.xadd("shipments", {"order": "42"})
"""


def test_a_publish_a_handler_waits_on_as_sigterm_lands_keeps_its_span(
    service: Service, redis_url: str
) -> None:
    import redis

    broker = redis.Redis.from_url(redis_url)
    broker.client_pause(60_000, all=False)  # writes wait, as during a failover
    try:
        service.write("consumer.py", PUBLISHER)
        service.start("consumer.py", redis_url)
        wait_for(lambda: _waiting_on(broker, "xadd"), 60, "the XADD held by the broker")

        assert service.terminate() == -signal.SIGTERM, service.output()
    finally:
        broker.client_unpause()
    spans = service.spans()
    handler, send = _interrupted(spans, "CONSUMER"), _interrupted(spans, "PRODUCER")
    assert handler.status_message == HANDLER_CUT
    assert (send.name, send.status_message) == ("send shipments", CALL_CUT)
    assert send.parent_span_id == handler.span_id


def _waiting_on(broker: Any, command: str) -> bool:
    return any(c["cmd"] == command and "b" in c["flags"] for c in broker.client_list())


HANDED_OVER = """
    import time, tracekit
    from tracekit import messaging

    tracekit.init("consumer")
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})  # a broker down
    with messaging.consume({}, system="rabbitmq", destination="orders"):
        producer.produce("shipments", b"order-42")
        print("handed over", flush=True)
        time.sleep(60)
"""


def test_a_send_awaiting_its_delivery_report_as_sigterm_lands_has_an_unknown_outcome(
    service: Service,
) -> None:
    """The producer took the message: the call returned, and whether the broker got it is
    not known. Recorded as every send still waiting at a stop is, not as a call cut short."""
    need(importlib.util.find_spec("confluent_kafka") is not None, "confluent-kafka")
    service.write("consumer.py", HANDED_OVER)
    service.start("consumer.py")
    service.wait_output("handed over")

    assert service.terminate() == -signal.SIGTERM, service.output()
    spans = service.spans()
    assert _interrupted(spans, "CONSUMER").status_message == HANDLER_CUT
    [send] = [s for s in spans if s.kind == "PRODUCER"]
    assert (send.name, send.status) == ("send shipments", "UNSET")
    assert send.attributes["tracekit.delivery.outcome"] == "unknown"
