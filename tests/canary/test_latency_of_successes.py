"""`tracekit canary` times only the requests that succeeded, from the store and from Prometheus.

The baseline's checkout fails every other request at once (a dependency refused it: 503 in about
a millisecond) and serves the rest in 60 ms; the canary fixes the failures and serves every
request in 60 ms. A fix, not a slowdown: with the fast failures timed, the baseline's median was
the failures' and the canary read as many times slower.

For the store, an OpenTelemetry SDK exports those requests with the durations given through a real
receiver: timed real sleeps on a loaded machine made the ratio anything (0.80 where 1.0 is true).
For Prometheus, two versions of tests/canary/apps/canary_shop.py serve them while a real
Prometheus scrapes them. Outside CI a missing ``prometheus`` binary skips; with CI=true it fails.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from shop import CanaryRun as Run
from shop import canary_json, served_and_scraped

from tracekit.canary import HTTP, RouteKey, samples_from_store
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
REQUESTS = 400  # per version
CHECKOUT = "/checkout/{n}"
KEY = RouteKey(HTTP, CHECKOUT)
# room for a loaded machine's stragglers: the claim is that a fix does not read as a slowdown
TOLERANCES = ("--max-latency-increase", "60", "--max-tail-increase", "60")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("canary-successes")
    versions = [(BASELINE, [0.06, 2]), (CANARY, [0.06, 0])]
    paths = [f"/checkout/{n}" for n in range(1, REQUESTS + 1)]
    with served_and_scraped(APP, directory, versions, paths, CHECKOUT) as (run, statuses):
        assert statuses.count(503) == REQUESTS // 2  # the baseline's even numbers
        yield run


def _canary(run: Run, *source: str) -> tuple[int, dict[str, Any]]:
    return canary_json(run, BASELINE, CANARY, *source, "--route", CHECKOUT, *TOLERANCES)


T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z
WINDOW = ("2023-11-14T22:13:20+00:00", "2023-11-14T22:43:20+00:00")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The same requests, exported with the durations given (60 ms, give or take 10%; a
    failure in 1 ms) by the SDK over OTLP/HTTP into a real receiver's store."""
    store = tmp_path_factory.mktemp("canary-successes-stored") / "tracekit.db"
    receiver = Receiver(Store(store), ReceiverConfig(port=0))
    receiver.start()
    try:
        _export(receiver, BASELINE, fail_every=2)
        _export(receiver, CANARY, fail_every=0)
    finally:
        receiver.stop()
    return Run("", store, *WINDOW)


def _export(receiver: Receiver, version: str, fail_every: int) -> None:
    resource = Resource.create({"service.name": "shop", "service.version": version})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("canary-shop")
    rng = random.Random(version)
    for n in range(1, REQUESTS + 1):
        failed = fail_every > 0 and n % fail_every == 0
        start = T0 + rng.randrange(1_000 * 10**9)
        took = 10**6 if failed else int(60e6 * rng.uniform(0.9, 1.1))
        attributes = {"http.request.method": "GET", "http.route": CHECKOUT,
                      "http.response.status_code": 503 if failed else 200}  # fmt: skip
        span = tracer.start_span(f"GET {CHECKOUT}", kind=SpanKind.SERVER, start_time=start,
                                 attributes=attributes)  # fmt: skip
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=start + took)
    provider.shutdown()
    stored = samples_from_store(receiver.store, "shop", (version, version), 0, 2**62)[0]
    assert stored[KEY].requests == REQUESTS  # the receiver answers once they are committed


def _metrics(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    metrics = {m["name"]: m for m in document["metrics"]}
    summary = metrics["latency"]["summary"]
    assert summary["baseline"]["errors"] == REQUESTS // 2
    assert summary["baseline"]["requests"] == summary["canary"]["requests"] == REQUESTS
    for version in ("baseline", "canary"):  # both medians are the served requests' 60 ms
        assert 50 <= summary[version]["p50_ms"] <= 100, (version, summary)
    assert metrics["error_rate"]["class"] == "pass"
    return metrics


def test_the_store_does_not_call_a_canary_that_fixes_fast_failures_slower(stored: Run) -> None:
    """Exact durations: within the tolerance (marginal at most)."""
    code, document = _canary(stored, "--store", str(stored.store))

    metrics = _metrics(document)
    for name in ("latency", "tail_latency"):
        assert metrics[name]["class"] in ("pass", "marginal"), metrics[name]["explanation"]
        assert metrics[name]["effect"]["estimate"] == pytest.approx(1.0, abs=0.1)
    assert (document["verdict"], code) in (("pass", 0), ("marginal", 3))


def test_prometheus_does_not_call_a_canary_that_fixes_fast_failures_slower(run: Run) -> None:
    """The buckets may leave a check inconclusive (60 ms sits in (50 ms, 75 ms], and a loaded
    machine's stragglers in the next one), but never failed."""
    code, document = _canary(run, "--prometheus", run.prometheus)

    metrics = _metrics(document)
    for name in ("latency", "tail_latency"):
        assert metrics[name]["class"] in ("pass", "inconclusive"), metrics[name]["explanation"]
    assert (document["verdict"], code) in (("pass", 0), ("inconclusive", 4))
