"""`tracekit canary --prometheus` counts a streamed response that fails after its 200 as failed.

Two versions of tests/canary/apps/canary_shop.py under uvicorn, scraped every second by the Debian
``prometheus`` binary (outside CI a missing binary skips; with CI=true it fails). The canary's
``/export/{n}`` raises after the first chunk of its body for every third n: each client got a 200
and a cut body, and the span says ERROR. The duration histogram counted those as plain 200s, so
Prometheus mode saw no failure and passed a canary the store failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE
from prometheus_server import instant, prometheus_binary, running_prometheus
from shop import CanaryRun as Run
from shop import canary_json, metric_on, scraped_requests, start_shop

APP = Path(__file__).parent / "apps" / "canary_shop.py"
BASELINE, CANARY = "1.0.0", "2.0.0"
EXPORTS = 90  # per version; the canary cuts every third
EXPORT = "/export/{n}"


def _export(client: httpx.Client, url: str) -> bool:
    """Whether the body came whole."""
    try:
        return client.get(url).text == "first rows\nlast rows\n"
    except httpx.RemoteProtocolError:  # the connection closed inside the body
        return False


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("canary-cut-streams")
    store = directory / "tracekit.db"
    shops = [start_shop(APP, BASELINE, store, 0.0, 0), start_shop(APP, CANARY, store, 0.0, 3)]
    try:
        for shop in shops:
            shop.wait_up()
        targets = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
        with running_prometheus(binary, directory, "shop", targets, interval="1s") as url:
            start = datetime.now(UTC)
            fresh = httpx.Limits(max_keepalive_connections=0)  # a cut response ends its connection
            with httpx.Client(timeout=20, limits=fresh) as client:
                whole = {
                    shop.version: [_export(client, f"{shop.url}/export/{n}")
                                   for n in range(1, EXPORTS + 1)]
                    for shop in shops
                }  # fmt: skip
            assert whole[BASELINE] == [True] * EXPORTS
            assert whole[CANARY] == [n % 3 != 0 for n in range(1, EXPORTS + 1)]
            exports = f'http_route="{EXPORT}"'
            wait_for(lambda: scraped_requests(url, exports) == 2 * EXPORTS, 30, "exports scraped",
                     ignoring=UNREACHABLE)  # fmt: skip
            end = datetime.now(UTC)
            yield Run(url, store, start.isoformat(), end.isoformat())
    finally:
        for shop in shops:
            shop.stop()


def _errors_on_export(run: Run, *source: str) -> dict[str, Any]:
    _, document = canary_json(run, BASELINE, CANARY, *source)
    return metric_on(document, "error_rate", EXPORT)


def _stored_in_full(run: Run) -> dict[str, Any] | None:
    """The store's errors on the export route once it holds every export of both versions (the
    spans reach it in batches, after Prometheus may have scraped their metrics)."""
    errors = _errors_on_export(run, "--store", str(run.store))
    summary = errors["summary"]
    stored = (summary["baseline"]["requests"], summary["canary"]["requests"])
    return errors if stored == (EXPORTS, EXPORTS) else None


def test_prometheus_counts_the_cut_streams_as_the_store_does(run: Run) -> None:
    from_prometheus = _errors_on_export(run, "--prometheus", run.prometheus)
    from_store = wait_for(lambda: _stored_in_full(run), 60, "every export in the store")

    for errors in (from_prometheus, from_store):
        assert errors["summary"]["canary"]["errors"] == EXPORTS // 3
        assert errors["summary"]["baseline"]["errors"] == 0
        assert errors["class"] == "fail"
    # the status that was sent stays what it was; the error type says what happened after it
    cut = instant(
        run.prometheus,
        "sum by (http_response_status_code, error_type) (http_server_request_duration_seconds_count"
        f'{{service_version="{CANARY}", http_route="{EXPORT}"}})',
    )
    # (Prometheus leaves out a label whose value is empty)
    assert sorted((s["metric"].get("error_type", ""), s["value"][1]) for s in cut) == [
        ("", str(EXPORTS - EXPORTS // 3)),
        ("ConnectionResetError", str(EXPORTS // 3)),
    ]
    assert {s["metric"]["http_response_status_code"] for s in cut} == {"200"}
