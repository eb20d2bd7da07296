"""Production habits: memory_limiter first, nothing the collector removed, disk-backed queues."""

from __future__ import annotations

from .conftest import FreshConfig
from .habits import (
    ADOT,
    CONTRIB,
    batch_problems,
    catalogue_problems,
    memory_limiter_problems,
    persistence_problems,
    placeholder_problems,
    removed_problems,
    storage_references,
)
from .otelcol import CONFIG_DIR, Config, component_type, defined, load, with_defaults


def test_memory_limiter_is_first_everywhere(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert memory_limiter_problems(config) == [], name


def test_batch_comes_last(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert batch_problems(config) == [], name


def test_no_removed_components(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert removed_problems(config) == [], name


def test_components_ship_with_otelcol_contrib(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert catalogue_problems(config, CONTRIB, "otelcol-contrib") == [], name


def test_aws_flavour_loads_on_the_aws_distro() -> None:
    config = load(CONFIG_DIR / "sidecar-aws.yaml")
    assert catalogue_problems(config, ADOT, "the AWS Distro for OpenTelemetry") == []


def test_placeholders_use_the_env_scheme(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert placeholder_problems(config) == [], name


def test_remote_exporters_persist_their_queue(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert persistence_problems(config) == [], name


def test_every_config_has_a_health_check(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    enabled = config["service"].get("extensions") or []
    assert any(component_type(ext) == "health_check" for ext in enabled), name


def test_queue_directories_share_one_volume(any_config: tuple[str, Config]) -> None:
    """Queue storage lives under the one directory the manifests mount."""
    name, config = any_config
    storages = [config["extensions"][ext]["directory"] for ext in storage_references(config)]
    assert len({with_defaults(path) for path in storages}) <= 1, name


def test_removed_logging_exporter_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["exporters"]["logging"] = {"verbosity": "detailed"}
    config["extensions"]["memory_ballast"] = {"size_mib": 64}
    problems = removed_problems(config)
    assert any("'logging'" in p and "use debug" in p for p in problems)
    assert any("'memory_ballast'" in p for p in problems)


def test_limiter_after_batch_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["service"]["pipelines"]["logs"]["processors"] = ["batch", "memory_limiter"]
    assert memory_limiter_problems(config) == [
        "pipeline 'logs': memory_limiter is not the first processor"
    ]
    assert batch_problems(config) == ["pipeline 'logs': batch is not the last processor"]


def test_in_memory_queue_to_remote_backend_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    del config["exporters"]["otlphttp/loki"]["sending_queue"]["storage"]
    assert persistence_problems(config) == [
        "exporter 'otlphttp/loki': queue is not persisted to file_storage",
    ]


def test_remote_write_ahead_log_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["exporters"]["prometheusremotewrite"]["wal"] = {"directory": "/var/lib/otelcol/wal"}
    assert persistence_problems(config) == [
        "exporter 'prometheusremotewrite': its write-ahead log grows without bound"
    ]


def test_loopback_exporter_needs_no_disk_queue(fresh: FreshConfig) -> None:
    config = fresh("local.yaml")
    assert "storage" not in config["exporters"]["otlphttp/tracekit"]["sending_queue"]
    config["exporters"]["otlphttp/tracekit"]["endpoint"] = "https://otel.example.com"
    assert persistence_problems(config) == [
        "exporter 'otlphttp/tracekit': queue is not persisted to file_storage"
    ]


def test_bare_placeholder_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["exporters"]["otlp/tempo"]["endpoint"] = "${TEMPO_ENDPOINT}"
    assert placeholder_problems(config) == ["placeholder ${TEMPO_ENDPOINT} is not ${env:VAR}"]


def test_unknown_exporter_must_be_classified(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["exporters"]["kafka"] = {"brokers": ["kafka:9092"]}
    config["service"]["pipelines"]["logs"]["exporters"].append("kafka")
    assert defined(config, "exporters") >= {"kafka"}
    assert any("unknown persistence story" in p for p in persistence_problems(config))
    assert catalogue_problems(config, CONTRIB, "otelcol-contrib") == [
        "exporter 'kafka' is not in otelcol-contrib"
    ]
