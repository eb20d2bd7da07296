"""Acceptance by simulation: canary rollouts with known differences, through the real pipeline.

Every scenario draws its requests with fixed seeds (``random.Random``, stable across Python
versions), builds them as finished SERVER spans of the OpenTelemetry SDK (``ReadableSpan``, what
a ``TracerProvider`` hands its exporters, with ``service.version`` on each version's resource)
and exports them through ``StoreSpanExporter`` into a real store. Scenarios with the same
baseline share one store: the baseline's requests are written once (exporting is most of a
scenario's time, the verdicts a tenth of it) and each scenario adds its canary under a version of
its own, drawn exactly as in a store of its own.
The spans are built directly rather than started and ended one by one through a tracer: the
subject here is the store and the canary verdict, and 120,000 trips through ``start_span`` took
most of a scenario's time while proving nothing the tracer tests do not. Each seed gets its own
minute of time; the verdict of a seed reads that minute back from the store, as
``tracekit canary --start --end`` would.

Durations are lognormal around a 50 ms median with sigma 0.5, unless a scenario says otherwise.
"""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tracekit.canary import Subject, Verdict, judge, samples_from_store
from tracekit.store import Store
from tracekit.store.exporter import StoreSpanExporter

SERVICE, BASELINE, CANARY = "checkout", "3.1.0", "3.2.0"
T0 = 1_750_000_000_000_000_000
SEED_NS = 60 * 1_000_000_000  # one minute of time per seed
MEDIAN = 0.05
SEEDS = 200
_BATCH = 10_000
_SCOPE = InstrumentationScope("canary-simulation")
_UNSET, _FAILED = Status(StatusCode.UNSET), Status(StatusCode.ERROR)


@dataclass(frozen=True)
class Version:
    """How one version's requests are drawn: duration scale, log-spread and failed requests."""

    scale: float = 1.0
    sigma: float = 0.5
    errors: int = 0


@dataclass(frozen=True)
class Scenario:
    baseline: Version
    canary: Version
    requests: int  # per version and seed
    seeds: int


def _draw(version: Version, requests: int, rng: random.Random) -> list[tuple[int, bool]]:
    """(duration ns, failed) per request; the failures at random places."""
    failed = set(rng.sample(range(requests), version.errors))
    return [
        (int(MEDIAN * version.scale * rng.lognormvariate(0, version.sigma) * 1e9), i in failed)
        for i in range(requests)
    ]


def _record(
    resource: Resource, requests: list[tuple[int, bool]], seed: int, ids: Iterator[int]
) -> list[ReadableSpan]:
    """One finished SERVER span per request, spread over the seed's minute, each its own trace."""
    step = SEED_NS // (len(requests) + 1)
    spans = []
    for number, (duration, failed) in enumerate(requests):
        start = T0 + seed * SEED_NS + number * step
        spans.append(ReadableSpan(
            "POST /checkout", _context(next(ids)), resource=resource,
            attributes={"http.request.method": "POST", "http.route": "/checkout",
                        "http.response.status_code": 500 if failed else 200},
            kind=SpanKind.SERVER, status=_FAILED if failed else _UNSET,
            start_time=start, end_time=start + duration, instrumentation_scope=_SCOPE,
        ))  # fmt: skip
    return spans


