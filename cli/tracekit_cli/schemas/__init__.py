"""The JSON Schemas of ``tracekit search --format json`` and ``tracekit services --format json``.

Those documents are the command's own (``trace``, ``diff`` and ``canary`` print documents the
library builds, and their schemas ship beside them: ``tracekit.path.load_schema()`` and so on).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["load_schema"]

_COMMANDS = ("search", "services")


def load_schema(command: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``tracekit COMMAND --format json`` as a dict:
    ``search`` (``tracekit.search/v1``) or ``services`` (``tracekit.services/v1``)."""
    if command not in _COMMANDS:
        raise ValueError(f"no schema for {command!r}: one of {', '.join(_COMMANDS)}")
    text = resources.files(__name__).joinpath(f"{command}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
