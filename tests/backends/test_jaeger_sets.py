"""``tracekit diff --service S --a K=V --b K=V --jaeger URL`` measures each request as ``tracekit
trace`` shows it, and as the store does: a pull consumer's trace (a trace of its own in another
service, carrying the request's correlation ID) is part of the request.

Before, the set form searched the correlation IDs in service S alone: the consumer's trace was
left out, version 1.0's requests measured 100 ms where the store measured 120, and the diff
called the timing changed (+30 ms) where the store found +10 ms below the thresholds. No Jaeger
runs here: ``FakeJaeger`` answers as api_v3 does, on a real HTTP server on loopback.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from trace_topologies import T0, Topology

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

NOW = time.time_ns() - 120 * 10**9


def request_with_pull_consumer(n: int) -> list[SpanRecord]:
    """gateway -> api (service.version 1.1 every third request, 30 ms slower) -> publish; a
    worker pulls the message in a trace of its own, linked to it, carrying the correlation ID."""
    t = Topology(f"req-{n}")
    version = "1.1" if n % 3 == 0 else "1.0"
    slower = 30 if version == "1.1" else 0
    root = t.span("gateway", "GET /items", "SERVER", 0, 100 + slower)
    _, api = t.http(root, "api", "/items/{id}", 5, 90 + slower)
    sent = t.publish(api, "jobs", 50, 55)
    t.new_trace()
    t.consume("worker", "jobs", 70, 120, links=[sent])
    return [moved(s, NOW - (60 - n) * 20 * 10**9 - T0, version) for s in t.spans]


def moved(span: SpanRecord, shift: int, version: str) -> SpanRecord:
    """``span`` ``shift`` ns later, with the version of ``api`` on its resource."""
    return dataclasses.replace(
        span, start_unix_nano=span.start_unix_nano + shift,
        end_unix_nano=span.end_unix_nano + shift, resource={"service.name": span.service},
        service_version=version if span.service == "api" else None,
    )  # fmt: skip


def diff_sets(*backend: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli, ["diff", "--service", "api", "--a", "service.version=1.0", "--b",
              "service.version=1.1", "--since", "1h", "--format", "json", *backend],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_the_set_form_joins_a_consumers_trace_as_the_store_does(serve: Any, tmp_path: Path) -> None:
    spans = [span for n in range(60) for span in request_with_pull_consumer(n)]
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = diff_sets("--store", str(tmp_path / "store.db"))
    from_jaeger = diff_sets("--jaeger", serve(FakeJaeger(spans)).url)
    assert from_store["a"]["mean_duration_ms"] == 120.0  # the worker ends the request
    assert from_jaeger == from_store


def test_the_sets_service_is_searched_past_the_services_searched(
    serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Jaeger listing more services than are searched: each correlation ID is still searched
    in the set's own service. Before, the first services by name alone were searched, 'api'
    past them: 'no requests of 'api' with 'service.version=1.0'', exit 3, where the store and
    the pages of 'api' held 40."""
    monkeypatch.setattr("tracekit.backends.jaeger.MAX_SERVICES", 3)
    spans = [span for n in range(60) for span in request_with_pull_consumer(n)]
    others = [other_service(f"aaa-{n}", n) for n in range(3)]  # by name before 'api'
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    result = CliRunner().invoke(
        cli, ["diff", "--service", "api", "--a", "service.version=1.0", "--b",
              "service.version=1.1", "--since", "1h", "--format", "json", "--jaeger",
              serve(FakeJaeger(spans + others)).url],
        env={"TRACEKIT_BACKEND_HEADERS": ""},
    )  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    from_store = diff_sets("--store", str(tmp_path / "store.db"))
    assert json.loads(result.stdout)["a"]["requests"] == from_store["a"]["requests"] == 40
    assert "lists 6 services: tracekit searches each request in 'api' and the first 2 " in (
        result.stderr
    )


def other_service(service: str, n: int) -> SpanRecord:
    """One span of a service of its own, in no request of the sets."""
    return SpanRecord(
        trace_id=f"{n + 1:032x}", span_id=f"{n + 1:016x}", parent_span_id=None, service=service,
        name="GET /", kind="SERVER", start_unix_nano=NOW, end_unix_nano=NOW + 10**6,
        resource={"service.name": service},
    )  # fmt: skip


def test_a_correlation_id_too_long_for_a_url_is_measured_by_its_trace(
    serve: Any, tmp_path: Path
) -> None:
    """A service that is not tracekit's may set any correlation.id, up to the 16,384 characters
    a value is kept to: one request of 60 whose ID was 16,000 ESC characters made the set form
    fail, 'Jaeger at ... answered HTTP 414: Error response', exit 2, its search for the ID a
    URL the server refused. An ID longer than tracekit takes (128) is not searched for: that
    request is measured by its trace (in Jaeger without its consumer's trace, which only the
    ID led to: 100 ms of 120), and the sets are the store's."""
    long_id = "\x1b" * 16_000
    spans = [
        dataclasses.replace(s, attributes={**s.attributes, "correlation.id": long_id})
        if s.correlation_id == "req-5" else s
        for n in range(60) for s in request_with_pull_consumer(n)
    ]  # fmt: skip
    with Store(tmp_path / "store.db") as store:
        store.write_spans(spans)
    from_store = diff_sets("--store", str(tmp_path / "store.db"))
    from_jaeger = diff_sets("--jaeger", serve(FakeJaeger(spans)).url)
    assert [from_jaeger[s]["requests"] for s in "ab"] == [from_store[s]["requests"] for s in "ab"]
    assert from_store["a"]["requests"] == 40
    assert from_jaeger["a"]["mean_duration_ms"] == (39 * 120 + 100) / 40
