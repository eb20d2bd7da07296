"""Samples from the embedded store: one duration per request, per version and route.

A request whose clock stepped back mid-span is stored lasting 0 ms: counted among the requests
(it did not fail), never timed, since OpenTelemetry holds an end before the start invalid and a
0 ms success would make a version look faster than it is.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tracekit.canary.samples import HTTP, MESSAGING, UNMATCHED_ROUTE, RouteKey, RouteSamples
from tracekit.canary.samples import VersionSamples as Samples
from tracekit.store import RequestGroup, Store

__all__ = ["samples_from_store"]

_KINDS = {"SERVER": HTTP, "CONSUMER": MESSAGING}


def samples_from_store(
    store: Store, service: str, versions: tuple[str, str], start_ns: int, end_ns: int
) -> tuple[Samples, Samples]:
    """(baseline, canary) samples of ``service`` from requests that started in the window.

    Raises ``tracekit.records.BackendError`` when the store cannot be read.
    """
    found: dict[str, Samples] = {version: {} for version in versions}
    for group in store.request_groups(service, versions, start_ns, end_ns):
        _add(found[group.version], _key(group), _samples(group))
    return found[versions[0]], found[versions[1]]


def _add(samples: Samples, key: RouteKey, more: RouteSamples) -> None:
    """``more`` requests on ``key``: several groups can share one key (no route, an empty one
    and ``_unmatched`` itself all matched no route), and each of their requests counts."""
    if key in samples:
        kept = samples[key]
        joined = RouteSamples.joined([kept, more], kept.errors + more.errors)
        more = replace(joined, uncounted=kept.uncounted + more.uncounted)
    samples[key] = more


def _key(group: RequestGroup) -> RouteKey:
    return RouteKey(_KINDS[group.kind], group.route or UNMATCHED_ROUTE)


def _samples(group: RequestGroup) -> RouteSamples:
    seconds = np.sort(np.asarray(group.durations_ns, dtype=np.float64) / 1e9)
    return RouteSamples(seconds, group.errors, uncounted=group.untimed)
