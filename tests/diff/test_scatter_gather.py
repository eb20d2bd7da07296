"""``tracekit diff`` on a scatter-gather that real services served: a failed replica is no retry.

A gateway (Starlette under uvicorn, tracekit's ASGI middleware) asks three pricing replicas
(each its own uvicorn server and provider, 50 ms of work per price) for a price at once, each
call in a thread of its own under a CLIENT span whose context travels in ``traceparent``, and
answers with the prices it got. In request B the first replica answers 503 and the gateway does
without it. Nothing was asked twice: B has one error more and no retry. The diff said "1 retry
after HTTP 503", and "3 -> 3 calls" as a change in structure: the call that started after the
failed one, while it was still running, was taken for its retry.
"""

from __future__ import annotations

import contextvars
import functools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conditions import wait_for
from loopback import start_uvicorn
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tracekit import asgi
from tracekit._runtime.setup import CorrelationSpanProcessor
from tracekit.store import Store
from tracekit.store.exporter import StoreSpanExporter
from tracekit_cli.main import cli

FAILING = "scatter-b"  # the request whose first replica answers 503
REPLICAS = 3
WORK_S = 0.05  # what a replica takes to price, failing or not
PRICING = "gateway -> pricing: GET /price"


def provider(name: str, store: Store) -> TracerProvider:
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": name}))
    tracer_provider.add_span_processor(CorrelationSpanProcessor())
    tracer_provider.add_span_processor(SimpleSpanProcessor(StoreSpanExporter(store=store)))
    return tracer_provider


def pricing_replica(replica: int, store: Store, stops: list[Callable[[], None]]) -> str:
    def price(request: Request) -> JSONResponse:  # sync: Starlette runs it in a thread
        time.sleep(WORK_S)  # the replicas work at once: each call overlaps the others
        failing = request.headers.get("x-correlation-id") == FAILING and replica == 0
        return JSONResponse({"price": 10 + replica}, status_code=503 if failing else 200)

    app = Starlette(routes=[Route("/price", price)])
    url, stop = start_uvicorn(
        asgi.TracekitMiddleware(
            app, tracer_provider=provider("pricing", store), registry=CollectorRegistry()
        )
    )
    stops.append(stop)
    return url


def gateway(replicas: list[str], store: Store, stops: list[Callable[[], None]]) -> str:
    gateway_provider = provider("gateway", store)
    tracer = gateway_provider.get_tracer("gateway")

    def ask(url: str, prices: list[int], correlation_id: str) -> None:
        """One call, as an HTTP client instrumentation records it."""
        with tracer.start_as_current_span("GET", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("url.path", "/price")
            headers = {"X-Correlation-ID": correlation_id}
            propagate.inject(headers)
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(f"{url}/price", headers=headers), timeout=10
                ) as response:
                    prices.append(json.load(response)["price"])
                    span.set_attribute("http.response.status_code", response.status)
            except urllib.error.HTTPError as error:
                span.set_attribute("http.response.status_code", error.code)
                span.set_status(trace.StatusCode.ERROR)

    def quote(request: Request) -> JSONResponse:  # sync: Starlette runs it in a thread
        prices: list[int] = []
        correlation_id = request.headers["x-correlation-id"]
        threads = [  # each with the request's context (its span, its correlation ID)
            threading.Thread(
                target=contextvars.copy_context().run, args=(ask, url, prices, correlation_id)
            )
            for url in replicas
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return JSONResponse({"best": min(prices)})

    app = Starlette(routes=[Route("/quote", quote)])
    url, stop = start_uvicorn(
        asgi.TracekitMiddleware(app, tracer_provider=gateway_provider, registry=CollectorRegistry())
    )
    stops.append(stop)
    return url


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("scatter") / "tracekit.db"
    stops: list[Callable[[], None]] = []
    with Store(path) as store:
        try:
            replicas = [pricing_replica(n, store, stops) for n in range(REPLICAS)]
            entry = gateway(replicas, store, stops)
            for correlation_id in ("scatter-a", FAILING):
                request = urllib.request.Request(
                    f"{entry}/quote", headers={"X-Correlation-ID": correlation_id}
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
                exported = functools.partial(spans_exported, store, correlation_id)
                wait_for(exported, 20, f"{correlation_id}'s spans")
        finally:
            for stop in stops:
                stop()
    yield path


def spans_exported(store: Store, correlation_id: str) -> bool:
    """The gateway's server span, three calls and three answers."""
    return len(store.spans_by_correlation_id(correlation_id)) == 1 + 2 * REPLICAS


def test_a_replica_that_failed_in_a_scatter_is_an_error_not_a_retry(store_file: Path) -> None:
    result = CliRunner().invoke(
        cli, ["diff", "scatter-a", FAILING, "--store", str(store_file), "--format", "json"]
    )
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    pricing = next(n for n in doc["nodes"] if n["label"] == PRICING)
    assert (pricing["a"]["calls"], pricing["b"]["calls"]) == (REPLICAS, REPLICAS)
    assert (pricing["b"]["errors"], pricing["b"]["retries"]) == (1, 0)
    assert [c["kind"] for c in doc["changes"] if c["node"] == pricing["id"]][:1] == ["new_error"]
    assert not [c for c in doc["changes"] if c["kind"] in ("retries", "calls")]
    assert "retr" not in doc["headline"]
