"""Every setting in the configs is one its component takes: the collector refuses to start on
any other key, which the pipeline and catalogue checks (names only) let through."""

from __future__ import annotations

from .conftest import FreshConfig
from .otelcol import Config
from .settings import settings_problems


def test_every_setting_is_one_its_component_takes(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    assert settings_problems(config) == [], name


def test_a_misspelt_setting_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    limiter = config["processors"]["memory_limiter"]
    limiter["limit_percent"] = limiter.pop("limit_percentage")
    assert settings_problems(config) == ["memory_limiter: invalid key 'limit_percent'"]


def test_a_misspelt_nested_setting_is_caught(fresh: FreshConfig) -> None:
    config = fresh("sidecar.yaml")
    config["exporters"]["otlp/tempo"]["sending_queue"]["storge"] = "file_storage/queue"
    config["processors"]["resource/scrape-target"]["attributes"][0]["actoin"] = "delete"
    assert settings_problems(config) == [
        "resource/scrape-target.attributes[0]: invalid key 'actoin'",
        "otlp/tempo.sending_queue: invalid key 'storge'",
    ]


def test_a_component_without_a_catalogue_is_reported(fresh: FreshConfig) -> None:
    config = fresh("local.yaml")
    config["exporters"]["kafka"] = {"brokers": ["kafka:9092"]}
    assert settings_problems(config) == ["exporter 'kafka': no settings catalogue; add one"]
