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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import wait_for
from prometheus_server import prometheus_binary, running_prometheus
from shop import CanaryRun as Run
from shop import canary_json, scraped_requests, start_shop

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
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-successes")
    store = directory / "tracekit.db"
    start = datetime.now(UTC)
    shops = [start_shop(APP, BASELINE, store, 0.06, 2), start_shop(APP, CANARY, store, 0.06, 0)]
    try:
        targets = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
        with running_prometheus(binary, directory, "shop", targets, interval="200ms") as url:
            with httpx.Client(timeout=20) as client, ThreadPoolExecutor(12) as pool:
                for shop in shops:
                    shop.wait_up()
                plan = [(shop, n) for n in range(1, REQUESTS + 1) for shop in shops]
                codes = list(pool.map(
                    lambda item: client.get(f"{item[0].url}/checkout/{item[1]}").status_code, plan
                ))  # fmt: skip
            assert codes.count(503) == REQUESTS // 2  # the baseline's even numbers
            wait_for(
                lambda: scraped_requests(url, f'http_route="{CHECKOUT}"') == len(plan),
                30,
                "requests scraped",
            )
            yield Run(url, store, start.isoformat(), datetime.now(UTC).isoformat())
    finally:
        for shop in shops:
            shop.stop()


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
