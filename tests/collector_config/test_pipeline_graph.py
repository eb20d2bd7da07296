"""The pipeline graph of every config passes the checks the collector runs at start-up.

The otelcol-contrib binary is not installable here, so `otelcol-contrib validate` cannot run in
CI; these tests re-state its graph rules, and the negative tests prove each rule can fail.
"""

from __future__ import annotations

import pytest
import yaml

from .conftest import EXPECTED, FreshConfig
from .otelcol import CONFIG_DIR, Config, graph_problems, parse


def test_every_flavour_has_its_config() -> None:
    present = {path.name for path in CONFIG_DIR.glob("*.yaml")}
    assert set(EXPECTED) <= present


def test_pipeline_graph_is_valid(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert graph_problems(config) == [], name


def test_undefined_exporter_is_reported(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["service"]["pipelines"]["traces"]["exporters"].append("otlp/jaeger")
    assert "pipeline 'traces' references undefined exporter 'otlp/jaeger'" in graph_problems(config)


def test_unused_processor_is_reported(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["processors"]["batch/unused"] = {}
    assert "processor 'batch/unused' is defined but in no pipeline" in graph_problems(config)


def test_connector_used_only_as_exporter_is_reported(fresh: FreshConfig) -> None:
    config = fresh("gateway-sampling.yaml")
    config["service"]["pipelines"]["metrics"]["receivers"] = ["spanmetrics"]
    problems = graph_problems(config)
    assert any(
        "'servicegraph' must be an exporter in one pipeline and a receiver" in p for p in problems
    )


def test_connector_between_wrong_signals_is_reported(fresh: FreshConfig) -> None:
    config = fresh("gateway-sampling.yaml")
    pipes = config["service"]["pipelines"]
    pipes["logs"] = {"receivers": ["spanmetrics"], "exporters": ["otlp/tempo"]}
    pipes["metrics"]["receivers"] = ["servicegraph"]
    assert any("'spanmetrics' cannot produce logs" in p for p in graph_problems(config))


def test_extension_not_enabled_is_reported(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["service"]["extensions"].remove("file_storage/queue")
    problems = graph_problems(config)
    assert "extension 'file_storage/queue' is defined but not in service.extensions" in problems
    assert "otlp/tempo needs extension 'file_storage/queue', which is not enabled" in problems


def test_pipeline_without_receivers_is_reported(fresh: FreshConfig) -> None:
    config = fresh("local.yaml")
    config["service"]["pipelines"]["logs"]["receivers"] = []
    assert "pipeline 'logs' has no receivers" in graph_problems(config)


def test_duplicate_keys_are_refused_like_the_collector_does() -> None:
    text = (CONFIG_DIR / "local.yaml").read_text(encoding="utf-8")
    doubled = text.replace(
        "processors:\n  memory_limiter:", "processors:\n  batch: {}\n  memory_limiter:"
    )
    with pytest.raises(yaml.YAMLError, match="duplicate key"):
        parse(doubled)
