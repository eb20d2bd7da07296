"""The Grafana canary dashboard shows the series ``tracekit canary --prometheus`` reads.

Every family the Prometheus mode queries must appear in dashboards/canary.json with the same
selector, for each version, for its failed requests and for its succeeded requests' latency, and
per route. The
dashboard's own checks (model, metric names, every query against a real Prometheus) live in
tests/dashboards/.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tracekit.canary import HTTP
from tracekit.canary.prometheus import FAMILIES, LOOKBACK, Family, Window

BOARD = Path(__file__).resolve().parents[2] / "dashboards" / "canary.json"


def _expressions() -> list[str]:
    board = json.loads(BOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]


def _dashboard_selector(version: str, extra: str = "") -> str:
    """``Family.selector`` as the dashboard writes it: each variable regex-escaped by Grafana
    into a raw string, so that a quote or a backslash in a version keeps the query whole."""
    labels = f"service_name=~`${{service:regex}}`, service_version=~`${{{version}:regex}}`"
    return "{" + labels + (f", {extra}" if extra else "") + "}"


@pytest.mark.parametrize("family", FAMILIES, ids=[f.histogram for f in FAMILIES])
@pytest.mark.parametrize("version", ["baseline", "canary"])
def test_the_dashboard_reads_what_the_prometheus_mode_reads(family: Family, version: str) -> None:
    expressions = _expressions()
    buckets = f"{family.histogram}_bucket{_dashboard_selector(version, family.succeeded)}"
    for matcher in family.failed:
        failed = f"{family.histogram}_count{_dashboard_selector(version, matcher)}"
        assert any(failed in e for e in expressions), failed

    assert any(buckets in e for e in expressions), buckets
    # over the selected range, each series counted as the Prometheus mode counts it: increase()
    # where it existed at the range's start (``_existed``), from zero where it was born there
    existed = f"last_over_time({buckets}[{LOOKBACK}] offset $__range)"
    counted = (
        f"(increase({buckets}[$__range]) and {existed}"
        f" or last_over_time({buckets}[$__range]) unless {existed})"
    )
    per_route = f"sum by (le, {family.route_label}) ({counted})"
    assert any(per_route in e for e in expressions), per_route


_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|`[^`]*`)')


def test_every_variable_in_a_matcher_is_regex_escaped_into_a_raw_string() -> None:
    """Without a Prometheus binary, tests/dashboards/test_awkward_label_values.py skips: this keeps
    the form it proves there. Grafana inserts a plain ``$canary`` with a double quote unescaped."""
    board = json.loads(BOARD.read_text())
    texts = _expressions() + [v["definition"] for v in board["templating"]["list"][1:]]
    with_variables = [
        (op, value) for text in texts for _, op, value in _MATCHER.findall(text) if "$" in value
    ]

    assert len(with_variables) > 60
    assert {(op, value) for op, value in with_variables} == {
        ("=~", f"`${{{name}:regex}}`") for name in ("service", "baseline", "canary")
    }


def test_the_dashboard_and_the_prometheus_mode_select_alike() -> None:
    """The same matchers, in the same order, as the Prometheus mode's own selector."""
    ours = FAMILIES[0].selector("S", "V", 'error_type!=""')
    theirs = _dashboard_selector("canary", 'error_type!=""')

    assert ours.replace('"S"', "`${service:regex}`").replace('"V"', "`${canary:regex}`") == (
        theirs.replace("=~`", "=`")
    )


def test_the_prometheus_mode_queries_are_the_documented_promql() -> None:
    http = FAMILIES[0]
    half_hour = Window(1_700_000_000_000, 1_700_001_800_000)

    assert http.buckets_query("orders", '1.5.0"x', half_hour) == (
        "sum by (http_route, le) (increase(http_server_request_duration_seconds_bucket"
        '{service_name="orders", service_version="1.5.0\\"x", error_type="",'
        ' http_response_status_code!~"5..|"}[1800s])'
        " and last_over_time(http_server_request_duration_seconds_bucket"
        '{service_name="orders", service_version="1.5.0\\"x", error_type="",'
        ' http_response_status_code!~"5..|"}[5m] offset 1800s))'
    )
    assert http.failed_query("orders", "1.5.0", Window(0, 60_000)) == (
        "sum by (http_route) ((increase(http_server_request_duration_seconds_count"
        '{service_name="orders", service_version="1.5.0", error_type!=""}[60s])'
        " and last_over_time(http_server_request_duration_seconds_count"
        '{service_name="orders", service_version="1.5.0", error_type!=""}[5m] offset 60s))'
        " or (increase(http_server_request_duration_seconds_count"
        '{service_name="orders", service_version="1.5.0", http_response_status_code=~"5..|"}'
        "[60s]) and last_over_time(http_server_request_duration_seconds_count"
        '{service_name="orders", service_version="1.5.0", http_response_status_code=~"5..|"}'
        "[5m] offset 60s)))"
    )


def test_a_series_born_in_the_window_is_read_at_steps_ending_at_its_end() -> None:
    """1.8 s steps, the last at the window's end (1_700_001_800.5 s): the grid's own steps fall
    on multiples of 1.8 s, so each is moved 0.5 s later and reads 0.5 s back; each reads the
    series' last value, stale or not (a failed scrape is no restart), back to the window's start
    (an outage is no restart either), else its last before the window (the window's length and
    the lookback before its start), else 0."""
    series = 'm_bucket{service_name="orders", service_version="v"}'
    window = Window(1_700_000_000_500, 1_700_001_800_500)
    held = (
        f"(last_over_time({series}[1800s] offset 500ms)"
        f" or last_over_time({series}[2100s] @ 1700000000.500))"
    )

    assert Family(HTTP, "m", "r", (), "").buckets_query("orders", "v", window, born=True) == (
        f"sum by (r, le) (increase((({held} + 0)"
        f" or (last_over_time({series}[1800s] @ end()) * 0))[1800s:1800ms] @ 1700001801.000)"
        f" unless last_over_time({series}[5m] offset 1800s))"
    )
