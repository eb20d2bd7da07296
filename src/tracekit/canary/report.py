"""The ``tracekit.canary/v1`` JSON document of a verdict (documented in docs/cli.md).

Numbers are rounded to what they can honestly claim (durations to the microsecond, ratios and
p-values to four significant digits), which also keeps the document byte-identical from run to
run on the same input. Unbounded interval ends are ``null``; nothing is NaN or infinite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tracekit.canary.checks import Check
from tracekit.canary.explain import round_requests
from tracekit.canary.samples import RouteSamples
from tracekit.canary.settings import ERROR_RATE, LATENCY, TAIL_LATENCY, Settings
from tracekit.canary.verdict import MetricResult, Verdict

__all__ = ["EXIT_CODES", "SCHEMA_ID", "exit_code", "load_schema", "to_json"]

SCHEMA_ID = "tracekit.canary/v1"
EXIT_CODES = {"pass": 0, "fail": 1, "marginal": 3, "inconclusive": 4}
_TEST_NAMES = {
    LATENCY: "canary slower (Mann-Whitney U, one-sided)",
    TAIL_LATENCY: "canary has more requests above the pooled quantile (Fisher, one-sided)",
    ERROR_RATE: "canary has a higher error rate (Fisher, one-sided)",
}


def load_schema() -> dict[str, Any]:
    """The ``tracekit.canary/v1`` JSON Schema (draft 2020-12) as a dict."""
    import json
    from importlib import resources

    text = resources.files("tracekit.canary").joinpath("schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def exit_code(verdict: str, *, strict: bool = False) -> int:
    """0 pass, 1 fail, 3 marginal, 4 inconclusive; ``strict`` turns 3 and 4 into 1."""
    code = EXIT_CODES[verdict]
    return 1 if strict and code in (3, 4) else code


def to_json(verdict: Verdict) -> dict[str, Any]:
    """The verdict as a ``tracekit.canary/v1`` document."""
    subject = verdict.subject
    return {
        "schema": SCHEMA_ID,
        "service": subject.service,
        "source": subject.source,
        "verdict": verdict.verdict,
        "score": _round(verdict.score, 4),
        "window": {
            "start_unix_nano": subject.start_unix_nano,
            "end_unix_nano": subject.end_unix_nano,
            "seconds": _round((subject.end_unix_nano - subject.start_unix_nano) / 1e9, 6),
        },
        "baseline": {"version": subject.baseline_version, "requests": verdict.baseline_requests},
        "canary": {"version": subject.canary_version, "requests": verdict.canary_requests},
        "settings": _settings(verdict.settings),
        "decided_by": [_reference(result) for result in verdict.decided_by],
        "reasons": list(verdict.reasons),
        "more_requests_needed": verdict.more_requests,
        "metrics": [_metric(result, verdict.settings) for result in verdict.metrics],
        "warnings": list(verdict.warnings),
    }


def _settings(settings: Settings) -> dict[str, Any]:
    return {
        "alpha": settings.alpha,
        "max_looks": settings.max_looks,
        "alpha_per_look": _round(settings.alpha_per_look, 6),
        "confidence": _round(settings.confidence, 6),
        "correction": "holm",
        "critical": sorted(settings.critical),
        "tail_quantile": settings.tail_quantile,
        "tolerances": {
            LATENCY: settings.latency_tolerance,
            TAIL_LATENCY: settings.tail_tolerance,
            ERROR_RATE: settings.error_tolerance,
        },
    }


def _reference(result: MetricResult) -> dict[str, Any]:
    key = result.check.key
    return {"name": result.check.metric, "route": key.route, "kind": key.kind,
            "class": result.classification}  # fmt: skip


def _metric(result: MetricResult, settings: Settings) -> dict[str, Any]:
    check = result.check
    return {
        **_reference(result),
        "critical": result.critical,
        "n": {"baseline": check.baseline.requests, "canary": check.canary.requests},
        "summary": {"baseline": _summary(check.baseline), "canary": _summary(check.canary)},
        "effect": _effect(check, settings),
        "test": _test(result),
        "more_requests_needed": _needed(check) if result.classification == "inconclusive"
        else None,
        "explanation": result.explanation,
    }  # fmt: skip


def _needed(check: Check) -> int | None:
    """The requests a metric needs, rounded as its explanation says them."""
    return None if check.more_requests is None else round_requests(check.more_requests)


def _summary(samples: RouteSamples) -> dict[str, Any]:
    return {
        "requests": samples.requests,
        "errors": samples.errors,
        "error_rate": _round(samples.errors / samples.requests, 6) if samples.requests else None,
        "p50_ms": _ms(samples.quantile(0.5)),
        "p95_ms": _ms(samples.quantile(0.95)),
        "p99_ms": _ms(samples.quantile(0.99)),
    }


def _effect(check: Check, settings: Settings) -> dict[str, Any]:
    convert: Callable[[float | None], float | None] = _exp
    if check.metric == ERROR_RATE:
        measure, convert = "error rate difference (canary - baseline)", _plain
    elif check.metric == LATENCY:
        measure = "duration ratio canary/baseline (Hodges-Lehmann)"
    else:
        measure = f"p{settings.tail_quantile * 100:g} ratio canary/baseline"
    return {
        "measure": measure,
        "estimate": convert(check.estimate),
        "interval": [convert(check.lower), convert(check.upper)],
        "confidence": _round(settings.confidence, 6),
        "tolerance": convert(check.tolerance),
    }


def _test(result: MetricResult) -> dict[str, Any]:
    check = result.check
    return {
        "method": check.method,
        "alternative": _TEST_NAMES[check.metric],
        "p_value": _round(check.p_value, 4),
        "adjusted_p": _round(result.adjusted_p, 4),
        **{key: _detail(key, value) for key, value in sorted(check.detail.items())},
    }


def _detail(key: str, value: float) -> float | int | None:
    if key.endswith("_seconds"):
        return _round(value, 6)
    return int(value) if float(value).is_integer() else _round(value, 6)


def _exp(log_value: float | None) -> float | None:
    return None if log_value is None else _round(math.exp(log_value), 4)


def _plain(value: float | None) -> float | None:
    return None if value is None else _round(value, 6, decimals=True)


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1e3, 3)


def _round(value: float | None, digits: int, *, decimals: bool = False) -> float | None:
    """``digits`` significant digits (or decimals); None for None, NaN and infinities."""
    if value is None or not math.isfinite(value):
        return None
    if decimals:
        return round(value, digits) + 0.0  # + 0.0: no "-0.0"
    return float(f"{value:.{digits}g}") + 0.0
