"""Canary analysis: is a new version of a service worse than the one it replaces?

Library code (no click, no rich) on plain samples: per version and route, one duration per
request and an error count, read from the embedded store (``samples_from_store``) or from
Prometheus (``samples_from_prometheus``). ``judge`` runs three one-sided checks per route (latency
by rank, tail latency, error rate), corrects for testing many at once, and decides pass /
marginal / fail / inconclusive with reasons; ``to_json`` gives the ``tracekit.canary/v1``
document. Deterministic: the same samples give the same document, byte for byte.
"""

from __future__ import annotations

try:  # the statistics run on numpy, which ``pip install tracekit`` leaves out
    import numpy  # noqa: F401 - only whether it imports
except ModuleNotFoundError as error:
    if error.name != "numpy":
        raise
    raise ModuleNotFoundError(
        "tracekit.canary needs numpy: pip install 'tracekit[canary]'", name="numpy"
    ) from None

from tracekit.canary.prometheus import samples_from_prometheus
from tracekit.canary.report import EXIT_CODES, SCHEMA_ID, exit_code, load_schema, to_json
from tracekit.canary.samples import HTTP, MESSAGING, RouteKey, RouteSamples, VersionSamples
from tracekit.canary.settings import ERROR_RATE, LATENCY, METRICS, TAIL_LATENCY, Settings
from tracekit.canary.sources import samples_from_store
from tracekit.canary.verdict import MetricResult, Subject, Verdict, judge

__all__ = [
    "ERROR_RATE",
    "EXIT_CODES",
    "HTTP",
    "LATENCY",
    "MESSAGING",
    "METRICS",
    "SCHEMA_ID",
    "TAIL_LATENCY",
    "MetricResult",
    "RouteKey",
    "RouteSamples",
    "Settings",
    "Subject",
    "Verdict",
    "VersionSamples",
    "exit_code",
    "judge",
    "load_schema",
    "samples_from_prometheus",
    "samples_from_store",
    "to_json",
]
