"""Grafana provisioning files: data sources linked to each other, and the dashboard provider.

No Grafana server can run here. The checks cover what links the three data sources (exemplar
label -> Tempo, trace -> Loki logs, log line -> Tempo) against what tracekit really emits: the
exemplar labels of ``tracekit.metrics.exemplar_of``, a log line from tracekit's own
``JsonFormatter``, made inside a real SDK span with a correlation ID, and a record tracekit
exports over OTLP, as Loki's OTLP ingestion keeps it, against the query a span's logs link runs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_model import DASHBOARDS
from metric_contract import selectors, tracekit_metrics
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tracekit import correlation
from tracekit.logs import JsonFormatter, LogExportHandler, current_fields
from tracekit.metrics import exemplar_of

PROVISIONING = DASHBOARDS / "provisioning"
COLLECTOR_CONFIG = DASHBOARDS.parent / "collector-config"
# Grafana expands $VAR / ${VAR} from its environment in provisioning files; `$$` is a literal `$`.
_UNESCAPED_DOLLAR = re.compile(r"(?<!\$)\$(?!\$)")


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROVISIONING / name).read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    return document


def _as_grafana_reads(value: Any) -> Any:
    """The value after Grafana's environment expansion (only `$$` -> `$` applies here)."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, dict):
        return {key: _as_grafana_reads(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_grafana_reads(item) for item in value]
    return value


@pytest.fixture(scope="module")
def sources() -> dict[str, dict[str, Any]]:
    listed = _as_grafana_reads(_load("datasources.yaml"))["datasources"]
    by_type = {source["type"]: source for source in listed}
    assert sorted(by_type) == ["loki", "prometheus", "tempo"]
    assert len({source["uid"] for source in listed}) == len(listed)
    return by_type


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in _strings(item)]


def test_no_dollar_is_left_for_grafana_to_expand_from_its_environment() -> None:
    """Grafana expands values (not comments) after parsing: a lone `$` would be eaten."""
    values = _strings(_load("datasources.yaml"))
    assert any("$$" in value for value in values)
    assert [value for value in values if _UNESCAPED_DOLLAR.search(value)] == []


def test_prometheus_exemplars_open_the_trace_in_tempo(
    sources: dict[str, dict[str, Any]], tracer_provider: Any
) -> None:
    destinations = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert destinations == [
        {
            "name": "trace_id",
            "datasourceUid": sources["tempo"]["uid"],
            "urlDisplayLabel": "Open trace",
        }
    ]
    with tracer_provider.get_tracer("dash").start_as_current_span("request") as span:
        labels = exemplar_of(span)
    assert labels is not None and destinations[0]["name"] in labels
    assert labels["trace_id"] == f"{span.get_span_context().trace_id:032x}"


