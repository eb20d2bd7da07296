"""The metric names and labels dashboards may use, and the names and labels a PromQL text uses.

tracekit's own metrics come from the contract table in docs/metrics.md. The collector's metrics
cannot be scraped here (no collector binary), so their names are written down from the
components' documentation, cited next to each list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
# Added by Prometheus itself on scrape; prometheusremotewrite maps service.name and
# service.instance.id of the sender's resource to the same two labels.
SCRAPE_LABELS = frozenset({"job", "instance"})

# matchers may hold Grafana's ${name:format} references; values are "quoted" or `raw`
_SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][\w:]*)?\{(?P<matchers>(?:[^{}]|\$\{[^{}]*\})*)\}")
_MATCHER = re.compile(
    r'(?P<label>\w+)\s*(?P<op>=~|!~|!=|=)\s*(?:"(?P<value>(?:[^"\\]|\\.)*)"|`(?P<raw>[^`]*)`)'
)
_GROUPING = re.compile(r"\b(?:by|without)\s*\((?P<labels>[^)]*)\)")
_DOC_ROW = re.compile(
    r"^\| `(?P<name>\w+)`(?P<suffixes> \([^|]*\))? \| (?P<type>\w+) \| (?P<labels>[^|]*)\|"
)


@dataclass(frozen=True)
class Selector:
    """One ``name{matchers}`` of a PromQL text."""

    names: frozenset[str]  # the metric names it can select among ``known`` ones
    name_pattern: str
    matchers: tuple[tuple[str, str, str], ...]


def selectors(promql: str, known: frozenset[str]) -> list[Selector]:
    """Every series selector of ``promql``; a ``__name__`` regex resolves against ``known``."""
    found = []
    for match in _SELECTOR.finditer(promql):
        matchers = tuple(
            (m["label"], m["op"], m["value"] if m["raw"] is None else m["raw"])
            for m in _MATCHER.finditer(match["matchers"])
        )
        pattern = match["name"] or next((v for lbl, _, v in matchers if lbl == "__name__"), "")
        names = frozenset(n for n in known if re.fullmatch(pattern, n)) if pattern else frozenset()
        found.append(Selector(names, pattern, matchers))
    return found


def grouping_labels(promql: str) -> set[str]:
    """Labels named in ``by (...)`` / ``without (...)`` clauses."""
    return {
        label.strip()
        for match in _GROUPING.finditer(promql)
        for label in match["labels"].split(",")
        if label.strip()
    }


def tracekit_metrics() -> dict[str, frozenset[str]]:
    """Every series name of docs/metrics.md's table, with its labels (``le`` on buckets)."""
    metrics: dict[str, frozenset[str]] = {}
    for line in METRICS_DOC.read_text(encoding="utf-8").splitlines():
        row = _DOC_ROW.match(line)
        if row is None:
            continue
        labels = frozenset(re.findall(r"`(\w+)`", row["labels"]))
        if row["type"] == "histogram":
            for suffix in ("_sum", "_count"):
                metrics[row["name"] + suffix] = labels
            metrics[row["name"] + "_bucket"] = labels | {"le"}
        else:
            metrics[row["name"]] = labels
    return metrics


