"""End to end for the local flavour's target: tracekit service -> `tracekit collector` -> store.

`collector-config/local.yaml` forwards to `tracekit collector`; a tracekit service can also export
to it directly through OTEL_EXPORTER_OTLP_ENDPOINT. This test runs the real receiver (the CLI
command, as a subprocess on a free loopback port) and a real service process exporting OTLP/HTTP
with the OpenTelemetry SDK, then reads the store the way `tracekit trace` does. The SDK sends
what local.yaml's `otlphttp/tracekit` exporter sends (protobuf to /v1/traces and /v1/logs, no
compression); the otelcol-contrib hop itself is not exercised: the binary cannot be installed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conditions import wait_for
from loopback import free_port, wait_for_port

from tracekit.store import Store

from .otelcol import CONFIG_DIR, host_of, load

SERVICE = textwrap.dedent(
    """
    import logging
    import tracekit
    from opentelemetry import trace

    tracekit.init(service_name="e2e-orders", exporter="otlp")
    with trace.get_tracer("e2e").start_as_current_span("checkout") as span:
        logging.getLogger("orders").warning("payment declined for order 42")
        print(format(span.get_span_context().trace_id, "032x"), flush=True)
    tracekit.shutdown()
    """
)


@contextmanager
def running_collector(host: str, store: Path) -> Iterator[int]:
    """`tracekit collector` bound on ``host`` and a free port, writing ``store``: its port."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("tracekit")), "collector"]
    command += ["--host", host, "--port", str(port), "--grpc-port", "0", "--store", str(store)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process, timeout=15)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tracekit collector` on a free port with a temporary store: (endpoint, store path)."""
    store = tmp_path / "tracekit.db"
    with running_collector("127.0.0.1", store) as port:
        yield f"http://127.0.0.1:{port}", store


def run_service(endpoint: str) -> str:
    """Run a tracekit service exporting to ``endpoint``; return the trace id it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "TRACEKIT_METRICS_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-c", SERVICE], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def test_span_and_log_land_in_the_store(collector: tuple[str, Path]) -> None:
    endpoint, store_path = collector
    trace_id = run_service(endpoint)
    with Store(store_path) as store:
        spans = wait_for(lambda: store.spans_by_trace_ids([trace_id]), 10, "the span stored")
        logs = wait_for(lambda: store.logs_by_trace_ids([trace_id]), 10, "the log stored")
    (span,) = spans
    assert (span.service, span.name, span.trace_id) == ("e2e-orders", "checkout", trace_id)
    bodies = {(log.body, log.span_id, log.service) for log in logs}
    assert ("payment declined for order 42", span.span_id, "e2e-orders") in bodies


def test_an_app_on_localhost_reaches_the_sidecars_loopback_bind(tmp_path: Path) -> None:
    """The sidecar binds OTLP on its default host only; the app beside it sends to
    ``http://localhost:<port>`` (tracekit.init()'s default host) and must get through. (Where
    localhost resolves to ::1 first, urllib3 tries 127.0.0.1 next; this machine's resolver
    gives 127.0.0.1 alone, so that path is not exercised here.)"""
    receivers = load(CONFIG_DIR / "sidecar.yaml")["receivers"]["otlp"]["protocols"]
    host, store = host_of(receivers["http"]["endpoint"]), tmp_path / "tracekit.db"
    with running_collector(host, store) as port:
        trace_id = run_service(f"http://localhost:{port}")
        with Store(store) as spans:
            found = wait_for(lambda: spans.spans_by_trace_ids([trace_id]), 10, "the span stored")
    assert [span.service for span in found] == ["e2e-orders"]
