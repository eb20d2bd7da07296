"""``tracekit diff`` of requests whose calls were sent again (``http.request.resend_count``)
many times: finding the request sent before each resend must not make the diff quadratic.

A batch job's server span calls 5,000 items, each answered 503 and retried once (10,000 CLIENT
spans under one span, 20,001 spans in all), stored in a real store; the real CLI reads it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from tracekit.records import SpanRecord
from tracekit.store import Store
from tracekit_cli.main import cli

T0 = 1_796_000_000_000_000_000
MS = 1_000_000
CALLS = 5_000


def batch(trace_id: str, correlation_id: str) -> list[SpanRecord]:
    """A server span calling ``CALLS`` items in turn, each 503 then 200 (and its server)."""
    ids = (f"{n:016x}" for n in range(1, 4 * CALLS + 2))
    root = SpanRecord(trace_id, next(ids), None, "batch", "POST /run", "SERVER", T0,
                      T0 + (6 * CALLS + 1) * MS,
                      attributes={"correlation.id": correlation_id})  # fmt: skip
    spans = [root]
    for i in range(2 * CALLS):
        start, resend = T0 + (3 * i + 1) * MS, i % 2
        attributes = {"http.request.method": "GET", "url.path": f"/items/{i // 2}",
                      "server.address": "items",
                      "http.response.status_code": 200 if resend else 503}  # fmt: skip
        if resend:
            attributes["http.request.resend_count"] = 1
        client = SpanRecord(trace_id, next(ids), root.span_id, "batch", "GET", "CLIENT", start,
                            start + 2 * MS, attributes=attributes)  # fmt: skip
        server = SpanRecord(trace_id, next(ids), client.span_id, "items", "GET /items/{id}",
                            "SERVER", start + MS // 2, start + 3 * MS // 2)  # fmt: skip
        spans += [client, server]
    return spans


def test_a_diff_of_ten_thousand_resent_calls_takes_seconds(tmp_path: Path) -> None:
    with Store(tmp_path / "tracekit.db") as store:
        store.write_spans(batch("a1" * 16, "batch-a") + batch("b2" * 16, "batch-b"))

    started = time.monotonic()
    result = CliRunner().invoke(
        cli, ["diff", "batch-a", "batch-b", "--store", str(tmp_path / "tracekit.db"),
              "--format", "json"],
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changes"] == []
    assert elapsed < 5, f"{elapsed:.1f} s"
