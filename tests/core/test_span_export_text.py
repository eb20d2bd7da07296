"""Span text that UTF-8 cannot hold, exported over OTLP to a real ``tracekit collector``.

A lone surrogate (JSON's ``"\\ud800"`` in a request body that an application names a span or an
event after) cannot be encoded by OTLP's protobuf. Over OTLP/HTTP the SDK's exporter then
dropped the whole batch, every other request's spans with it, and tracekit warned that the
collector was unreachable; over OTLP/gRPC the batch processor logged a traceback and dropped it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

SCRIPT = """
    import json, tracekit
    from opentelemetry import trace
    tracekit.init("shop", metrics_port=0)
    tracer = trace.get_tracer("shop")
    name = json.loads('"\\\\ud800x"')
    tracekit.correlation.set_correlation_id("order-9")
    tracer.start_span("before").end()
    with tracer.start_as_current_span(f"charge {name}") as span:
        span.add_event(f"retry {name}")
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"declined {name}"))
    tracer.start_span("after").end()
    tracekit.shutdown()
"""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    """What ``tracekit collector`` runs: OTLP/HTTP and OTLP/gRPC on loopback, into a store."""
    path = tmp_path / "collector.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0, grpc_port=0)).start()
    yield receiver, path
    receiver.stop()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_span_with_a_lone_surrogate_loses_neither_itself_nor_its_batch(
    collector: tuple[Receiver, Path], protocol: str
) -> None:
    receiver, path = collector
    if protocol == "grpc":
        assert receiver.grpc_address is not None
        host, port = receiver.grpc_address
        endpoint = f"http://{host}:{port}"
    else:
        endpoint = receiver.endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    receiver.stop()
    with Store(path) as store:
        spans = store.spans_by_correlation_id("order-9")
    assert sorted(s.name for s in spans) == ["after", "before", "charge \ufffdx"]
    charge = next(s for s in spans if s.name.startswith("charge"))
    assert [e.name for e in charge.events] == ["retry \ufffdx"]
    assert (charge.status, charge.status_message) == ("ERROR", "declined \ufffdx")
