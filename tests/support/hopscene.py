"""A queue hop between two HTTP services on loopback, shared by the Kafka, SQS and Celery tests.

``start_scene(publish)`` starts two real WSGI servers (werkzeug threads):

- the entry service, behind tracekit's WSGI middleware: ``POST /order`` calls ``publish()`` (the
  test's producer code) inside the request, so the message inherits the request's correlation ID
  and trace;
- a downstream service without tracekit, which records the headers of every request it gets: the
  consumer's handler calls it with requests (instrumented by tracekit), so the test sees on the
  wire what the consumer really sent.

``check_hop`` asserts what every queue integration must prove.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests
from loopback import serving_werkzeug
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from werkzeug.wrappers import Request, Response

from tracekit import semconv
from tracekit.wsgi import TracekitMiddleware


@dataclass
class Scene:
    """The two services of a hop."""

    entry_url: str
    downstream_url: str
    downstream_seen: list[dict[str, str]] = field(default_factory=list)

    def call_entry(self, correlation_id: str) -> str:
        """POST /order with an incoming correlation ID (no tracekit in this client)."""
        request = urllib.request.Request(
            f"{self.entry_url}/order", data=b"{}", headers={"X-Correlation-ID": correlation_id}
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            assert response.status == 200, response.read()
            return str(response.headers["X-Correlation-ID"])

    def call_downstream(self) -> None:
        """What a consumer's handler does: an outgoing HTTP call (traced by tracekit)."""
        requests.get(f"{self.downstream_url}/work", timeout=10).raise_for_status()


@contextmanager
def start_scene(publish: Callable[[], None]) -> Iterator[Scene]:
    """Run the entry and downstream services until the block ends."""
    seen: list[dict[str, str]] = []

    @Request.application  # type: ignore[arg-type]
    def downstream(request: Request) -> Response:
        seen.append({name.lower(): value for name, value in request.headers.items()})
        return Response("ok")

    @Request.application  # type: ignore[arg-type]
    def entry(request: Request) -> Response:
        publish()
        return Response("queued")

    with (
        serving_werkzeug(downstream) as downstream_url,
        serving_werkzeug(TracekitMiddleware(entry)) as entry_url,
    ):
        yield Scene(entry_url, downstream_url, seen)


def one(spans: list[ReadableSpan], kind: SpanKind, name: str | None = None) -> ReadableSpan:
    """The single finished span of ``kind`` (and ``name``)."""
    found = [s for s in spans if s.kind == kind and (name is None or s.name == name)]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def check_hop(
    spans: list[ReadableSpan],
    scene: Scene,
    correlation_id: str,
    consumer: ReadableSpan,
    delay_s: float,
) -> None:
    """One correlation ID entry -> queue -> consumer's own HTTP call; parentage; handler; wait
    (bounded by the producer and consumer spans' times: every transport here has the publish
    time tracekit stamps inside the PRODUCER span)."""
    server = one(spans, SpanKind.SERVER)
    producer = one(spans, SpanKind.PRODUCER)
    client = one(
        [s for s in spans if semconv.HTTP_REQUEST_METHOD in (s.attributes or {})], SpanKind.CLIENT
    )
    assert [seen.get("x-correlation-id") for seen in scene.downstream_seen] == [correlation_id]
    for span in (server, producer, consumer, client):
        assert span.attributes is not None
        assert span.attributes[semconv.CORRELATION_ID] == correlation_id, span.name
    assert producer.parent is not None and producer.parent.span_id == server.context.span_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == server.context.trace_id
    # The handler's work happens inside the consumer span.
    assert client.parent is not None and client.parent.span_id == consumer.context.span_id
    assert consumer.start_time is not None and client.start_time is not None
    assert consumer.start_time <= client.start_time
    assert client.end_time is not None and consumer.end_time is not None
    assert client.end_time <= consumer.end_time
    traceparent = scene.downstream_seen[0]["traceparent"]
    assert traceparent.split("-")[1] == f"{server.context.trace_id:032x}"
    check_wait_within_spans(consumer, [producer], delay_s)


def check_batch(consumer: ReadableSpan, producers: list[ReadableSpan], delay_s: float) -> None:
    """One CONSUMER span for a batch: its size, a link to every producer, the queue wait."""
    assert consumer.attributes is not None
    assert consumer.attributes[semconv.MESSAGING_BATCH_MESSAGE_COUNT] == len(producers)
    linked = {link.context.span_id for link in consumer.links}
    assert linked == {p.context.span_id for p in producers}
    check_wait_within_spans(consumer, producers, delay_s)


def check_wait_within_spans(
    consumer: ReadableSpan, producers: list[ReadableSpan], delay_s: float
) -> None:
    """The queue wait (a batch's is its longest, the first publish's) covers the delay the test
    introduced, and lies between the consumer span's start less the first send's start and
    less the first send's end (tracekit stamps the publish time inside the send's span).

    Bounded by the spans' own clock, not by a fixed slack: how long a consumer takes to fetch
    after starting (a fetch round of half a second or more on a loaded machine) is the
    broker's and the machine's, and all of it is queue wait."""
    first_start = min(p.start_time for p in producers if p.start_time is not None)
    first_end = min(p.end_time for p in producers if p.end_time is not None)
    check_wait_within(consumer, first_start, first_end, delay_s)


def check_wait_within(
    consumer: ReadableSpan, published_from_ns: int, published_by_ns: int, delay_s: float
) -> None:
    """The queue wait covers the delay the test introduced, and is the consumer span's start
    less a publish time between ``published_from_ns`` and ``published_by_ns`` (unix ns)."""
    assert consumer.attributes is not None and consumer.start_time is not None
    wait_ms = consumer.attributes[semconv.QUEUE_WAIT_MS]
    assert isinstance(wait_ms, float | int)
    longest_ms = round((consumer.start_time - published_from_ns) / 1e6, 3)  # as the attribute
    shortest_ms = round((consumer.start_time - published_by_ns) / 1e6, 3)
    assert delay_s * 1000 <= wait_ms, wait_ms
    assert shortest_ms <= wait_ms <= longest_ms, (shortest_ms, wait_ms, longest_ms)


def check_failure_past_the_bound(finished: list[ReadableSpan], topic: str) -> ReadableSpan:
    """Two sends with room for one awaiting its outcome, both failed: the oldest was recorded
    outcome unknown, the second failed; the first's failure, reported later, is a failed
    ``delivery_report`` span under it (returned)."""
    sent = [s for s in finished if s.kind == SpanKind.PRODUCER]
    first, second = sorted(sent, key=lambda s: s.start_time or 0)
    assert (first.attributes or {})[semconv.DELIVERY_OUTCOME] == "unknown"
    assert second.status.status_code is StatusCode.ERROR
    (late,) = [s for s in finished if s.kind == SpanKind.CLIENT]
    assert late.name == f"delivery_report {topic}"
    assert late.parent is not None and late.parent.span_id == first.context.span_id
    assert late.status.status_code is StatusCode.ERROR
    return late
