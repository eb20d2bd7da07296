"""Every ``tracekit`` command has help text and a section in docs/cli.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tracekit_cli.main import COMMANDS, cli

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_help_and_documentation(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    description = result.output.split("\n\n")[1].strip()
    assert len(description) > 20, f"{name} needs a one-line description"
    assert f"## `tracekit {name}" in DOCS, f"docs/cli.md has no section for {name}"


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output
