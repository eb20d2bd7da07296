"""The configs agree with tracekit's defaults: OTLP ports, metrics port, correlation attribute."""

from __future__ import annotations

import re

from . import tracekit_defaults as tk
from .habits import LOOPBACK
from .otelcol import (
    CONFIG_DIR,
    Config,
    config_paths,
    host_of,
    load,
    port_of,
    strings,
    with_defaults,
)

SIDECARS = ("sidecar.yaml", "sidecar-aws.yaml")


def otlp_protocols(config: Config) -> dict[str, str]:
    """protocol -> endpoint of the otlp receiver."""
    protocols = config["receivers"]["otlp"]["protocols"]
    return {name: settings["endpoint"] for name, settings in protocols.items()}


def test_otlp_receivers_listen_on_the_standard_ports(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    endpoints = otlp_protocols(config)
    assert port_of(endpoints["http"]) == tk.OTLP_HTTP_PORT, name
    assert port_of(endpoints["grpc"]) == tk.OTLP_GRPC_PORT, name


def test_sidecars_receive_what_the_app_sends_by_default() -> None:
    assert f"http://localhost:{tk.OTLP_HTTP_PORT}" == tk.APP_OTLP_ENDPOINT
    for name in SIDECARS:
        http = with_defaults(otlp_protocols(load(CONFIG_DIR / name))["http"])
        # The app shares the task/pod network namespace: its localhost reaches the loopback.
        assert http == f"127.0.0.1:{tk.OTLP_HTTP_PORT}", name


def test_sidecars_take_otlp_from_their_own_task_or_pod_only() -> None:
    """Bound on every interface, a sidecar took OTLP from any workload that reaches the pod or
    task IP, unauthenticated: spans, logs and metrics under this service's name, and series of
    any cardinality remote-written into Prometheus. Only its health check is for the outside
    (the kubelet probes the pod IP)."""
    for name in SIDECARS:
        config = load(CONFIG_DIR / name)
        for protocol, endpoint in otlp_protocols(config).items():
            assert host_of(endpoint) in LOOPBACK, (name, protocol, with_defaults(endpoint))
        health = config["extensions"]["health_check"]["endpoint"]
        assert host_of(health) == "0.0.0.0", name


def test_sidecars_scrape_the_app_metrics_port_and_their_own_telemetry() -> None:
    for name in SIDECARS:
        app, own = load(CONFIG_DIR / name)["receivers"]["prometheus"]["config"]["scrape_configs"]
        (target,) = app["static_configs"][0]["targets"]
        assert f"${{env:{tk.METRICS_PORT_ENV}:-" in target, name
        assert with_defaults(target) == f"localhost:{tk.METRICS_PORT}", name
        assert app["metrics_path"] == tk.METRICS_PATH, name
        # the collector serves its own metrics on localhost:8888 by default (collector-health)
        assert own["static_configs"][0]["targets"] == ["localhost:8888"], name


def test_xray_indexes_the_correlation_attribute() -> None:
    exporter = load(CONFIG_DIR / "sidecar-aws.yaml")["exporters"]["awsxray"]
    assert tk.CORRELATION_ATTR in exporter["indexed_attributes"]


def xray_annotation_key(attribute: str) -> str:
    """The annotation key the awsxray exporter writes for an indexed attribute: letters, digits
    and dots kept, anything else an underscore (internal/translator/segment.go fixAnnotationKey;
    dots are kept since the feature gate exporter.xray.allowDot went beta in v0.97.0, so in
    ADOT v0.43.3, which vendors the exporter at v0.117.0, and in otelcol-contrib since)."""
    return re.sub(r"[^0-9A-Za-z.]", "_", attribute)


def test_readme_searches_x_ray_by_the_annotation_key_the_exporter_writes() -> None:
    """The README and sidecar-aws.yaml told users to search `annotation.correlation_id = "<id>"`,
    but the exporter keeps the dot: the annotation is `correlation.id`, so the search matched no
    trace. X-Ray's filter language names a key with dots in brackets, `annotation[key]`, as AWS's
    Application Signals searches do (`annotation[aws.local.operation] = "GET /api/orders"`)."""
    key = xray_annotation_key(tk.CORRELATION_ATTR)
    assert key == "correlation.id"
    search = f'`annotation[{key}] = "<id>"`'
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    config = (CONFIG_DIR / "sidecar-aws.yaml").read_text(encoding="utf-8")
    assert search in readme
    assert search.strip("`") in config
    for text in (readme, config):
        assert "annotation.correlation_id" not in text
        assert "annotation `correlation_id`" not in text


def test_correlation_attribute_is_spelled_one_way(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    spellings = {s for s in strings(config) if s.startswith("correlation")}
    assert spellings <= {tk.CORRELATION_ATTR}, name


def test_correlation_id_is_never_a_metric_dimension() -> None:
    connectors = load(CONFIG_DIR / "gateway-sampling.yaml")["connectors"]
    span_dims = [d["name"] for d in connectors["spanmetrics"]["dimensions"]]
    graph_dims = connectors["servicegraph"]["dimensions"]
    assert tk.CORRELATION_ATTR not in span_dims + graph_dims


def test_tracekit_collector_is_a_drop_in_for_the_app_default() -> None:
    """README: a service alone exports straight to `tracekit collector` with no settings."""
    assert tk.TRACEKIT_COLLECTOR_HOST == "127.0.0.1"
    assert tk.TRACEKIT_COLLECTOR_PORT == tk.OTLP_HTTP_PORT
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert f"`{tk.TRACEKIT_COLLECTOR_HOST}:{tk.TRACEKIT_COLLECTOR_PORT}`" in readme


def test_local_flavour_forwards_to_tracekit_collector_without_a_loop() -> None:
    config = load(CONFIG_DIR / "local.yaml")
    target = config["exporters"]["otlphttp/tracekit"]["endpoint"]
    assert with_defaults(target).startswith(f"http://{tk.TRACEKIT_COLLECTOR_HOST}:")
    # The collector itself holds 4318, so the receiver must listen elsewhere (README says how).
    assert port_of(target) != port_of(otlp_protocols(config)["http"])
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert f"tracekit collector --port {port_of(target)}" in readme
    assert set(config["service"]["pipelines"]) == {"traces", "logs"}


def test_gateway_tiers_meet_on_the_same_port() -> None:
    lb = load(CONFIG_DIR / "gateway.yaml")["exporters"]["loadbalancing"]
    sampling = load(CONFIG_DIR / "gateway-sampling.yaml")
    assert lb["routing_key"] == "traceID"
    assert int(lb["resolver"]["dns"]["port"]) == port_of(otlp_protocols(sampling)["grpc"])


def test_gateway_tiers_agree_on_tls() -> None:
    """Tier 1 spoke TLS to tier 2 by default while tier 2's receiver, as shipped, serves
    plaintext: every handshake failed and no span got past tier 1 until a user found the
    variable. As shipped, the sender speaks what the receiver serves."""
    lb = load(CONFIG_DIR / "gateway.yaml")["exporters"]["loadbalancing"]
    grpc = load(CONFIG_DIR / "gateway-sampling.yaml")["receivers"]["otlp"]["protocols"]["grpc"]
    insecure = with_defaults(str(lb["protocol"]["otlp"]["tls"]["insecure"]))
    assert insecure == ("false" if "tls" in grpc else "true")
    # The sidecars' exporter speaks TLS unless told: the README's recipe must tell it.
    tier1 = load(CONFIG_DIR / "gateway.yaml")["receivers"]["otlp"]["protocols"]["grpc"]
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    assert (
        "tls" in tier1
        or "`TEMPO_OTLP_ENDPOINT=<gateway>:4317`, with `TEMPO_INSECURE=true`" in readme
    )


def test_tail_sampling_keeps_errors_slow_and_a_share() -> None:
    processor = load(CONFIG_DIR / "gateway-sampling.yaml")["processors"]["tail_sampling"]
    policies = {p["type"]: p for p in processor["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert int(with_defaults(policies["latency"]["latency"]["threshold_ms"])) > 0
    share = float(with_defaults(policies["probabilistic"]["probabilistic"]["sampling_percentage"]))
    assert 0 < share < 100


def test_every_config_file_is_covered() -> None:
    assert {p.name for p in config_paths()} >= {"sidecar.yaml", "sidecar-aws.yaml", "local.yaml"}


# What the prometheus receiver puts in the resource of every scraped series to describe the
# target (current and pre-1.x semantic conventions), each of which sanitises to a label name
# tracekit's own metrics use or may use (server_port on HTTP client metrics).
SCRAPE_TARGET_ATTRIBUTES = {"server.address", "server.port", "url.scheme", "net.host.name",
                            "net.host.port", "http.scheme"}  # fmt: skip


def scraping_pipelines() -> list[tuple[str, dict[str, list[str]]]]:
    """(file name, pipeline) of every pipeline that takes a prometheus receiver's scrapes."""
    return [
        (path.name, pipe)
        for path in config_paths()
        for pipe in load(path)["service"]["pipelines"].values()
        if any(r.split("/")[0] == "prometheus" for r in pipe["receivers"])
    ]


def test_scraped_target_attributes_never_become_labels() -> None:
    """Remote write with resource_to_telemetry_conversion makes every resource attribute a label
    and joins two that sanitise to the same name with ";" (prometheusremotewrite's
    createAttributes): a pipeline that converts resources of scraped series must drop the
    scrape target's own attributes before the exporter sees them."""
    assert {name for name, _ in scraping_pipelines()} >= {
        *SIDECARS,
        "gateway.yaml",
        "gateway-sampling.yaml",
    }
    for name, pipeline in scraping_pipelines():
        config = load(CONFIG_DIR / name)
        converting = [
            exporter
            for exporter in pipeline["exporters"]
            if config["exporters"][exporter]
            .get("resource_to_telemetry_conversion", {})
            .get("enabled")
        ]
        if "prometheus" not in pipeline["receivers"] or not converting:
            continue
        deleted = {
            action["key"]
            for processor in pipeline["processors"]
            if processor.split("/")[0] == "resource"
            for action in config["processors"][processor]["attributes"]
            if action["action"] == "delete"
        }
        assert deleted >= SCRAPE_TARGET_ATTRIBUTES, name
        assert pipeline["processors"][-1] == "batch", name


def test_each_sampling_instance_writes_series_of_its_own() -> None:
    """Tier 2 scales out, each instance counting its share of the traces into span-metric and
    service-graph series with the same labels (the traced service's): two writers of one series
    make Prometheus see a counter jump between their totals, and rate() reads the jumps as
    resets. An attribute per instance, upserted before remote write, keeps the series apart."""
    config = load(CONFIG_DIR / "gateway-sampling.yaml")
    metrics = config["service"]["pipelines"]["metrics"]
    assert set(metrics["receivers"]) == {"spanmetrics", "servicegraph"}
    per_instance = [
        action
        for processor in metrics["processors"]
        if processor.split("/")[0] == "resource"
        for action in config["processors"][processor]["attributes"]
        if action["action"] == "upsert" and "${env:HOSTNAME" in str(action.get("value"))
    ]
    assert len(per_instance) == 1
    assert metrics["processors"][-1] == "batch"


def test_late_spans_follow_their_traces_sampling_decision() -> None:
    """A consumer that picks a message up after decision_wait sends its spans once the trace was
    decided: with no decision cache they were decided anew, as a trace of their own, so a kept
    trace lost its consumer half (and a dropped one could keep it). The caches remember at least
    a minute of decisions at the expected rate of new traces."""
    processor = load(CONFIG_DIR / "gateway-sampling.yaml")["processors"]["tail_sampling"]
    cache = processor.get("decision_cache") or {}
    a_minute = 60 * int(processor["expected_new_traces_per_sec"])
    assert int(cache.get("sampled_cache_size", 0)) >= a_minute
    assert int(cache.get("non_sampled_cache_size", 0)) >= a_minute


# Where a collector serves its own telemetry: the Prometheus reader of service.telemetry.metrics
# defaults to localhost:8888 (opentelemetry-collector service/telemetry/otelconftelemetry/
# factory.go), so nothing outside the pod can scrape it; the collector must scrape itself.
OWN_TELEMETRY = "localhost:8888"


def scrapes_itself_into_remote_write(config: Config) -> bool:
    """Whether a pipeline scrapes the collector's own telemetry and remote-writes it."""
    for pipe in config["service"]["pipelines"].values():
        jobs = [
            job
            for receiver in pipe["receivers"]
            if receiver.split("/")[0] == "prometheus"
            for job in config["receivers"][receiver]["config"]["scrape_configs"]
        ]
        targets = {t for job in jobs for group in job["static_configs"] for t in group["targets"]}
        remote = any(e.split("/")[0] == "prometheusremotewrite" for e in pipe["exporters"])
        if OWN_TELEMETRY in targets and remote:
            return True
    return False


def test_service_graph_losses_reach_prometheus() -> None:
    """The servicegraph connector emits traces_service_graph_request_total, _request_failed_total
    and the _request_server_seconds / _request_client_seconds histograms, nothing else
    (connector/servicegraphconnector/connector.go, buildMetrics). A hop whose two spans never
    meet within store.ttl, or a span dropped with the store full, is counted only in the
    collector's own telemetry: otelcol_connector_servicegraph_expired_edges and _dropped_spans
    (its internal/metadata/generated_telemetry.go). The sampling tier did not scrape itself, so
    those counts, and its queues and refusals, reached no Prometheus, while the README said the
    hop was "counted as unpaired" under a name the connector never writes."""
    config = load(CONFIG_DIR / "gateway-sampling.yaml")
    assert "servicegraph" in config["connectors"]
    assert scrapes_itself_into_remote_write(config)
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")
    for name in ("expired_edges", "dropped_spans"):
        assert f"`otelcol_connector_servicegraph_{name}_total`" in readme
    assert "counted as unpaired" not in readme


def test_every_deployed_collector_scrapes_itself_into_remote_write() -> None:
    """A collector's queues, refusals and drops are in its own telemetry, served on localhost
    only: the sidecars scraped theirs, the gateways did not, so tier 1's queue of spans waiting
    for tier 2 (and what it refused or dropped) never reached the collector-health dashboard.
    local.yaml runs on a laptop, with no Prometheus to write to."""
    deployed = [path for path in config_paths() if path.name != "local.yaml"]
    assert {path.name for path in deployed} >= {*SIDECARS, "gateway.yaml", "gateway-sampling.yaml"}
    for path in deployed:
        assert scrapes_itself_into_remote_write(load(path)), path.name


# OpenTelemetry's default OTEL_BSP_SCHEDULE_DELAY in every language's SDK: a span waits up to
# this long in its service before its batch leaves.
SDK_EXPORT_DELAY_S = 5.0
# The wait and handling time of one queue hop that the service graph must still draw as an edge.
QUEUE_HOP_BUDGET_S = 20.0
_GO_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """A Go duration of one unit (``500ms``, ``30s``, ``2m``) in seconds."""
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", str(duration))
    assert match, f"not a Go duration: {duration!r}"
    return float(match[1]) * _GO_UNITS[match[2]]


def test_service_graph_pairs_spans_that_arrive_apart() -> None:
    """The servicegraph connector draws an edge only when both spans of a hop (PRODUCER and
    CONSUMER, CLIENT and SERVER) reach it within store.ttl; later, the first is expired and the
    hop counted as unpaired. Each span waits up to the SDK's schedule delay in its service and
    the sidecar's batch timeout before it leaves, so with ttl 5s even an instant hop lost its
    edge when the batches fell badly, and a queue hop of a few seconds always did."""
    config = load(CONFIG_DIR / "gateway-sampling.yaml")
    store = config["connectors"]["servicegraph"]["store"]
    sidecar_batch = seconds(load(CONFIG_DIR / "sidecar.yaml")["processors"]["batch"]["timeout"])
    export_skew = SDK_EXPORT_DELAY_S + sidecar_batch
    assert seconds(store["ttl"]) >= export_skew + QUEUE_HOP_BUDGET_S


def test_service_graph_store_holds_every_edge_for_its_ttl() -> None:
    """A hop to an uninstrumented service never pairs and stays for the whole ttl; when the
    store is full of unexpired edges, the connector drops new spans. It holds one waiting edge
    per trace for a ttl at the rate the tail sampler is sized for."""
    config = load(CONFIG_DIR / "gateway-sampling.yaml")
    store = config["connectors"]["servicegraph"]["store"]
    rate = int(config["processors"]["tail_sampling"]["expected_new_traces_per_sec"])
    assert int(store["max_items"]) >= rate * seconds(store["ttl"])