def test_tempo_links_traces_to_loki_logs_and_prometheus(sources: dict[str, dict[str, Any]]) -> None:
    tempo = sources["tempo"]["jsonData"]
    to_logs = tempo["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == sources["loki"]["uid"]
    assert to_logs["filterByTraceID"] is True
    assert tempo["serviceMap"]["datasourceUid"] == sources["prometheus"]["uid"]
    to_metrics = tempo["tracesToMetrics"]
    assert to_metrics["datasourceUid"] == sources["prometheus"]["uid"]
    known = frozenset(tracekit_metrics())
    for query in to_metrics["queries"]:
        assert "{$__tags}" in query["query"]
        assert all(s.names for s in selectors(query["query"], known)), query


def _trace_to_logs_query(options: dict[str, Any], span_tags: dict[str, str], trace_id: str) -> str:
    """The LogQL a span's "Logs for this span" link runs (Grafana's Tempo trace view, Loki
    target): the custom query, else ``{${__tags}}`` with a line filter on the trace ID when
    ``filterByTraceID`` is on; ``${__tags}`` holds ``label="value"`` of each mapped tag."""
    tags = ", ".join(
        f'{tag.get("value") or tag["key"]}="{span_tags[tag["key"]]}"'
        for tag in options["tags"]
        if tag["key"] in span_tags
    )
    if options.get("customQuery"):
        query = str(options["query"])
    else:
        query = "{${__tags}}" + (' |="${__span.traceId}"' if options["filterByTraceID"] else "")
    return query.replace("${__tags}", tags).replace("${__span.traceId}", trace_id)


_LOGQL = re.compile(r"^\{(?P<selector>[^}]*)\}(?P<stages>.*)$")
_MATCHER = re.compile(r'\s*(\w+)="([^"]*)"\s*')
_STAGE = re.compile(r'\s*(?:\|=\s*"(?P<contains>[^"]*)"|\|\s*(?P<label>\w+)="(?P<value>[^"]*)")')


def _loki_selects(query: str, entry: dict[str, Any]) -> bool:
    """Whether Loki returns ``entry`` (stream labels, line, structured metadata) for ``query``:
    a stream selector of ``=`` matchers, then line filters ``|= "text"`` (on the line only) and
    label filters ``| name="value"`` (on labels and structured metadata). Anything else fails."""
    parsed = _LOGQL.match(query.strip())
    assert parsed, query
    matchers = [_MATCHER.fullmatch(matcher) for matcher in parsed["selector"].split(",")]
    selected = all(m and entry["labels"].get(m[1]) == m[2] for m in matchers)
    stages, position = parsed["stages"].rstrip(), 0
    while position < len(stages):
        stage = _STAGE.match(stages, position)
        assert stage, f"unsupported LogQL in {query!r}"
        position = stage.end()
        if stage["contains"] is not None:
            selected = selected and stage["contains"] in entry["line"]
        else:
            known = {**entry["labels"], **entry["metadata"]}
            selected = selected and known.get(stage["label"]) == stage["value"]
    return selected


def _otlp_log_as_loki_keeps_it(tracer_provider: Any) -> tuple[str, dict[str, Any]]:
    """(trace id, Loki entry) of a record tracekit exports over OTLP inside a span. Loki's OTLP
    ingestion keeps the body as the line, ``service.name`` as the ``service_name`` label, and
    the record's trace ID as the structured metadata ``trace_id`` (lower-case hex)."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "orders"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    with tracer_provider.get_tracer("dash").start_as_current_span("charge") as span:
        record = logging.LogRecord("shop", logging.INFO, __file__, 1, "paid %s", ("7",), None)
        LogExportHandler(provider).emit(record)
    (exported,) = exporter.get_finished_logs()
    log = exported.log_record
    assert log.trace_id == span.get_span_context().trace_id
    entry = {
        "labels": {"service_name": exported.resource.attributes["service.name"]},
        "line": str(log.body),
        "metadata": {"trace_id": f"{log.trace_id:032x}", "span_id": f"{log.span_id:016x}"},
    }
    return f"{log.trace_id:032x}", entry


def test_a_spans_logs_link_finds_the_logs_the_sidecar_sent_to_loki(
    sources: dict[str, dict[str, Any]], tracer_provider: Any
) -> None:
    """Tempo's "Logs for this span" opens the trace's log lines that sidecar.yaml sent to Loki
    over OTLP, and not those of another trace of the same service."""
    trace_id, entry = _otlp_log_as_loki_keeps_it(tracer_provider)
    assert entry["line"] == "paid 7"
    options = sources["tempo"]["jsonData"]["tracesToLogsV2"]
    span_tags = {"service.name": "orders"}
    assert _loki_selects(_trace_to_logs_query(options, span_tags, trace_id), entry)
    other_trace = "0af7651916cd43dd8448eb211c80319c"
    assert not _loki_selects(_trace_to_logs_query(options, span_tags, other_trace), entry)


def test_loki_derived_fields_point_at_tempo_with_the_otlp_metadata_names(
    sources: dict[str, dict[str, Any]],
) -> None:
    fields = sources["loki"]["jsonData"]["derivedFields"]
    assert {f["datasourceUid"] for f in fields} == {sources["tempo"]["uid"]}
    labels = {f["matcherRegex"] for f in fields if f["matcherType"] == "label"}
    # Loki's OTLP ingestion stores the record's trace ID as trace_id and the attribute
    # correlation.id (tracekit.logs) as correlation_id: dots become underscores.
    assert labels == {"trace_id", "correlation_id"}
    for field in fields:
        assert "${__value.raw}" in field["url"]


def _json_log_line(trace_id_holder: list[str], tracer_provider: Any) -> str:
    token = correlation.set_correlation_id("order-7f3a-checkout")
    try:
        with tracer_provider.get_tracer("dash").start_as_current_span("handler") as span:
            record = logging.LogRecord("shop", logging.INFO, __file__, 1, "paid", None, None)
            record.__dict__.update(current_fields())
            trace_id_holder.append(f"{span.get_span_context().trace_id:032x}")
    finally:
        correlation.reset_correlation_id(token)
    return JsonFormatter().format(record)


def test_loki_regex_fields_extract_ids_from_a_real_tracekit_json_line(
    sources: dict[str, dict[str, Any]], tracer_provider: Any
) -> None:
    trace_ids: list[str] = []
    line = _json_log_line(trace_ids, tracer_provider)
    regexes = {
        f["name"]: re.compile(f["matcherRegex"])
        for f in sources["loki"]["jsonData"]["derivedFields"]
        if f["matcherType"] == "regex"
    }
    found = {name: regex.search(line) for name, regex in regexes.items()}
    assert {name: m.group(1) if m else None for name, m in found.items()} == {
        "TraceID (JSON line)": trace_ids[0],
        "CorrelationID (JSON line)": "order-7f3a-checkout",
    }


def test_dashboard_provider_loads_the_tracekit_folder() -> None:
    (provider,) = _load("dashboards.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "tracekit"
    assert Path(provider["options"]["path"]).is_absolute()
    readme = (DASHBOARDS / "README.md").read_text(encoding="utf-8")
    assert provider["options"]["path"] in readme, "the README says where to put the JSON files"


def test_grafana_assumes_the_scrape_interval_the_collectors_scrape_the_services_at(
    sources: dict[str, dict[str, Any]],
) -> None:
    """``$__rate_interval`` is four of the data source's scrape interval at least: were it
    shorter than the interval the series arrive at, a rate window would hold one sample and
    every rate panel show no data (dashboards/README.md says so for direct scrapes)."""
    assumed = sources["prometheus"]["jsonData"]["timeInterval"]
    configs = ("sidecar.yaml", "sidecar-aws.yaml", "k8s/configmap.yaml")
    text = "\n".join((COLLECTOR_CONFIG / name).read_text(encoding="utf-8") for name in configs)
    intervals = re.findall(
        r"job_name: \$\{env:OTEL_SERVICE_NAME[^}]*\}\s+scrape_interval: (\S+)", text
    )
    assert intervals == [assumed] * len(configs)
