"""`tracekit canary` times only the requests that succeeded, from the store and from Prometheus.

The baseline's checkout fails every other request at once (a dependency refused it: 503 in about
a millisecond) and serves the rest in 60 ms; the canary fixes the failures and serves every
request in 60 ms. A fix, not a slowdown: with the fast failures timed, the baseline's median was
the failures' and the canary read as many times slower. Two versions of
tests/canary/apps/canary_shop.py export to one store while a real Prometheus scrapes them. Outside
CI a missing ``prometheus`` binary skips; with CI=true it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from shop import CanaryRun as Run
from shop import canary_json, served_and_scraped

from tracekit.canary import HTTP, RouteKey, samples_from_store
from tracekit.records import BackendError
from tracekit.store import Store

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
REQUESTS = 400  # per version
CHECKOUT = "/checkout/{n}"
KEY = RouteKey(HTTP, CHECKOUT)
# room for a loaded machine's stragglers: the claim is that a fix does not read as a slowdown
TOLERANCES = ("--max-latency-increase", "60", "--max-tail-increase", "60")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("canary-successes")
    versions = [(BASELINE, [0.06, 2]), (CANARY, [0.06, 0])]
    paths = [f"/checkout/{n}" for n in range(1, REQUESTS + 1)]
    with served_and_scraped(APP, directory, versions, paths, CHECKOUT) as (run, statuses):
        assert statuses.count(503) == REQUESTS // 2  # the baseline's even numbers
        yield run


def _canary(run: Run, *source: str) -> tuple[int, dict[str, Any]]:
    return canary_json(run, BASELINE, CANARY, *source, "--route", CHECKOUT, *TOLERANCES)


def _stored(run: Run) -> tuple[int, dict[str, Any]]:
    def in_full() -> bool:  # spans reach the store in batches, each version's on its own
        found = samples_from_store(Store(run.store), "shop", (BASELINE, CANARY), 0, 2**62)
        return all(KEY in side and side[KEY].requests == REQUESTS for side in found)

    wait_for(in_full, 60, "every request in the store", ignoring=(BackendError,))  # or the file
    return _canary(run, "--store", str(run.store))


def _metrics(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    metrics = {m["name"]: m for m in document["metrics"]}
    summary = metrics["latency"]["summary"]
    assert summary["baseline"]["errors"] == REQUESTS // 2
    assert summary["baseline"]["requests"] == summary["canary"]["requests"] == REQUESTS
    for version in ("baseline", "canary"):  # both medians are the served requests' 60 ms
        assert 50 <= summary[version]["p50_ms"] <= 100, (version, summary)
    assert metrics["error_rate"]["class"] == "pass"
    return metrics


def test_the_store_does_not_call_a_canary_that_fixes_fast_failures_slower(run: Run) -> None:
    """Exact durations: within the tolerance (marginal at most: the canary's loop serves twice
    the baseline's sleeping requests, a fraction of a millisecond slower each)."""
    code, document = _stored(run)

    metrics = _metrics(document)
    for name in ("latency", "tail_latency"):
        assert metrics[name]["class"] in ("pass", "marginal"), metrics[name]["explanation"]
        assert metrics[name]["effect"]["estimate"] == pytest.approx(1.0, abs=0.1)
    assert (document["verdict"], code) in (("pass", 0), ("marginal", 3))


def test_prometheus_does_not_call_a_canary_that_fixes_fast_failures_slower(run: Run) -> None:
    """The buckets may leave a check inconclusive (60 ms sits in (50 ms, 75 ms], and a loaded
    machine's stragglers in the next one), but never failed."""
    code, document = _canary(run, "--prometheus", run.prometheus)

    metrics = _metrics(document)
    for name in ("latency", "tail_latency"):
        assert metrics[name]["class"] in ("pass", "inconclusive"), metrics[name]["explanation"]
    assert (document["verdict"], code) in (("pass", 0), ("inconclusive", 4))
