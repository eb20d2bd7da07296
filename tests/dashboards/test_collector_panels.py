"""The service graph and collector health dashboards on a collector's series.

No collector binary (nor Grafana) runs here: a real Prometheus scrapes the stand-in of
tests/dashboards/collector_series.py every second, whose exporter sends spans and log records,
one exporter in two pipelines as in collector-config/local.yaml. Every panel query, "All"
selected, must answer with data.
"""

from __future__ import annotations

from pathlib import Path

from collector_series import CollectorSeries, serving
from conditions import wait_for
from grafana_model import ALL, COLLECTOR_DASHBOARDS, interpolate, load, targets, variables
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
