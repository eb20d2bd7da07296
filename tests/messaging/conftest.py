"""Real brokers and real HTTP services for the queue-hop tests.

RabbitMQ: the server at ``TRACEKIT_TEST_AMQP_URL`` (default amqp://guest:guest@127.0.0.1:5672/;
``.ci/run`` starts ``rabbitmq-server``). Redis: a private ``redis-server`` per session on a free
port. Outside CI an unreachable broker skips its tests; with ``CI=true`` it fails them.

HTTP: ``downstream`` is a real werkzeug server that records the headers each request carried (the
consumer's own outgoing call lands there); ``entry_service`` serves a WSGI app behind tracekit's
middleware, where the request that starts the whole path arrives.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conditions import need
from loopback import serving_werkzeug
from redis_server import running_redis
from werkzeug.wrappers import Request, Response

from tracekit.instrumentation.aio_pika import AioPikaInstrumentor
from tracekit.instrumentation.pika import PikaInstrumentor
from tracekit.instrumentation.redis import RedisInstrumentor
from tracekit.instrumentation.requests import RequestsInstrumentor
from tracekit.wsgi import TracekitMiddleware

AMQP_URL = os.environ.get("TRACEKIT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of a reachable RabbitMQ."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except Exception:
        need(False, f"RabbitMQ at {AMQP_URL}")
    return AMQP_URL


@pytest.fixture
def queue_name(amqp_url: str) -> Iterator[str]:
    """A fresh queue on the broker, deleted afterwards."""
    import pika

    name = f"tracekit-test-{uuid.uuid4().hex[:10]}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(name)
    yield name
    connection.channel().queue_delete(name)
    connection.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server for this session (no persistence)."""
    with running_redis() as url:
        yield url


@pytest.fixture(scope="module", autouse=True)
def instrumented() -> Iterator[dict[str, Any]]:
    """requests, pika, aio-pika and redis instrumented by tracekit for this module's tests."""
    instrumentors = [
        RequestsInstrumentor(),
        PikaInstrumentor(),
        AioPikaInstrumentor(),
        RedisInstrumentor(),
    ]
    for instrumentor in instrumentors:
        instrumentor.instrument()
    yield {type(i).__name__: i for i in instrumentors}
    for instrumentor in instrumentors:
        instrumentor.uninstrument()


class Downstream:
    """A real HTTP service that records the headers of every request it receives."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.url = ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests.append({k.lower(): v for k, v in request.headers.items()})
        return Response("ok")(environ, start_response)


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    """The service a consumer's handler calls over HTTP."""
    service = Downstream()
    with serving_werkzeug(service) as url:
        service.url = url
        yield service


@pytest.fixture
def entry_service() -> Callable[[Callable[[Request], None]], Any]:
    """Serve ``handler(request)`` behind tracekit's WSGI middleware: ``with entry_service(h)``."""

    @contextmanager
    def start(handler: Callable[[Request], None]) -> Iterator[str]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            handler(Request(environ))
            return Response("accepted", status=202)(environ, start_response)

        with serving_werkzeug(TracekitMiddleware(app)) as url:
            yield url

    return start


@pytest.fixture
def reachable() -> Callable[[str, Iterable[Any]], set[int]]:
    """``reachable(correlation_id, spans)``: the span ids a user can get to from that ID."""
    return reachable_from


def reachable_from(correlation_id: str, spans: Iterable[Any]) -> set[int]:
    """Span ids reachable from spans stamped with ``correlation_id`` via parents and links."""
    spans = list(spans)
    edges: dict[int, set[int]] = {s.context.span_id: set() for s in spans}
    for s in spans:
        neighbours = [link.context.span_id for link in s.links]
        if s.parent is not None:
            neighbours.append(s.parent.span_id)
        for other in neighbours:
            edges[s.context.span_id].add(other)
            edges.setdefault(other, set()).add(s.context.span_id)
    todo = [
        s.context.span_id for s in spans if s.attributes.get("correlation.id") == correlation_id
    ]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(edges.get(current, ()))
    return seen
