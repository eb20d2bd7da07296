"""The JSON Schema of ``tracekit trace --format json``, shipped inside the package."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["load_schema"]


def load_schema() -> dict[str, Any]:
    """The ``tracekit.path/v1`` JSON Schema (draft 2020-12) as a dict."""
    # imported here: importlib.resources costs ~15 ms and `tracekit trace` never needs it
    from importlib import resources

    text = resources.files("tracekit.path").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
