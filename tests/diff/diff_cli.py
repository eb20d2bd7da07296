"""``tracekit diff`` run as a user runs it, for this directory's tests (importable through the
path conftest.py sets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from click.testing import CliRunner

from tracekit.diff import load_schema
from tracekit_cli.main import cli


def diff_document(store: Path, a: str, b: str, *options: str) -> tuple[int, dict[str, Any]]:
    """``tracekit diff a b --format json`` on ``store``: its exit status and its document, which
    the published schema validates; nothing is written on stderr."""
    result = CliRunner().invoke(
        cli, ["diff", a, b, "--store", str(store), "--format", "json", *options]
    )
    assert result.stderr == "", result.stderr
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, load_schema())
    return result.exit_code, doc
