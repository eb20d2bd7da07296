"""A small deployment of real instrumented services on loopback, exporting into a real store.

storefront (ASGI: Starlette under uvicorn, tracekit's ASGI middleware) calls orders (WSGI: Flask
under werkzeug, ``tracekit.flask.init_app``) with requests. orders publishes two messages with
``tracekit.messaging.publish`` onto in-process queues (``queue.Queue``: tracekit's messaging
primitives are transport-neutral; broker transports have their own tests in tests/messaging):
"orders.audit", taken by an audit worker as a batch (a new trace, linked to the message), and
"orders.created", taken by a fulfilment worker with ``messaging.consume``, which calls inventory
(ASGI) with requests; inventory logs one line.

Each service has its own ``TracerProvider`` (its own ``service.name``) exporting through
``StoreSpanExporter`` into one ``tracekit.store.Store``, as separate processes with
``TRACEKIT_EXPORTER=store`` would. OpenTelemetry allows one global provider per process and
tracekit's HTTP client instrumentation creates its CLIENT spans there (tests/conftest.py installs
it once). A process in a real deployment would own those CLIENT spans, so ``ClientSpanRouter``,
added to the global provider, hands each CLIENT span to the exporter of the service whose span
was current when the call was made, with that service's resource.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import flask
import requests
from loopback import start_uvicorn, start_werkzeug
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import tracekit.flask
from tracekit import asgi, instrumentation, messaging
from tracekit._runtime.setup import CorrelationSpanProcessor
from tracekit.logs import LogExportHandler
from tracekit.store import Store
from tracekit.store.exporter import StoreLogExporter, StoreSpanExporter

SERVICES = ("storefront", "orders", "audit", "fulfilment", "inventory")
HOST = "golden-host"  # one machine, one clock: the engine must not "fix" any skew
SYSTEM = "inproc"


class ClientSpanRouter(SpanProcessor):
    """Exports global-provider spans as part of the service whose span was current at start."""

    def __init__(self) -> None:
        self.services: dict[int, tuple[Resource, StoreSpanExporter]] = {}
        self.owner: dict[int, tuple[Resource, StoreSpanExporter]] = {}
        self.active = True

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        parent = trace.get_current_span(parent_context)
        resource = getattr(parent, "resource", None)
        if self.active and resource is not None and id(resource) in self.services:
            self.owner[span.context.span_id] = self.services[id(resource)]

    def on_end(self, span: ReadableSpan) -> None:
        owner = self.owner.pop(span.context.span_id, None) if span.context else None
        if owner is not None:
            resource, exporter = owner
            exporter.export([_with_resource(span, resource)])

    def shutdown(self) -> None:
        self.active = False


def _with_resource(span: ReadableSpan, resource: Resource) -> ReadableSpan:
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=resource,
        attributes=span.attributes, events=span.events, links=span.links, kind=span.kind,
        status=span.status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )  # fmt: skip


@dataclass
class Deployment:
    """The running services, their queues and the store they export into."""

    store: Store
    router: ClientSpanRouter
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    providers: dict[str, TracerProvider] = field(default_factory=dict)
    queues: dict[str, queue.Queue[dict[str, str]]] = field(default_factory=dict)
    release: dict[str, threading.Event] = field(default_factory=dict)
    stops: list[Callable[[], None]] = field(default_factory=list)
    url: str = ""

    def add_service(self, name: str) -> TracerProvider:
        resource = Resource.create({"service.name": name, "host.name": HOST})
        exporter = StoreSpanExporter(store=self.store)
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(CorrelationSpanProcessor())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.router.services[id(resource)] = (resource, exporter)
        self.providers[name] = provider
        return provider

    def checkout(self, correlation_id: str) -> int:
        """The request that starts it all, sent by an uninstrumented client (no span of its own)."""
        request = urllib.request.Request(
            f"{self.url}/checkout/cart-7", headers={"X-Correlation-ID": correlation_id}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            status: int = response.status
        return status


def storefront(orders: str, provider: TracerProvider, registry: CollectorRegistry) -> Any:
    def checkout(request: Request) -> JSONResponse:  # sync: Starlette runs it in a thread
        placed = requests.post(f"{orders}/orders", json={"sku": "sku-42", "qty": 2}, timeout=10)
        return JSONResponse({"order": placed.json()}, status_code=placed.status_code)

    app = Starlette(routes=[Route("/checkout/{cart}", checkout)])
    return asgi.TracekitMiddleware(app, tracer_provider=provider, registry=registry)


def orders_app(deployment: Deployment, provider: TracerProvider) -> flask.Flask:
    app = flask.Flask("orders")

    @app.post("/orders")
    def place() -> Any:
        for destination in ("orders.audit", "orders.created"):
            headers: dict[str, str] = {}
            with messaging.publish(
                headers,
                system=SYSTEM,
                destination=destination,
                tracer_provider=provider,
                registry=deployment.registry,
            ):
                deployment.queues[destination].put(headers)  # fmt: skip
        return {"order": "o-1001", "sku": flask.request.get_json()["sku"]}, 202

    return tracekit.flask.init_app(app, tracer_provider=provider, registry=deployment.registry)


def inventory(provider: TracerProvider, store: Store, registry: CollectorRegistry) -> Any:
    log = _service_logger("inventory", provider, store)

    def stock(request: Request) -> JSONResponse:
        sku = request.path_params["sku"]
        log.info("reserving 2 x %s", sku)
        return JSONResponse({"sku": sku, "available": 40})

    app = Starlette(routes=[Route("/stock/{sku}", stock)])
    return asgi.TracekitMiddleware(app, tracer_provider=provider, registry=registry)


def _service_logger(name: str, provider: TracerProvider, store: Store) -> logging.Logger:
    """A logger exporting through tracekit's logs bridge with the service's resource."""
    logs = LoggerProvider(resource=provider.resource)
    logs.add_log_record_processor(SimpleLogRecordProcessor(StoreLogExporter(store=store)))
    log = logging.getLogger(f"golden.{name}")
    log.handlers = [LogExportHandler(logs)]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def audit_worker(deployment: Deployment) -> None:
    """Takes messages as a batch of one: a new trace, linked to the message's producer."""
    headers = deployment.queues["orders.audit"].get(timeout=20)
    deployment.release["orders.audit"].wait(20)
    with messaging.consume_batch([headers], system=SYSTEM, destination="orders.audit",
                                 tracer_provider=deployment.providers["audit"],
                                 registry=deployment.registry):  # fmt: skip
        time.sleep(0.002)


