"""A real Prometheus on loopback for the dashboard tests, and the few HTTP API calls they make.

Same approach as tests/metrics/test_prometheus_scrape.py: the Debian ``prometheus`` binary
(installed by .ci/run) with a temporary config, a 1 s scrape interval and exemplar storage on.
Outside CI a missing binary skips; with CI=true it fails.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conditions import need, wait_for
from loopback import UNREACHABLE, free_port

# One client for every API call: a new httpx client per call builds an SSL context each time.
_http = httpx.Client(timeout=10)


def prometheus_binary() -> str:
    """Path of the prometheus binary; skips the test (fails under CI=true) when missing."""
    binary = shutil.which("prometheus")
    need(binary is not None, "the prometheus binary (.ci/run installs it)")
    assert binary is not None
    return binary


@contextmanager
def running_prometheus(
    binary: str, directory: Path, job: str, targets: Sequence[str], interval: str = "1s"
) -> Iterator[str]:
    """Prometheus scraping ``targets`` every ``interval`` as ``job``; yields its base URL.

    Its first scrape comes about 5 s after it starts, whatever the interval: its discovery
    hands the scrape loops their targets in 5 s ticks (Prometheus 2.42: ready at 0.3 s, first
    scrape at 5.6 s). Start it before the services it scrapes and wait for them inside, so that
    their start-up runs within that wait rather than before it.
    """
    config = (
        f"global: {{scrape_interval: {interval}, scrape_timeout: {interval},"
        " evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n"
    )
    with prometheus_configured(binary, directory, config) as url:
        yield url


@contextmanager
def prometheus_configured(
    binary: str, directory: Path, text: str, flags: Sequence[str] = ()
) -> Iterator[str]:
    """Prometheus started with the config ``text`` and command-line ``flags``; yields its base
    URL."""
    config = directory / "prometheus.yml"
    config.write_text(text)
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _http.get(f"{url}/-/ready").status_code == 200,
            20,
            "prometheus ready",
            ignoring=UNREACHABLE,
        )
        yield url
    finally:
        process.terminate()
        process.wait(20)


def api(url: str, path: str, **params: Any) -> Any:
    """``data`` of a Prometheus HTTP API answer; fails with Prometheus' error text otherwise."""
    body = _http.get(f"{url}/api/v1/{path}", params=params).json()
    assert body["status"] == "success", f"{path} {params}: {body.get('error')}"
    return body["data"]


def instant(url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """Result vector of an instant query (at ``at``, default now)."""
    data = api(url, "query", query=promql, **({"time": at} if at is not None else {}))
    result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
    return result


def label_values(url: str, selector: str, label: str, start: float, end: float) -> list[str]:
    """What Grafana's ``label_values(selector, label)`` lists for that time range."""
    values: list[str] = api(
        url, f"label/{label}/values", **{"match[]": selector, "start": start, "end": end}
    )
    return sorted(values)
