"""``tracekit diff`` on requests real instrumented services served, on real clocks.

The deployment of ``tests/path/real_services.py`` (Starlette under uvicorn calling Flask under
werkzeug, two queue hops through tracekit's messaging primitives, one a batch consumer in a new
trace, a second HTTP hop) serves one checkout per run, into one store. The fulfilment worker is
let take the ``orders.created`` message 200 ms after it was published in run A, 600 ms in run B;
everything else is left to the machine. The ground truth: 400 ms more waited in that queue, and
the largest part of the change (the rest of the request varies as real processes do).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conditions import wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tracekit.store import Store
from tracekit_cli.main import cli

_PATH_TESTS = str(Path(__file__).resolve().parents[1] / "path")
if _PATH_TESTS not in sys.path:
    sys.path.insert(0, _PATH_TESTS)

from real_services import ClientSpanRouter, deployment  # noqa: E402 (path set above)

EXPECTED_SPANS = 9
DELAYS = {"real-fast": 0.2, "real-slow": 0.6}  # after the message was published


def checkout(store: Store, correlation_id: str) -> None:
    """One checkout through freshly started services; the fulfilment worker is let take its
    message a fixed time after the message was published (the publish span's end)."""
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)  # tests/conftest.py installed it
    router = ClientSpanRouter()
    provider.add_span_processor(router)  # inert once the deployment stops
    with deployment(store, router) as running:
        running.release["orders.audit"].set()
        assert running.checkout(correlation_id) == 202
        published = wait_for_export(store, correlation_id, _published)
        time.sleep(max(0.0, (published + DELAYS[correlation_id] * 1e9 - time.time_ns()) / 1e9))
        running.release["orders.created"].set()
        wait_for_export(store, correlation_id, lambda spans: len(spans) >= EXPECTED_SPANS)


def _published(spans: list[Any]) -> int | None:
    sent = [s.end_unix_nano for s in spans if s.name == "send orders.created"]
    return sent[0] if sent else None


def wait_for_export(store: Store, correlation_id: str, done: Callable[[list[Any]], Any]) -> Any:
    """Poll the store until ``done`` says something about the request's spans; what it said."""
    return wait_for(
        lambda: done(_request_spans(store, correlation_id)), 20, f"{correlation_id}'s spans"
    )


def _request_spans(store: Store, correlation_id: str) -> list[Any]:
    traces = {s.trace_id for s in store.spans_by_correlation_id(correlation_id)}
    traces |= store.trace_ids_linking_to(traces) if traces else set()
    return store.spans_by_trace_ids(traces)


def test_a_consumer_that_took_its_message_400_ms_later(tmp_path: Path) -> None:
    path = tmp_path / "tracekit.db"
    with Store(path) as store:
        checkout(store, "real-fast")
        checkout(store, "real-slow")

    result = CliRunner().invoke(
        cli, ["diff", "real-fast", "real-slow", "--store", str(path), "--format", "json"]
    )

    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert not [c for c in doc["changes"] if c["category"] in ("structure", "errors")]
    hop = next(n for n in doc["nodes"] if n["label"] == "orders -> fulfilment: orders.created")
    waited = hop["b"]["queue_wait_ms"] - hop["a"]["queue_wait_ms"]
    assert abs(waited - 400) < 25, waited  # a thread's wake-up, on a busy machine
    parts = doc["attribution"]
    assert (parts[0]["node"], parts[0]["component"]) == (hop["id"], "queue_wait")
    assert sum(p["delta_ms"] for p in parts) == pytest.approx(doc["duration_delta_ms"], abs=0.01)
    assert "queue wait on orders.created" in doc["headline"].split(": ", 1)[1].split(",")[0]
