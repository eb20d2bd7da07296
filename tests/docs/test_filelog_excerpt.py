"""The filelog receiver excerpt in docs/logs.md reads the JSON lines tracekit writes.

No collector runs here, so the test restates what the excerpt's stanza operators do with a line
(after ``json_parser``, the line's keys are ``attributes.<key>``): a ``move`` whose ``from`` field
is missing fails, and the collector logs an error for that line, unless its ``if`` skips it.
The lines come from a real service: one logged inside a request, one outside any.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from doc_blocks import ROOT, blocks

SERVICE = """
    import logging
    import tracekit
    from opentelemetry import trace
    from tracekit.logs import json_stdout_handler

    tracekit.init("orders")
    logging.getLogger().addHandler(json_stdout_handler())
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("orders").info("orders service started")
    tracekit.correlation.set_correlation_id("checkout-77")
    with trace.get_tracer("orders").start_as_current_span("charge"):
        logging.getLogger("orders").info("charging order 7")
    tracekit.shutdown()
"""
_ATTRIBUTE = re.compile(r'attributes(?:\.(\w+)|\["([^"]+)"\])')
_PRESENT = re.compile(r"\s*attributes\.(\w+) != nil\s*")


def _operators() -> list[dict[str, Any]]:
    """The operators of the excerpt's filelog receiver."""
    (excerpt,) = [b for b in blocks(ROOT / "docs" / "logs.md") if "filelog:" in b.text]
    operators: list[dict[str, Any]] = yaml.safe_load(excerpt.text)["receivers"]["filelog"][
        "operators"
    ]
    return operators


def _lines() -> list[dict[str, Any]]:
    """The lines a service writes: outside a request, then inside one."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env = {**clean, "TRACEKIT_EXPORTER": "none", "TRACEKIT_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SERVICE)], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _key(field: str) -> str:
    """``attributes.level`` or ``attributes["correlation.id"]`` -> the line's key."""
    match = _ATTRIBUTE.fullmatch(field)
    assert match, f"not an attributes field: {field}"
    return match[1] or match[2]


def _move_fails(operator: dict[str, Any], line: dict[str, Any]) -> bool:
    """Whether a ``move`` fails on ``line``: its field is missing and no ``if`` skips it."""
    condition = operator.get("if")
    if condition is not None:
        present = _PRESENT.fullmatch(condition)
        assert present, f"the test knows only 'attributes.KEY != nil', not {condition!r}"
        if present[1] not in line:
            return False
    return _key(operator["from"]) not in line


def test_every_line_passes_the_move_operators_without_an_error() -> None:
    """A line logged outside a request has no correlation_id: the move of it failed, and the
    collector logged an error for every such line (start-up, background work)."""
    moves = [op for op in _operators() if op["type"] == "move"]
    for line in _lines():
        failing = [op["from"] for op in moves if _move_fails(op, line)]
        assert not failing, (line["message"], failing)


def test_the_fields_the_excerpt_parses_are_the_ones_tracekit_writes() -> None:
    outside, inside = _lines()
    (parser,) = [op for op in _operators() if op["type"] == "json_parser"]
    (trace_parser,) = [op for op in _operators() if op["type"] == "trace_parser"]
    read = [parser[name]["parse_from"] for name in ("timestamp", "severity")]
    read += [trace_parser[name]["parse_from"] for name in ("trace_id", "span_id")]
    assert all(_key(field) in inside for field in read), read
    layout = parser["timestamp"]["layout"].replace("%L", "%f")  # stanza's %L: milliseconds
    logged = datetime.strptime(inside["time"], layout).replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - logged) < timedelta(minutes=5)
    assert "correlation_id" not in outside


# The level names stanza's severity parser knows without a mapping (its default preset:
# pkg/stanza/operator/helper/severity_builder.go, getBuiltinMapping, compared lower-cased). A
# name outside it is kept as text with severity 0, "unspecified", below DEBUG.
STANZA_DEFAULT_LEVELS = frozenset(
    {"trace", "debug", "info", "warn", "warning", "error", "err", "fatal"}
)


def test_every_python_level_gets_a_severity() -> None:
    """CRITICAL is no name of stanza's default mapping: a CRITICAL line arrived with severity
    number 0 (unspecified), below every DEBUG line, unless the excerpt maps it."""
    (parser,) = [op for op in _operators() if op["type"] == "json_parser"]
    mapping = parser["severity"].get("mapping", {})
    mapped = {str(v).lower() for values in mapping.values() for v in _as_list(values)}
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    unknown = [lv for lv in levels if lv.lower() not in STANZA_DEFAULT_LEVELS | mapped]
    assert not unknown, unknown


def _as_list(values: Any) -> list[Any]:
    return values if isinstance(values, list) else [values]
