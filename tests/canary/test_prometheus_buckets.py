"""`tracekit canary --prometheus` is only as sure about latency as the histogram buckets allow.

Prometheus holds bucket counts, not durations. As in the review that found it: the baseline
answers in 130 ms, the canary in 195 ms (1.5 times as slow), both inside tracekit's
(100 ms, 250 ms] bucket. The counts are the same, so the buckets cannot tell the versions apart,
and a verdict from them must not pass what the store fails. A real Prometheus scrapes two versions
of tests/canary/apps/canary_shop.py. Outside CI a missing ``prometheus`` binary skips; with
CI=true it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conditions import wait_for
from shop import CanaryRun as Run
from shop import canary_json, served_and_scraped

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
REQUESTS = 300  # per version
SLOW = "/slow/{n}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("canary-buckets")
    versions = [(BASELINE, [0.130, 0]), (CANARY, [0.195, 0])]
    paths = [f"/slow/{n}" for n in range(REQUESTS)]
    with served_and_scraped(APP, directory, versions, paths, SLOW) as (run, statuses):
        assert statuses == [200] * len(statuses)
        yield run


def _canary(run: Run, *source: str) -> tuple[int, dict[str, Any]]:
    return canary_json(run, BASELINE, CANARY, *source, "--route", SLOW)


def _metrics(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in document["metrics"]}


def test_the_store_fails_the_slower_canary(run: Run) -> None:
    def stored_in_full() -> tuple[int, dict[str, Any]] | None:  # spans reach it in batches
        code, document = _canary(run, "--store", str(run.store))
        return (code, document) if document["canary"]["requests"] == REQUESTS else None

    code, document = wait_for(stored_in_full, 60, "every request in the store")

    latency = _metrics(document)["latency"]
    assert latency["class"] == "fail"
    assert latency["effect"]["estimate"] == pytest.approx(1.5, rel=0.05)
    assert (document["verdict"], code) == ("fail", 1)


def test_one_bucket_does_not_pass_a_canary_that_may_be_much_slower(run: Run) -> None:
    code, document = _canary(run, "--prometheus", run.prometheus)

    metrics = _metrics(document)
    for name in ("latency", "tail_latency"):
        metric = metrics[name]
        assert metric["class"] == "inconclusive", name
        assert metric["effect"]["interval"][1] >= 2.5, name  # the bucket is 2.5 times as wide
        assert "buckets are too coarse" in metric["explanation"], name
        assert metric["more_requests_needed"] is None, name
    assert (document["verdict"], code) == ("inconclusive", 4)
    assert document["more_requests_needed"] is None
