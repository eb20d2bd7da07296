"""The JSON Schema of ``tracekit trace --format json``, shipped inside the package."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_schema() -> dict[str, Any]:
    """The ``tracekit.path/v1`` JSON Schema (draft 2020-12) as a dict."""
    text = resources.files("tracekit.path").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
