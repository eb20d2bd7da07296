"""``OTEL_METRICS_EXEMPLAR_FILTER``, as OpenTelemetry's SDKs read it, decides which requests'
histogram samples link to their trace.

The service (tests/metrics/apps/prom_service.py) runs under uvicorn in a subprocess with
``tracekit.init()``; its metrics port is scraped in OpenMetrics, the format that carries exemplars.
Each request continues a caller's trace (a ``traceparent`` with the sampled flag set or not), so
the exemplar, when there is one, must name that trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE, free_port, interrupt
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from scripted_metrics import script_output

APP = Path(__file__).parent / "apps" / "prom_service.py"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
TRACE_ID = "5b8aa5a2d2c872e8321cf37308d69df2"


@contextmanager
def _service(tmp_path: Path, exemplar_filter: str | None) -> Iterator[tuple[str, int]]:
    app_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "TRACEKIT_EXPORT_LOGS": "false"}
    env.pop("OTEL_METRICS_EXEMPLAR_FILTER", None)
    if exemplar_filter is not None:
        env["OTEL_METRICS_EXEMPLAR_FILTER"] = exemplar_filter
    process = subprocess.Popen(
        [sys.executable, str(APP), str(app_port), str(metrics_port), str(tmp_path / "t.db")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{app_port}", metrics_port
    finally:
        interrupt(process)


def _exemplar_traces(exemplar_filter: str | None, sampled: bool, tmp_path: Path) -> set[str]:
    """Trace IDs of the exemplars a scrape shows after three requests continuing ``TRACE_ID``."""
    flags = "01" if sampled else "00"
    with _service(tmp_path, exemplar_filter) as (url, metrics_port):
        wait_for(
            lambda: httpx.get(f"{url}/warmup").status_code, 20, "the service", ignoring=UNREACHABLE
        )
        for n in range(3):
            parent = f"00-{TRACE_ID}-00f067aa0ba902b{n}-{flags}"
            assert (
                httpx.get(f"{url}/orders/{n}", headers={"traceparent": parent}).status_code == 200
            )
        scrape = httpx.get(
            f"http://127.0.0.1:{metrics_port}/metrics", headers={"Accept": OPENMETRICS}
        )
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    samples = [
        s
        for s in families["http_server_request_duration_seconds"].samples
        if s.labels["http_route"] == "/orders/{order_id}"  # not the warm-up's /warmup
    ]
    assert [s.value for s in samples if s.name.endswith("_count")] == [3], "each is counted"
    return {s.exemplar.labels["trace_id"] for s in samples if s.exemplar is not None}


@pytest.mark.parametrize(
    ("exemplar_filter", "sampled", "linked"),
    [
        (None, True, True),  # the default, trace_based
        (None, False, False),
        ("trace_based", False, False),
        ("always_off", True, False),  # a service whose traces go nowhere
        ("always_on", False, True),  # the trace was left out by the sampler, linked all the same
        (" Always_On ", False, True),
    ],
)
def test_the_exemplar_filter_decides_which_requests_link_to_their_trace(
    exemplar_filter: str | None, sampled: bool, linked: bool, tmp_path: Path
) -> None:
    assert _exemplar_traces(exemplar_filter, sampled, tmp_path) == ({TRACE_ID} if linked else set())


def test_an_unknown_exemplar_filter_stops_init_naming_the_variable() -> None:
    """The OpenTelemetry SDK refuses an unknown filter too; the value is shown escaped."""
    env = {**os.environ, "OTEL_METRICS_EXEMPLAR_FILTER": "sometimes\x1b[2J"}
    code = "import tracekit; tracekit.init('svc', exporter='none', metrics_port=0)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tracekit.config.ConfigError: OTEL_METRICS_EXEMPLAR_FILTER: 'sometimes")
    assert "trace_based, always_on, always_off" in last
    assert "\x1b" not in result.stderr


# A service that calls no init: tracekit's middleware with the application's own tracer provider
# and registry (docs/middleware.md), under uvicorn; prints the registry in OpenMetrics.
_WITHOUT_INIT = """
import sys
import httpx
from loopback import start_uvicorn
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tracekit.asgi import TracekitMiddleware

registry = CollectorRegistry()
app = Starlette(routes=[Route("/orders/{n}", lambda request: PlainTextResponse("ok"))])
app.add_middleware(TracekitMiddleware, tracer_provider=TracerProvider(), registry=registry)
url, stop = start_uvicorn(app)
for n in range(3):
    parent = f"00-%s-00f067aa0ba902b{n}-%s"
    assert httpx.get(f"{url}/orders/{n}", headers={"traceparent": parent}).status_code == 200
stop()
print(generate_latest(registry).decode(), end="")
"""


@pytest.mark.parametrize(
    ("exemplar_filter", "sampled", "linked"),
    [("always_off", True, False), ("always_on", False, True), ("trace_based", True, True)],
)
def test_the_exemplar_filter_holds_for_a_middleware_used_without_init(
    exemplar_filter: str, sampled: bool, linked: bool
) -> None:
    """The middleware reads its other options from the environment without init; this one was
    read only by init: always_off still linked every sampled request to its trace (and
    always_on none of the others)."""
    script = _WITHOUT_INIT % (TRACE_ID, "01" if sampled else "00")
    scrape = script_output(script, OTEL_METRICS_EXEMPLAR_FILTER=exemplar_filter)
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    samples = families["http_server_request_duration_seconds"].samples
    assert [s.value for s in samples if s.name.endswith("_count")] == [3], "each is counted"
    traces = {s.exemplar.labels["trace_id"] for s in samples if s.exemplar is not None}
    assert traces == ({TRACE_ID} if linked else set())
