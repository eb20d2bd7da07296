"""Reading tracekit's dashboards the way Grafana does: panels, targets, variables, interpolation.

Only what the tests need of Grafana's classic dashboard model: panels nest one level inside rows;
template variables are referenced as ``$name``, ``${name}``, ``${name:format}`` or ``[[name]]``;
names starting with ``__`` are Grafana's built-ins. Interpolation follows the Prometheus data
source as Grafana ships it (the ``prometheusSpecialCharsInLabelValues`` feature toggle off): a
variable that is multi-value or has "All" becomes a regex-escaped alternation ``(a|b)`` (its
custom ``allValue`` for "All"), escaped once more for the PromQL string literal it sits in; any
other variable is inserted with only backslashes and single quotes escaped (a double quote goes
in as it is). A format named in ``${name:format}`` replaces the data source's escaping: ``regex``
(Grafana's regex escape, for a PromQL raw string), ``doublequote`` and ``raw``; a custom
``allValue`` goes in unformatted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
DASHBOARD_FILES = (
    "service-overview.json",
    "endpoint.json",
    "messaging.json",
    "canary.json",
    "service-graph.json",
    "collector-health.json",
)
# Dashboards on metrics that only the OpenTelemetry Collector produces (cannot be scraped here).
COLLECTOR_DASHBOARDS = ("service-graph.json", "collector-health.json")
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
ALL = "$__all"
# Grafana's range and interval macros, at the values a 1 s scrape interval gives.
MACROS = {"__rate_interval": "5s", "__interval": "1s", "__range": "10s"}

_REFERENCE = re.compile(r"\$(\w+)|\$\{(\w+)(?::([^}]*))?\}|\[\[(\w+)(?::([^\]]*))?\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.S)
_REGEX_SPECIAL = re.compile(r"([$^*+?.()|{}\[\]'])")
_GRAFANA_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|\[\]{}/])")  # Grafana's regex format


def load(name: str) -> dict[str, Any]:
    """One dashboard file, parsed."""
    board: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return board


def panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(board: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of the dashboard."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def variables(board: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Template variables by name, in dashboard order."""
    return {var["name"]: var for var in board["templating"]["list"]}


def strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def references(text: str) -> set[str]:
    """Names of the variables ``text`` refers to (built-ins excluded)."""
    names = {
        next(group for group in match.groups() if group) for match in _REFERENCE.finditer(text)
    }
    return {name for name in names if not name.startswith("__")}


def variable_query(var: Mapping[str, Any]) -> str:
    """The query string of a query variable (classic string or editor object form)."""
    query = var["query"]
    return str(query["query"] if isinstance(query, Mapping) else query)


def parse_label_values(query: str) -> tuple[str, str]:
    """(series selector, label) of a ``label_values(selector, label)`` variable query."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values(selector, label) query: {query!r}")
    return match["selector"].strip(), match["label"]


def resolved(
    board: Mapping[str, Any],
    listing: Callable[[str, str], list[str]],
    pick: Callable[[Mapping[str, Any], list[str]], list[str]],
) -> dict[str, list[str]]:
    """Each variable's chosen values, in dashboard order as Grafana chains them (the data
    source variable left out): ``listing(selector, label)`` lists what a ``label_values``
    query finds, its selector holding the values chosen before, and ``pick(variable, listed)``
    chooses."""
    definitions = variables(board)
    chosen: dict[str, list[str]] = {}
    for name, var in list(definitions.items())[1:]:
        selector, label = parse_label_values(variable_query(var))
        chosen[name] = pick(var, listing(interpolate(selector, definitions, chosen), label))
    return chosen


def first_value(var: Mapping[str, Any], listed: list[str]) -> str:
    """The value Grafana selects in a variable when the dashboard opens: the first of ``listed``
    in the variable's ``sort`` order (1 and 2: alphabetical, ascending and descending; 7 and 8:
    natural, the numbers within the text compared as numbers, as JavaScript's ``localeCompare``
    with ``numeric`` does; 0: as the data source listed them)."""
    order = var.get("sort", 0)
    if order == 0:
        return listed[0]
    key = _natural_key if order in (7, 8) else None
    return sorted(listed, key=key, reverse=order in (2, 8))[0]


def _natural_key(value: str) -> list[tuple[int, int, str]]:
    return [
        (0, int(part), "") if part[0] in _DIGITS else (1, 0, part)
        for part in re.findall(f"[{_DIGITS}]+|[^{_DIGITS}]+", value)
    ]


_DIGITS = "0123456789"


def _regex_escape(value: str) -> str:
    # Escaped for the regex AND for the PromQL string literal around it: `{` becomes `\\{`.
    return _REGEX_SPECIAL.sub(r"\\\\\1", value.replace("\\", "\\\\\\\\"))


def _plain_escape(value: str) -> str:
    # Grafana's "classic" escape of a single value: a backslash doubled, a single quote made
    # `\\'` (in a PromQL string, a backslash and the quote); a double quote left as it is.
    return value.replace("\\", "\\\\").replace("'", "\\\\'")


def _default_format(var: Mapping[str, Any], chosen: list[str]) -> str:
    if not (var.get("multi") or var.get("includeAll")):
        return _plain_escape(chosen[0])
    if chosen == [ALL]:
        return str(var.get("allValue") or "(" + "|".join(map(_regex_escape, chosen)) + ")")
    if len(chosen) == 1:
        return _regex_escape(chosen[0])
    return "(" + "|".join(_regex_escape(value) for value in chosen) + ")"


def _named_format(name: str, var: Mapping[str, Any], chosen: list[str]) -> str:
    """Grafana's own formats (its format registry), as far as the dashboards use them."""
    if chosen == [ALL]:
        # Grafana inserts a custom "All" value as it is, whatever the format (but text and
        # percentencode, which the dashboards do not use).
        if var.get("allValue"):
            return str(var["allValue"])
        raise NotImplementedError("a named format of an 'All' without allValue is not modelled")
    if name == "regex":
        escaped = [_GRAFANA_REGEX_SPECIAL.sub(r"\\\1", value) for value in chosen]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if name == "doublequote":
        return ",".join('"' + value.replace('"', '\\"') + '"' for value in chosen)
    if name == "raw":
        return ",".join(chosen)
    raise NotImplementedError(f"the Grafana format {name!r} is not modelled here")


def interpolate(
    text: str, definitions: Mapping[str, Mapping[str, Any]], chosen: Mapping[str, list[str]]
) -> str:
    """``text`` with Grafana's macros and the ``chosen`` values of its variables substituted."""

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[4]
        if name in MACROS:
            return MACROS[name]
        if match[3] or match[5]:
            return _named_format(match[3] or match[5], definitions[name], chosen[name])
        return _default_format(definitions[name], chosen[name])

    return _REFERENCE.sub(replace, text)
