"""Fixtures for the collector-config tests: every config, parsed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from .otelcol import CONFIG_DIR, Config, config_paths, load

EXPECTED = (
    "sidecar.yaml",
    "sidecar-aws.yaml",
    "local.yaml",
    "gateway.yaml",
    "gateway-sampling.yaml",
)


@pytest.fixture(params=[path.name for path in config_paths()])
def any_config(request: pytest.FixtureRequest) -> tuple[str, Config]:
    """(file name, parsed config) for each collector config in collector-config/."""
    return request.param, load(CONFIG_DIR / request.param)


@pytest.fixture
def fresh() -> FreshConfig:
    """A factory of deep copies, so a test can break a real config without touching others."""
    return FreshConfig()


class FreshConfig:
    """Loads a config by file name and hands out an independent copy."""

    def __call__(self, name: str) -> Config:
        return copy.deepcopy(load(Path(CONFIG_DIR) / name))
