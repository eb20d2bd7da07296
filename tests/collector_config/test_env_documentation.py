"""Every ${env:...} in the configs is documented in collector-config/README.md with its default."""

from __future__ import annotations

import re

import pytest

from .otelcol import CONFIG_DIR, Config, config_paths, env_defaults, load

README = CONFIG_DIR / "README.md"
ROW_RE = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|", re.MULTILINE)


def documented() -> dict[str, str]:
    """Variable -> the README's default cell, from the Variables table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Variables", 1)[1].split("\n## ", 1)[0]
    return {name: cell.strip() for name, cell in ROW_RE.findall(section)}


def all_env_defaults() -> dict[str, set[str | None]]:
    """Every variable across every config, with every default it is given."""
    merged: dict[str, set[str | None]] = {}
    for path in config_paths():
        for name, defaults in env_defaults(load(path)).items():
            merged.setdefault(name, set()).update(defaults)
    return merged


def test_every_variable_is_documented(any_config: tuple[str, Config]) -> None:
    name, config = any_config
    missing = set(env_defaults(config)) - set(documented())
    assert not missing, f"{name}: undocumented variables {sorted(missing)}"


@pytest.mark.parametrize("variable", sorted(all_env_defaults()))
def test_documented_default_matches_config(variable: str) -> None:
    cell = documented()[variable]
    for default in all_env_defaults()[variable]:
        if default is None:
            assert cell.startswith("required"), f"{variable} has no default; README says {cell!r}"
        elif default == "":
            assert cell.startswith("empty"), f"{variable} defaults to empty; README says {cell!r}"
        else:
            assert f"`{default}`" in cell, f"{variable}: README default {cell!r} lacks `{default}`"


def test_readme_documents_no_stale_variables() -> None:
    stale = set(documented()) - set(all_env_defaults())
    assert not stale, f"README documents variables no config uses: {sorted(stale)}"


def test_readme_names_every_config_and_how_to_validate() -> None:
    text = README.read_text(encoding="utf-8")
    for path in config_paths():
        assert f"`{path.name}`" in text
    assert "otelcol-contrib validate --config=" in text
    assert "cannot be installed" in text


def test_a_missing_row_is_noticed() -> None:
    config = load(CONFIG_DIR / "sidecar.yaml")
    config["exporters"]["otlp/tempo"]["endpoint"] = "${env:TEMPO_GRPC_URL:-tempo:4317}"
    assert set(env_defaults(config)) - set(documented()) == {"TEMPO_GRPC_URL"}
