"""The ``tracekit.diff/v1`` JSON document (documented in docs/cli.md, pinned by schema.json).

Times are milliseconds rounded to the microsecond, shares to four decimals and p-values to four
significant digits: what they can honestly claim, and byte-identical from run to run on the same
input. Node ids are positions in the merged tree's node table, stable within one document.
"""

from __future__ import annotations

from typing import Any

from .model import Change, NodeDiff, PairDiff, Share, Side, reasons
from .nodes import Measure, Node
from .set_tests import Test
from .sets import SetDiff, SetMeasure, SetNode, SetSide
from .settings import FailOn

__all__ = ["SCHEMA_ID", "load_schema", "to_json"]

SCHEMA_ID = "tracekit.diff/v1"


def load_schema() -> dict[str, Any]:
    """The ``tracekit.diff/v1`` JSON Schema (draft 2020-12) as a dict."""
    import json
    from importlib import resources

    text = resources.files("tracekit.diff").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def to_json(diff: PairDiff | SetDiff, fail_on: FailOn) -> dict[str, Any]:
    """The ``tracekit.diff/v1`` document of a pair or a set comparison."""
    counted = reasons(diff.changes, fail_on)
    if isinstance(diff, PairDiff):
        form, nodes = _pair(diff, fail_on), [_pair_node(d) for d in diff.nodes]
    else:
        form, nodes = _set(diff, fail_on), [_set_node(n) for n in diff.nodes]
    return {
        "schema": SCHEMA_ID,
        "different": bool(counted),
        "reasons": counted,
        "headline": diff.headline,
        **form,
        "attribution": [_share(s) for s in diff.attribution],
        "changes": [_change(c) for c in diff.changes],
        "nodes": nodes,
        "warnings": list(diff.warnings),
    }


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def _p(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def _pair(diff: PairDiff, fail_on: FailOn) -> dict[str, Any]:
    """What only a pair comparison's document says: its sides, settings and duration change."""
    return {
        "form": "pair",
        "a": _pair_side(diff.a),
        "b": _pair_side(diff.b),
        "settings": _settings(diff.min_delta_ms, diff.min_delta_pct, fail_on),
        "duration_delta_ms": _ms(diff.duration_delta_ns),
    }


def _settings(min_delta_ms: float, min_delta_pct: float, fail_on: FailOn) -> dict[str, Any]:
    return {
        "min_delta_ms": min_delta_ms,
        "min_delta_pct": min_delta_pct,
        "fail_on": fail_on.describe(),
    }


def _pair_side(side: Side) -> dict[str, Any]:
    return {
        "query": side.query,
        "correlation_id": side.correlation_id,
        "trace_ids": list(side.trace_ids),
        "start_unix_nano": side.start_unix_nano,
        "duration_ms": _ms(side.duration_ns),
    }


def _pair_node(found: NodeDiff) -> dict[str, Any]:
    return {
        **_node(found.node, found.status),
        "changed": list(found.changed),
        "a": _measure(found.a),
        "b": _measure(found.b),
    }


def _node(node: Node, status: str) -> dict[str, Any]:
    """Where a node sits in the merged tree and what became of it (the status)."""
    return {
        "id": node.id,
        "parent": node.parent,
        "depth": node.depth,
        "service": node.key.service,
        "name": node.key.name,
        "kind": node.key.kind,
        "sender": node.sender,
        "label": node.label(),
        "status": status,
    }


def _measure(found: Measure | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "calls": found.calls,
        "errors": found.errors,
        "retries": found.retries,
        "start_offset_ms": _ms(found.first_start_ns),
        "duration_ms": _ms(found.duration_ns),
        "self_ms": _ms(found.self_ns),
        "queue_wait_ms": _ms(found.queue_wait_ns),
        "critical_ms": _ms(found.critical_ns),
        "critical_wait_ms": _ms(found.critical_wait_ns),
        "error_messages": list(found.error_messages),
        "retried_after": list(found.retried_after),
    }


def _share(share: Share) -> dict[str, Any]:
    return {
        "node": share.node,
        "component": share.component,
        "delta_ms": _ms(share.delta_ns),
        "share": None if share.share is None else round(share.share, 4),
    }


def _change(change: Change) -> dict[str, Any]:
    return {
        "kind": change.kind,
        "category": change.category,
        "node": change.node,
        "related": list(change.related),
        "message": change.message,
        "delta_ms": change.delta_ms,
        "pct": change.pct,
    }


def _set(diff: SetDiff, fail_on: FailOn) -> dict[str, Any]:
    """What only a set comparison's document says: its sides, settings and duration test."""
    settings = diff.settings
    thresholds = settings.thresholds
    return {
        "form": "set",
        "a": _set_side(diff.a),
        "b": _set_side(diff.b),
        "settings": {
            **_settings(thresholds.min_delta_ms, thresholds.min_delta_pct, fail_on),
            "min_requests": settings.min_requests,
            "alpha": settings.alpha,
            "correction": "holm",
        },
        "duration_delta_ms": _ms(diff.b.mean_ns - diff.a.mean_ns),
        "duration_test": _test(diff.duration_test),
    }


def _set_side(side: SetSide) -> dict[str, Any]:
    return {
        "selector": side.label,
        "requests": side.requests,
        "mean_duration_ms": _ms(side.mean_ns),
        "median_duration_ms": _ms(side.median_ns),
    }


def _set_node(found: SetNode) -> dict[str, Any]:
    return {
        **_node(found.node, found.status),
        "contribution_ms": _ms(found.contribution_ns),
        "a": _set_measure(found.a),
        "b": _set_measure(found.b),
        "tests": [_test(t) for t in found.tests],
    }


def _set_measure(found: SetMeasure | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "requests": found.requests,
        "frequency": round(found.frequency, 4),
        "calls_per_request": round(found.calls_per_request, 4),
        "error_rate": round(found.error_rate, 4),
        "self_ms": _ms(found.mean_self_ns),
        "critical_ms": _ms(found.mean_critical_ns),
        "contribution_ms": _ms(found.contribution_ns),
    }


def _test(test: Test) -> dict[str, Any]:
    timed = test.metric in ("self", "critical", "duration")
    return {
        "metric": test.metric,
        "method": test.method,
        "a": _ms(test.a) if timed else _round(test.a),
        "b": _ms(test.b) if timed else _round(test.b),
        "p_value": _p(test.p_value),
        "p_adjusted": _p(test.p_adjusted),
        "verdict": test.verdict,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
