"""Piped text output keeps every value whole, whatever the width (issue #22).

The installed ``tracekit`` runs in a subprocess with its stdout a pipe (so the text view is the
default) and ``COLUMNS=60``: narrower than the long names below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "path"))
from trace_topologies import T0, Topology

from tracekit.store import Store

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
LONG_ROUTE = "/v2/customers/{customer_id}/subscriptions/{subscription_id}/invoices/{invoice_id}"
LONG_ID = "checkout-" + "7" * 100
SINCE = "2023-11-14T22:00:00+00:00"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = Topology(LONG_ID)
    root = named.span("gateway", f"POST {LONG_ROUTE}", "SERVER", 0, 50)
    _, server = named.http(root, "billing-service-with-a-long-name", LONG_ROUTE, 5, 40)
    named.log(server, 10, "invoice drafted for customer " + "x" * 150)
    anonymous = Topology(None)
    anonymous.span("cron", "GET /nightly", "SERVER", 100, 110)
    path = tmp_path_factory.mktemp("piped") / "tracekit.db"
    with Store(path) as s:
        for t in (named, anonymous):
            s.write_spans(t.spans)
            s.write_logs(t.logs)
    return path


def piped(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "60"}
    result = subprocess.run([TRACEKIT, *args], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_search_keeps_ids_and_routes_whole_and_marks_a_missing_correlation_id(store: Path):
    out = piped("search", "--store", str(store), "--since", SINCE)
    header, *rows = out.splitlines()
    assert header.split()[:8] == ["start", "(UTC)", "duration", "spans", "err", "correlation",
                                  "id", "trace"]  # fmt: skip
    named = next(row for row in rows if LONG_ID in row)
    assert named.endswith(f"gateway: POST {LONG_ROUTE}")
    anonymous = next(row for row in rows if "cron" in row)
    cells = anonymous.split()
    trace_id = next(s.trace_id for s in Store(store).spans_since(T0) if s.service == "cron")
    assert cells[5:8] == ["-", trace_id, "cron:"], anonymous


def test_trace_keeps_span_names_services_and_log_bodies_whole(store: Path) -> None:
    out = piped("trace", LONG_ID, "--store", str(store))
    assert f"request {LONG_ID}\n" in out
    assert f"gateway: POST {LONG_ROUTE}" in out
    assert f"billing-service-with-a-long-name: GET {LONG_ROUTE}" in out
    assert "invoice drafted for customer " + "x" * 150 in out
    assert "..." not in out and "…" not in out
    assert f"\n    {LONG_ROUTE}\n    latency 35.0 ms\n" in out  # footers wrap between words
    # the tree's columns still line up: every span row has its waterfall after the label
    bars = [line.index("|") for line in out.splitlines() if " ms " in line and "|" in line]
    assert len(set(bars)) == 1 and bars[0] > 60