def fulfilment_worker(deployment: Deployment, inventory_url: str) -> None:
    headers = deployment.queues["orders.created"].get(timeout=20)
    deployment.release["orders.created"].wait(20)
    with messaging.consume(headers, system=SYSTEM, destination="orders.created",
                           tracer_provider=deployment.providers["fulfilment"],
                           registry=deployment.registry):  # fmt: skip
        requests.get(f"{inventory_url}/stock/sku-42", timeout=10).raise_for_status()


@contextmanager
def deployment(store: Store, router: ClientSpanRouter) -> Iterator[Deployment]:
    """Start every service and worker; stop them all afterwards."""
    d = Deployment(store, router)
    for name in SERVICES:
        d.add_service(name)
    for destination in ("orders.audit", "orders.created"):
        d.queues[destination] = queue.Queue()
        d.release[destination] = threading.Event()
    instrumentation.instrument(["requests"])
    try:
        inventory_url = _serve_asgi(d, inventory(d.providers["inventory"], store, d.registry))
        orders_url = _serve_wsgi(d, orders_app(d, d.providers["orders"]))
        d.url = _serve_asgi(d, storefront(orders_url, d.providers["storefront"], d.registry))
        _start_thread(d, lambda: audit_worker(d))
        _start_thread(d, lambda: fulfilment_worker(d, inventory_url))
        yield d
    finally:
        for event in d.release.values():
            event.set()
        for stop in reversed(d.stops):
            stop()
        instrumentation.uninstrument()
        router.active = False


def _start_thread(d: Deployment, target: Callable[[], None]) -> None:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    d.stops.append(lambda: thread.join(20))


def _serve_asgi(d: Deployment, app: Any) -> str:
    url, stop = start_uvicorn(app)
    d.stops.append(stop)
    return url


def _serve_wsgi(d: Deployment, app: Any) -> str:
    url, stop = start_werkzeug(app)
    d.stops.append(stop)
    return url
