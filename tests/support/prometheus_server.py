"""A real Prometheus on loopback for the dashboard tests, and the few HTTP API calls they make.

Same approach as tests/metrics/test_prometheus_scrape.py: the Debian ``prometheus`` binary
(installed by .ci/run) with a temporary config, a 1 s scrape interval and exemplar storage on.
Outside CI a missing binary skips; with CI=true it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")
# One client for every API call: a new httpx client per call builds an SSL context each time.
_http = httpx.Client(timeout=10)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError):
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def prometheus_binary() -> str:
    """Path of the prometheus binary; skips the test (fails under CI=true) when missing."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed; CI must install it (.ci/run)")
        pytest.skip("prometheus binary not installed")
    return binary


@contextmanager
def running_prometheus(
    binary: str, directory: Path, job: str, targets: Sequence[str], interval: str = "1s"
) -> Iterator[str]:
    """Prometheus scraping ``targets`` every ``interval`` as ``job``; yields its base URL."""
    config = directory / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {interval}, scrape_timeout: {interval},"
        " evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: {job}\n"
        f"    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, "prometheus ready")
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
