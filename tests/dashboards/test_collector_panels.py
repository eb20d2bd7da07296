"""The service graph and collector health dashboards on a collector's series.

No collector binary (nor Grafana) runs here: a real Prometheus scrapes the stand-in of
tests/dashboards/collector_series.py every second, whose exporter sends spans and log records,
one exporter in two pipelines as in collector-config/local.yaml. Every panel query, "All"
selected, must answer with data.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from collector_series import CollectorSeries, serving
from conditions import wait_for
from grafana_model import ALL, COLLECTOR_DASHBOARDS, interpolate, load, panels, targets, variables
from loopback import UNREACHABLE
from prometheus_server import instant, prometheus_binary, running_prometheus

SCRAPES = 6  # a $__rate_interval (5 s) of samples


def test_every_collector_panel_answers_with_data(tmp_path: Path) -> None:
    """'Failed sends/s' took one rate() of the three send_failed counters: rate() drops the
    metric name, so an exporter failing both spans and log records gave two series of one
    label set, and Prometheus refused the query ('vector cannot contain metrics with the same
    labelset'): the stat showed an error for such a collector."""
    series = CollectorSeries()
    with (
        serving(series) as port,
        running_prometheus(prometheus_binary(), tmp_path, "otelcol", [f"127.0.0.1:{port}"]) as url,
    ):
        wait_for(lambda: series.count >= 10 * SCRAPES, 30, "scrapes", ignoring=UNREACHABLE)
        answers = {}
        for name in COLLECTOR_DASHBOARDS:
            board = load(name)
            chosen = {var: [ALL] for var in variables(board)}
            for panel, target in targets(board):
                promql = interpolate(target["expr"], variables(board), chosen)
                answers[f"{name} {panel['title']} {target['refId']}"] = instant(url, promql)
    assert [query for query, answer in answers.items() if not answer] == []


def test_the_edges_table_counts_an_edge_s_first_failure(tmp_path: Path) -> None:
    """An edge's first failure starts its failed-requests series, and rate() counts nothing
    for the step from no series to its first value: the Edges table showed a failed ratio of 0
    for an edge that failed once in the selected range. It counts such a series from zero, as
    the canary and endpoint tables do."""
    series = CollectorSeries()
    with (
        serving(series) as port,
        running_prometheus(prometheus_binary(), tmp_path, "otelcol", [f"127.0.0.1:{port}"]) as url,
    ):
        wait_for(lambda: series.count >= 10 * 2, 30, "scrapes", ignoring=UNREACHABLE)
        start = time.time()
        wait_for(lambda: series.count >= 10 * 5, 30, "scrapes")
        series.payments_failed = 1
        counted = series.count
        wait_for(lambda: series.count >= counted + 10 * 2, 30, "scrapes")
        at = time.time()
        selected_range = f"{math.ceil(at - start)}s"
        requests = (
            f'increase(traces_service_graph_request_total{{server="payments"}}[{selected_range}])'
        )
        (sent,) = instant(url, requests, at)
        board = load("service-graph.json")
        panel = next(p for p in panels(board) if p["title"] == "Edges")
        target = next(t for t in panel["targets"] if t["refId"] == "B")  # failed ratio
        expr = target["expr"].replace("$__range", selected_range)
        chosen = {"client": [ALL], "server": ["payments"], "service": [ALL]}
        shown = instant(url, interpolate(expr, variables(board), chosen), at)
    assert [float(s["value"][1]) for s in shown] == [pytest.approx(1 / float(sent["value"][1]))]