def _context(number: int) -> SpanContext:
    return SpanContext(number, number, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _export(store: Path, spans: list[ReadableSpan]) -> None:
    """``spans`` exported into the store in batches of 10,000 (as a ``BatchSpanProcessor`` with
    that batch size would hand them over)."""
    exporter = StoreSpanExporter(store)
    for batch in (spans[i : i + _BATCH] for i in range(0, len(spans), _BATCH)):
        assert exporter.export(batch) is SpanExportResult.SUCCESS
    exporter.shutdown()


def _resource(version: str) -> Resource:
    return Resource.create({"service.name": SERVICE, "service.version": version})


@dataclass
class _Baseline:
    """A store holding one baseline's requests, and each seed's generator as the baseline left it
    (the canary's requests are drawn next from the same generator)."""

    path: Path
    after_baseline: list[tuple[Any, ...]]
    canaries: int = 0


class Rollouts:
    """Simulated rollouts in real stores, one store per baseline: scenarios with the same
    baseline share its requests, written once, and each adds its canary under a version of its
    own. A canary's requests are the ones it would draw in a store of its own."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._baselines: dict[tuple[Version, int, int], _Baseline] = {}
        self._ids = itertools.count(1)

    def verdicts(self, scenario: Scenario) -> list[Verdict]:
        """The verdict of each seed's minute on the scenario's canary, read back from the store."""
        baseline = self._baseline(scenario)
        baseline.canaries += 1
        version = f"{CANARY}-{baseline.canaries}"
        spans = []
        for seed, state in enumerate(baseline.after_baseline):
            rng = random.Random()
            rng.setstate(state)
            requests = _draw(scenario.canary, scenario.requests, rng)
            spans += _record(_resource(version), requests, seed, self._ids)
        _export(baseline.path, spans)
        return verdicts(baseline.path, version, scenario.seeds)

    def _baseline(self, scenario: Scenario) -> _Baseline:
        key = (scenario.baseline, scenario.requests, scenario.seeds)
        if key not in self._baselines:
            path = self._directory / f"simulation-{len(self._baselines)}.db"
            resource, spans, states = _resource(BASELINE), [], []
            for seed in range(scenario.seeds):
                rng = random.Random(seed)
                requests = _draw(scenario.baseline, scenario.requests, rng)
                spans += _record(resource, requests, seed, self._ids)
                states.append(rng.getstate())
            _export(path, spans)
            self._baselines[key] = _Baseline(path, states)
        return self._baselines[key]


def verdicts(store_path: Path, canary: str, seeds: int) -> list[Verdict]:
    """The verdict of each seed's minute, read back from the store."""
    found = []
    with Store(store_path) as store:
        for seed in range(seeds):
            start = T0 + seed * SEED_NS
            window = (start, start + SEED_NS)
            samples = samples_from_store(store, SERVICE, (BASELINE, canary), *window)
            found.append(judge(Subject(SERVICE, BASELINE, canary, *window, "store"), *samples))
    return found


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory: pytest.TempPathFactory) -> Rollouts:
    return Rollouts(tmp_path_factory.mktemp("simulation"))


def run(rollouts: Rollouts, scenario: Scenario) -> list[Verdict]:
    results = rollouts.verdicts(scenario)
    assert all(v.canary_requests == v.baseline_requests == scenario.requests for v in results)
    return results


def count(results: list[Verdict], what: Callable[[Verdict], str]) -> collections.Counter[str]:
    return collections.Counter(what(v) for v in results)


def metric_class(name: str) -> Callable[[Verdict], str]:
    return lambda v: next(r.classification for r in v.metrics if r.check.metric == name)


def report(name: str, results: list[Verdict]) -> None:
    """Shown with ``pytest -s``: what the scenario measured."""
    print(f"\n{name}: verdicts {dict(count(results, lambda v: v.verdict))}")
    for metric in ("latency", "tail_latency", "error_rate"):
        print(f"  {metric}: {dict(count(results, metric_class(metric)))}")


def test_a_canary_twenty_percent_slower_fails(rollouts: Rollouts) -> None:
    results = run(rollouts, Scenario(Version(), Version(scale=1.2), 300, SEEDS))
    report("latency x1.2, 300 requests per version", results)

    verdicts_seen = count(results, lambda v: v.verdict)
    assert verdicts_seen["fail"] >= 0.90 * SEEDS
    assert verdicts_seen["pass"] <= 0.03 * SEEDS


def test_an_identical_canary_passes(rollouts: Rollouts) -> None:
    results = run(rollouts, Scenario(Version(), Version(), 300, SEEDS))
    report("identical, 300 requests per version", results)

    verdicts_seen = count(results, lambda v: v.verdict)
    assert verdicts_seen["pass"] >= 0.95 * SEEDS
    assert verdicts_seen["fail"] <= 0.03 * SEEDS


def test_a_wider_tail_at_the_same_median_fails_on_the_tail_metric(
    rollouts: Rollouts,
) -> None:
    results = run(rollouts, Scenario(Version(), Version(sigma=0.8), 300, SEEDS))
    report("sigma 0.5 -> 0.8 at the same median, 300 requests per version", results)

    tail = count(results, metric_class("tail_latency"))
    assert tail["fail"] >= 0.90 * SEEDS
    assert count(results, lambda v: v.verdict)["fail"] >= 0.90 * SEEDS
    # the rank test alone would have missed it: the typical request is no slower
    assert count(results, metric_class("latency"))["fail"] <= 0.05 * SEEDS


def test_ten_errors_against_none_in_300_fail(rollouts: Rollouts) -> None:
    results = run(rollouts, Scenario(Version(), Version(errors=10), 300, 20))
    report("0 vs 10 errors in 300", results)

    assert count(results, metric_class("error_rate")) == {"fail": 20}
    assert count(results, lambda v: v.verdict) == {"fail": 20}
    assert all(v.score == 0 for v in results)  # error rate is critical


def test_five_errors_against_five_in_1000_pass(rollouts: Rollouts) -> None:
    results = run(rollouts, Scenario(Version(errors=5), Version(errors=5), 1000, 20))
    report("5 vs 5 errors in 1000", results)

    assert count(results, metric_class("error_rate")) == {"pass": 20}
    assert count(results, lambda v: v.verdict)["pass"] >= 18  # latencies may be unlucky
