"""A span that ends before it starts, from a source that keeps one as it came (the store does
not: it stores such a span ending when it starts). The engine shows it lasting no time."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from conditions import wait_for
from trace_topologies import MemorySource, Topology

from tracekit.path import reconstruct
from tracekit.store import Store
from tracekit_cli.main import cli

_RECEIVER_TESTS = str(Path(__file__).resolve().parents[1] / "receiver")
if _RECEIVER_TESTS not in sys.path:
    sys.path.insert(0, _RECEIVER_TESTS)

from _collector_process import start_collector  # noqa: E402 (path set above)


def test_a_span_that_ends_before_it_starts_is_shown_lasting_no_time_with_a_warning() -> None:
    t = Topology("req-backwards")
    entry = t.span("api", "POST /jobs", "SERVER", 0, 100)
    backwards = t.span("api", "enqueue", "INTERNAL", 50, 20, entry)

    path = reconstruct(MemorySource(t.spans, t.logs), "req-backwards")

    assert path is not None
    span = next(s for s in path.spans if s.record.span_id == backwards.span_id)
    assert (span.duration_ms, span.self_ns, span.end_unix_nano) == (
        0.0, 0, backwards.start_unix_nano
    )  # fmt: skip
    assert path.warnings == [
        f"api 'enqueue' ({backwards.span_id}) ends before it starts: shown as lasting 0 ms"
    ]


def test_a_span_the_collector_kept_lasting_no_time_is_explained(tmp_path: Path) -> None:
    """The collector stores a span whose clock stepped back as ending when it starts, the step
    in ``tracekit.clock_stepped_back_ns``. `trace` showed it lasting 0.0 ms with no word why,
    where a backend that keeps such a span as it came gets a warning."""
    store_file = tmp_path / "tracekit.db"
    process, port = start_collector(store_file)
    try:
        post_otlp_json(port, [
            otlp_span("00000000000000a1", "", "POST /jobs", 0, 100),
            otlp_span("00000000000000a2", "00000000000000a1", "enqueue", 50, 20),
        ])  # fmt: skip
        wait_for(lambda: stored(store_file) == 2, 20, "the collector to store both spans")
    finally:
        process.terminate()
        process.wait(10)
    result = CliRunner().invoke(
        cli, ["trace", "req-stepped", "--store", str(store_file), "--format", "text"],
        env={"COLUMNS": "120"},
    )  # fmt: skip
    assert (result.exit_code, result.stderr) == (0, "")
    assert "  api 'enqueue' (00000000000000a2) ends before it starts: shown as lasting 0 ms" in (
        result.stdout.splitlines()
    )


TRACE_ID = "5e" * 16
T0_NS = time.time_ns() - 60 * 10**9  # a minute ago: inside the store's bounds


def otlp_span(span_id: str, parent: str, name: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    return {
        "traceId": TRACE_ID, "spanId": span_id, "parentSpanId": parent, "name": name,
        "kind": 2 if not parent else 1,
        "startTimeUnixNano": str(T0_NS + start_ms * 10**6),
        "endTimeUnixNano": str(T0_NS + end_ms * 10**6),
        "attributes": [{"key": "correlation.id", "value": {"stringValue": "req-stepped"}}],
    }  # fmt: skip


def post_otlp_json(port: int, spans: list[dict[str, Any]]) -> None:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]}
    body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/traces", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def stored(store_file: Path) -> int:
    with Store(store_file) as store:
        return len(store.spans_by_correlation_id("req-stepped"))
