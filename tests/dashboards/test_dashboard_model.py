"""Every dashboard against Grafana's classic JSON model, and its PromQL against the metric contract.

No Grafana server can run here; these checks cover what Grafana's import needs and what makes a
dashboard break silently (overlapping panels, undefined variables, a hard-coded data source uid,
a metric or label name that nothing emits). Whether the queries return data is checked against a
real Prometheus in test_dashboard_queries.py.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from grafana_model import (
    COLLECTOR_DASHBOARDS,
    DASHBOARD_FILES,
    DASHBOARDS,
    DATASOURCE_REF,
    first_value,
    load,
    panels,
    parse_label_values,
    references,
    strings,
    targets,
    variable_query,
    variables,
)
from metric_contract import (
    COLLECTOR_SIDE,
    COLLECTOR_SIDE_VALUES,
    SCRAPE_LABELS,
    grouping_labels,
    selectors,
    tracekit_metrics,
)

# Links, bookmarks and provisioning refer to these: changing one breaks them.
STABLE_UIDS = {
    "service-overview.json": "tracekit-service-overview",
    "endpoint.json": "tracekit-endpoint",
    "messaging.json": "tracekit-messaging",
    "canary.json": "tracekit-canary",
    "service-graph.json": "tracekit-service-graph",
    "collector-health.json": "tracekit-collector-health",
}
BUILTIN_ANNOTATIONS = {"type": "grafana", "uid": "-- Grafana --"}

every_dashboard = pytest.mark.parametrize("name", DASHBOARD_FILES)


def test_the_directory_holds_exactly_the_documented_dashboards() -> None:
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(DASHBOARD_FILES)


@every_dashboard
def test_importable_classic_model(name: str) -> None:
    board = load(name)
    assert board["id"] is None, "an exported dashboard carries no database id"
    assert board["uid"] == STABLE_UIDS[name]
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,40}", board["uid"])
    assert isinstance(board["schemaVersion"], int) and 36 <= board["schemaVersion"] <= 41
    assert board["title"].startswith("tracekit / ")
    assert "tracekit" in board["tags"]
    assert isinstance(board["panels"], list) and board["panels"]
    assert isinstance(board["templating"]["list"], list)


def test_uids_and_titles_are_unique_across_dashboards() -> None:
    boards = [load(name) for name in DASHBOARD_FILES]
    assert len({b["uid"] for b in boards}) == len({b["title"] for b in boards}) == len(boards)


@every_dashboard
def test_panel_ids_are_unique_positive_integers(name: str) -> None:
    ids = [panel["id"] for panel in panels(load(name))]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))


def _cells(grid: Mapping[str, int]) -> set[tuple[int, int]]:
    return {
        (x, y)
        for x in range(grid["x"], grid["x"] + grid["w"])
        for y in range(grid["y"], grid["y"] + grid["h"])
    }


@every_dashboard
def test_grid_positions_fit_the_24_column_grid_and_never_overlap(name: str) -> None:
    placed = list(panels(load(name)))
    for panel in placed:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    for first, second in itertools.combinations(placed, 2):
        overlap = _cells(first["gridPos"]) & _cells(second["gridPos"])
        assert not overlap, f"{first['title']!r} overlaps {second['title']!r}"


@every_dashboard
def test_every_query_names_the_datasource_variable(name: str) -> None:
    board = load(name)
    for panel in panels(board):
        if panel["type"] == "row":
            assert not panel.get("targets")
            continue
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    for panel, target in targets(board):
        assert target["datasource"] == DATASOURCE_REF, panel["title"]
        assert target["expr"].strip(), panel["title"]


def _datasource_refs(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        own = [value["datasource"]] if "datasource" in value else []
        return own + [ref for item in value.values() for ref in _datasource_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _datasource_refs(item)]
    return []


@every_dashboard
def test_no_hard_coded_datasource_uid(name: str) -> None:
    board = load(name)
    for ref in _datasource_refs(board):
        assert ref in (DATASOURCE_REF, BUILTIN_ANNOTATIONS), ref
    assert "__inputs" not in board, "import must not ask for a data source: the variable does"


@every_dashboard
def test_every_variable_used_is_defined_and_every_defined_one_used(name: str) -> None:
    board = load(name)
    defined = variables(board)
    outside_templating = {k: v for k, v in board.items() if k != "templating"}
    used = {ref for text in strings(outside_templating) for ref in references(text)}
    seen: list[str] = []
    for var_name, var in defined.items():
        # Grafana resolves variables in order: a chained query may only use earlier ones.
        own = {ref for text in strings(var) for ref in references(text)}
        assert own <= set(seen), f"{var_name} uses {own - set(seen)} before they are defined"
        used |= own
        seen.append(var_name)
    assert used <= set(defined), f"undefined: {used - set(defined)}"
    assert set(defined) <= used, f"defined but unused: {set(defined) - used}"


@every_dashboard
def test_variables_are_prometheus_label_values_queries(name: str) -> None:
    defined = variables(load(name))
    first = next(iter(defined.values()))
    assert (first["name"], first["type"], first["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    for var in list(defined.values())[1:]:
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE_REF
        assert var["refresh"] in (1, 2), "refresh on load or on time range change"
        parse_label_values(variable_query(var))
        if var["multi"] or var["includeAll"]:
            assert var["allValue"] == ".*", "All must also match series without the label"


def _expressions(board: Mapping[str, Any]) -> list[str]:
    queries = [target["expr"] for _, target in targets(board)]
    for var in list(variables(board).values())[1:]:
        selector = parse_label_values(variable_query(var))[0]
        queries.append(selector if "{" in selector else selector + "{}")
    return queries


_BARE_NAME = re.compile(r"\b[a-z_]+_(total|bucket|count|sum|requests|size|capacity)\b(?!\{)")


def _check_against(
    promql: str, known: Mapping[str, frozenset[str]], values: Mapping[str, set[str]]
) -> None:
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    assert not _BARE_NAME.search(unquoted), f"write metrics as name{{...}}: {promql}"
    found = selectors(promql, frozenset(known))
    assert found, f"no series selector in {promql!r}"
    allowed: set[str] = set()
    for selector in found:
        assert selector.names, f"{selector.name_pattern!r} matches no documented metric: {promql}"
        labels = frozenset.union(*(known[n] for n in selector.names))
        allowed |= labels
        for label, op, value in selector.matchers:
            assert label == "__name__" or label in labels, f"{label} not on {selector.name_pattern}"
            if label in values and op == "=" and "$" not in value:
                assert value in values[label], f"{label}={value!r} is not a documented value"
    assert grouping_labels(promql) <= allowed | {"le"}, promql


@pytest.mark.parametrize("name", [n for n in DASHBOARD_FILES if n not in COLLECTOR_DASHBOARDS])
def test_tracekit_dashboards_use_only_names_and_labels_of_docs_metrics(name: str) -> None:
    known = tracekit_metrics()
    for promql in _expressions(load(name)):
        _check_against(promql, known, {})


@pytest.mark.parametrize("name", COLLECTOR_DASHBOARDS)
def test_collector_dashboards_use_only_documented_connector_and_collector_names(name: str) -> None:
    for promql in _expressions(load(name)):
        _check_against(promql, COLLECTOR_SIDE, COLLECTOR_SIDE_VALUES)


def test_collector_health_groups_by_scrape_labels_only_where_the_collector_has_them() -> None:
    board = load("collector-health.json")
    for promql in _expressions(board):
        assert grouping_labels(promql) <= {"receiver", "exporter"} | SCRAPE_LABELS, promql


def test_endpoint_latency_panels_show_exemplars() -> None:
    board = load("endpoint.json")
    latency = [p for p in panels(board) if p["type"] != "row" and p["title"].startswith("Latency")]
    assert {p["type"] for p in latency} == {"timeseries", "heatmap"}
    for panel in latency:
        assert panel["targets"] and all(t["exemplar"] for t in panel["targets"]), panel["title"]
        assert all("_bucket{" in t["expr"] for t in panel["targets"])


def test_canary_latency_panels_show_exemplars_of_each_version() -> None:
    """A slow canary is looked into from a slow request of its own: each version's latency
    series offers its exemplars (tracekit records them on every histogram, docs/metrics.md)."""
    board = load("canary.json")
    latency = [p for p in panels(board) if p["type"] == "timeseries"
               and all("histogram_quantile" in t["expr"] for t in p["targets"])]  # fmt: skip
    assert {p["title"] for p in latency} >= {"Latency p95", "Handler duration p95"}
    for panel in latency:
        assert all(t["exemplar"] for t in panel["targets"]), panel["title"]


def test_service_overview_links_each_series_to_its_endpoint_drill_down() -> None:
    board = load("service-overview.json")
    endpoint_uid = STABLE_UIDS["endpoint.json"]
    links = [
        link
        for panel in panels(board)
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    assert links and all(f"/d/{endpoint_uid}/" in link["url"] for link in links)
    assert all("var-service=${__field.labels.service_name}" in link["url"] for link in links)


def test_files_are_stable_pretty_printed_json() -> None:
    """Two-space indentation and a final newline: reviewable diffs after a Grafana export."""
    for name in DASHBOARD_FILES:
        text = (DASHBOARDS / name).read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", name


def test_canary_dashboard_opens_on_the_older_version_as_baseline_and_the_newer_as_canary() -> None:
    """Grafana selects a variable's first value in its sort order: opposite orders pick the
    lowest version as the baseline and the highest as the canary. Sorted as text, 1.10.0 comes
    before 1.9.0: after a 1.9.0 -> 1.10.0 rollout the dashboard opened with the new version as
    the baseline, and a canary's regression read as an improvement (its error ratio difference
    negative)."""
    defined = variables(load("canary.json"))
    baseline, canary = defined["baseline"], defined["canary"]
    assert variable_query(baseline) == variable_query(canary)
    for listed in (["1.10.0", "1.9.0"], ["2.3.0", "2.4.0"]):  # as Prometheus' label API sorts
        chosen = (first_value(baseline, listed), first_value(canary, listed))
        assert chosen == tuple(sorted(listed, key=lambda v: [int(n) for n in v.split(".")]))


@pytest.mark.parametrize("name", ["service-overview.json", "endpoint.json", "messaging.json"])
def test_every_query_follows_the_service_selection_unless_it_says_otherwise(name: str) -> None:
    """A panel that ignored ``$service`` would show other services' numbers under the one
    selected; only a panel whose description says it counts every service may."""
    board = load(name)
    ignoring = [
        panel["title"]
        for panel, target in targets(board)
        if "service" not in references(target["expr"])
        and "every service" not in panel.get("description", "")
    ]
    assert ignoring == []


def test_the_canary_dashboard_offers_every_service_the_canary_command_judges() -> None:
    """``tracekit canary --prometheus`` judges HTTP servers and queue consumers alike: a service
    that only consumes must be offered too, with its versions."""
    from tracekit.canary.prometheus import FAMILIES

    board = load("canary.json")
    for name in ("service", "baseline", "canary"):
        selector, _ = parse_label_values(variable_query(variables(board)[name]))
        offered = re.search(r'__name__=~"([^"]*)"', selector)
        assert offered is not None, selector
        assert set(offered.group(1).split("|")) == {f"{f.histogram}_count" for f in FAMILIES}


_VARIABLE_IN_QUOTES = re.compile(r'\w+\s*(?:=~|!~|!=|=)\s*"[^"]*(?:\$|\[\[)')


@every_dashboard
def test_variables_go_into_matchers_regex_escaped_in_raw_strings(name: str) -> None:
    """Grafana leaves a double quote in a variable's value as it is: inside "...", a service
    named ``shop "eu"`` ends the string early. ``label=~`${var:regex}``` selects it exactly."""
    quoted = [q for q in _expressions(load(name)) if _VARIABLE_IN_QUOTES.search(q)]
    assert quoted == []


# Grafana's per-second units, and its custom "count:<unit>" form with a per-second unit.
_PER_SECOND_UNITS = {"reqps", "mps", "ops", "cps", "eps", "recps"}


def _is_per_second(unit: str | None) -> bool:
    return unit in _PER_SECOND_UNITS or bool(
        unit and unit.startswith("count:") and unit.endswith("/s")
    )


def _plain_rate(expr: str) -> bool:
    """A rate of a count: no quantile, no ratio; a rate of seconds is a share, not a count."""
    return (
        "rate(" in expr
        and "histogram_quantile" not in expr
        and " / " not in expr
        and "_seconds(_total)?" not in expr
        and "_seconds_total" not in expr
    )


@every_dashboard
def test_rates_of_counts_are_shown_per_second(name: str) -> None:
    """A stat reading ``0.4`` under "Failed messages" reads as 0.4 messages; it is per second."""
    unlabelled = [
        panel["title"]
        for panel in panels(load(name))
        if panel["type"] in ("stat", "timeseries")
        and all(_plain_rate(target["expr"]) for target in panel["targets"])
        and not _is_per_second(panel["fieldConfig"]["defaults"].get("unit"))
    ]
    assert unlabelled == []


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_tables_summarise_the_selected_range(name: str) -> None:
    """A table is one instant query at the range's end: over $__rate_interval it showed only the
    last seconds, a quiet route or edge at 0/s with no latency though it served in the range."""
    short = [
        f"{panel['title']} {target['refId']}"
        for panel, target in targets(load(name))
        if panel["type"] == "table" and "$__rate_interval" in target["expr"]
    ]
    assert short == []


def test_client_minus_server_latency_leaves_messaging_edges_out() -> None:
    """On a messaging edge the servicegraph connector's client time is the publish span and its
    server time the handler span: their difference is no queue wait (that lies between the two,
    in neither) and mostly negative. Only request/response edges have network time there."""
    board = load("service-graph.json")
    panel = next(p for p in panels(board) if p["title"].startswith("Client minus server"))
    for target in panel["targets"]:
        found = selectors(target["expr"], frozenset(COLLECTOR_SIDE))
        assert len(found) == 2
        for selector in found:
            assert ("connection_type", "!=", "messaging_system") in selector.matchers


def test_the_backlog_panel_says_a_rabbitmq_exchange_has_no_line() -> None:
    """A publish to a RabbitMQ exchange is counted under the exchange and its consumption
    under the queue (docs/queues/rabbitmq.md): sent minus consumed per destination matches no
    pair, and the panel stayed empty however far the consumers fell behind, with nothing
    saying why (seen with a real fanout exchange and pika consumer)."""
    board = load("messaging.json")
    (panel,) = [p for p in panels(board) if p["title"] == "Publish minus process rate"]
    assert "RabbitMQ exchange" in panel["description"]


def test_the_endpoint_route_and_method_lists_follow_the_selected_version() -> None:
    """A service served as 1.0 (gunicorn) and as 1.1 (uvicorn) with a route only 1.1 has: with
    version 1.0 selected, the route list still offered that route, and picking it (the first in
    the list) left five of the dashboard's panels on No data. The route and method lists now
    hold what the selected versions served."""
    definitions = variables(load("endpoint.json"))
    for name in ("route", "method"):
        assert "version" in references(variable_query(definitions[name])), name