def _histogram(name: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    return {
        f"{name}_bucket": labels | {"le"},
        f"{name}_sum": labels,
        f"{name}_count": labels,
    }


# --- servicegraph connector -------------------------------------------------------------------
# Source: open-telemetry/opentelemetry-collector-contrib connector/servicegraphconnector/README.md,
# "Metrics" table (labels client, server, connection_type). That table, written for Tempo, also
# lists unpaired and dropped span counters the connector never emits: it counts those in the
# collector's own telemetry (below). The gateway's `dimensions:
# [messaging.system]` (collector-config/gateway-sampling.yaml) adds client_/server_-prefixed
# labels, as the same README describes for `dimensions`.
_EDGE = frozenset(
    {"client", "server", "connection_type", "client_messaging_system", "server_messaging_system"}
)
SERVICE_GRAPH = {
    "traces_service_graph_request_total": _EDGE,
    "traces_service_graph_request_failed_total": _EDGE,
    **_histogram("traces_service_graph_request_server_seconds", _EDGE),
    **_histogram("traces_service_graph_request_client_seconds", _EDGE),
}
# Same README: "Possible values for connection_type: unset, messaging_system, or database".
SERVICE_GRAPH_VALUES = {"connection_type": {"", "messaging_system", "database"}}

# --- spanmetrics connector --------------------------------------------------------------------
# Source: connector/spanmetricsconnector/README.md (metrics `calls` and `duration`, dimensions
# service.name, span.name, span.kind, status.code; histogram unit default `ms`; `namespace`
# prefixes names) and its config default namespace `traces.span.metrics`. Through
# prometheusremotewrite (collector-config/gateway-sampling.yaml) names get Prometheus suffixes:
# the monotonic sum `calls` -> `_calls_total`, the ms histogram -> `_duration_milliseconds_*`.
# The extra dimensions are the gateway's `dimensions:` list, dots turned into underscores.
_SPAN = frozenset(
    {
        "service_name",
        "span_name",
        "span_kind",
        "status_code",
        "http_request_method",
        "http_route",
        "http_response_status_code",
        "messaging_system",
        "messaging_destination_name",
    }
)
SPAN_METRICS = {
    "traces_span_metrics_calls_total": _SPAN,
    **_histogram("traces_span_metrics_duration_milliseconds", _SPAN),
}
# README examples: span_kind="SPAN_KIND_SERVER", status_code="STATUS_CODE_UNSET" / "..._ERROR".
SPAN_METRICS_VALUES = {
    "span_kind": {
        f"SPAN_KIND_{k}"
        for k in ("SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL", "UNSPECIFIED")
    },
    "status_code": {"STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"},
}


# --- collector self-telemetry -----------------------------------------------------------------
# Source: opentelemetry.io/docs/collector/internal-telemetry/ "Lists of internal metrics" (basic
# and normal levels), served on :8888 by the Go Prometheus exporter. Counters gain a `_total`
# suffix there in current releases (open-telemetry/opentelemetry.io#6642 and #6799: the
# Prometheus exporter adds it); older releases (OpenCensus era) exposed them without. Both
# spellings are listed, and the dashboard matches `name(_total)?`. Process metrics likewise gain
# their unit: otelcol_process_memory_rss_bytes, otelcol_process_cpu_seconds_total.
def _with_total(name: str, labels: frozenset[str]) -> dict[str, frozenset[str]]:
    return {name: labels, f"{name}_total": labels}


_ITEMS = ("spans", "metric_points", "log_records")
_RECEIVER = frozenset({"receiver", "transport"})
_EXPORTER = frozenset({"exporter"})
COLLECTOR = {
    **{
        k: v
        for item in _ITEMS
        for k, v in _with_total(f"otelcol_receiver_accepted_{item}", _RECEIVER).items()
    },
    **{
        k: v
        for item in _ITEMS
        for k, v in _with_total(f"otelcol_receiver_refused_{item}", _RECEIVER).items()
    },
    **{
        k: v
        for item in _ITEMS
        for verb in ("sent", "send_failed", "enqueue_failed")
        for k, v in _with_total(f"otelcol_exporter_{verb}_{item}", _EXPORTER).items()
    },
    # connector/servicegraphconnector/documentation.md, "Internal Telemetry": monotonic sums
    # with no attributes of their own.
    **_with_total("otelcol_connector_servicegraph_expired_edges", frozenset()),
    **_with_total("otelcol_connector_servicegraph_dropped_spans", frozenset()),
    "otelcol_exporter_queue_size": _EXPORTER | {"data_type"},
    "otelcol_exporter_queue_capacity": _EXPORTER | {"data_type"},
    "otelcol_process_memory_rss": frozenset(),
    "otelcol_process_memory_rss_bytes": frozenset(),
    **_with_total("otelcol_process_cpu_seconds", frozenset()),
}
COLLECTOR_SIDE = {
    **SERVICE_GRAPH,
    **SPAN_METRICS,
    **{name: labels | SCRAPE_LABELS for name, labels in COLLECTOR.items()},
}
COLLECTOR_SIDE_VALUES = {**SERVICE_GRAPH_VALUES, **SPAN_METRICS_VALUES}
