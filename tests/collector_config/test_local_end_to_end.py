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
from pathlib import Path

import pytest
from conditions import wait_for
from loopback import free_port, wait_for_port

from tracekit.store import Store

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


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tracekit collector` on a free port with a temporary store: (endpoint, store path)."""
    port, store = free_port(), tmp_path / "tracekit.db"
    command = [str(Path(sys.executable).with_name("tracekit")), "collector"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--store", str(store)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process, timeout=15)
        yield f"http://127.0.0.1:{port}", store
    finally:
        process.terminate()
        process.wait(timeout=10)


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
