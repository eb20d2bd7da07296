"""One version of a service as a process of its own, scraped by a real Prometheus.

The app script takes ``app-port metrics-port version`` and then arguments of its own; it serves
on the app port and ``tracekit.init(metrics_port=...)`` serves its metrics. It runs with this
folder on ``PYTHONPATH``, so it can use the app-side helpers here (``inproc_queue``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from conditions import wait_for
from loopback import POLLING, UNREACHABLE, free_port, interrupt

SUPPORT = Path(__file__).resolve().parent


@dataclass
class Shop:
    version: str
    url: str
    metrics_port: int
    process: subprocess.Popen[bytes]

    def wait_up(self) -> None:
        """Wait until the app answers its health check (it imports and starts for a while)."""
        health = f"{self.url}/health"
        wait_for(
            lambda: POLLING.get(health).status_code == 200, 20, "shop up", ignoring=UNREACHABLE
        )

    def stop(self) -> None:
        """Ctrl-C: uvicorn runs the lifespan shutdown, which flushes spans and metrics."""
        interrupt(self.process)


def start_shop(
    script: Path, version: str, *args: object, ports: tuple[int, int] | None = None,
    cpu: int | None = None,
) -> Shop:  # fmt: skip
    """Start ``script`` on free ports (or on ``ports``, app and metrics: a restart keeps its
    scrape target); wait for it to answer before sending it traffic. ``cpu``: the one CPU the
    process runs on (see ``shared_cpu``)."""
    app_port, metrics_port = ports or (free_port(), free_port())
    command = [sys.executable, str(script), str(app_port), str(metrics_port), version]
    paths = [str(SUPPORT), *filter(None, [os.environ.get("PYTHONPATH")])]
    process = subprocess.Popen(
        [*command, *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
    )
    if cpu is not None:  # pinned before the interpreter starts its threads, which inherit it
        os.sched_setaffinity(process.pid, {cpu})
    return Shop(version, f"http://127.0.0.1:{app_port}", metrics_port, process)


def shared_cpu() -> int | None:
    """A CPU for every version of a comparison to share (None where processes cannot be pinned).

    Each version is one process, and on a loaded machine each process has its own luck: which
    core it lands on, beside which busy process, for the whole run. All of its requests share
    that luck, so an unchanged route of a version that drew the busier core read 1.27 to 1.46x
    slower (adjusted p down to 3e-05, 150 requests a version of a route taking 0.2 ms) in 3 runs
    of 16 under two CPU hogs. On one CPU both versions take turns at the same competition, as
    the statistics assume: 0 in 16.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    return min(os.sched_getaffinity(0))


@dataclass
class CanaryRun:
    """What a canary test served: the Prometheus that scraped both versions, the store both
    wrote their spans into, and the window around the traffic (ISO 8601 times)."""

    prometheus: str
    store: Path
    start: str
    end: str


def scraped_requests(prometheus: str, matchers: str) -> float:
    """The server requests Prometheus has scraped so far of the series ``matchers`` selects."""
    from prometheus_server import instant

    found = instant(prometheus, f"sum(http_server_request_duration_seconds_count{{{matchers}}})")
    return float(found[0]["value"][1]) if found else 0.0


def pay_in_turns(client: httpx.Client, shops: Sequence[Shop], payments: int) -> None:
    """``/pay/1`` to ``/pay/{payments}`` on every shop, 30 at a time each in turn with a pause
    between: both versions' series grow over several scrapes, as under live traffic."""
    for first in range(1, payments + 1, 30):
        for shop in shops:
            for n in range(first, min(first + 30, payments + 1)):
                assert client.get(f"{shop.url}/pay/{n}").status_code == 200
        time.sleep(0.5)


def canary_json(
    run: CanaryRun, baseline: str, canary: str, *options: str
) -> tuple[int, dict[str, Any]]:
    """``tracekit canary --format json`` of the service ``shop`` over the run's window, with
    ``options`` (the source, at least): its exit code and document. It says nothing on stderr."""
    from click.testing import CliRunner

    from tracekit_cli.main import cli

    result = CliRunner().invoke(cli, [
        "canary", "--service", "shop", "--baseline", baseline, "--canary", canary, *options,
        "--start", run.start, "--end", run.end, "--format", "json",
    ])  # fmt: skip
    assert result.stderr == ""
    return result.exit_code, json.loads(result.stdout)


@contextmanager
def served_and_scraped(
    script: Path, directory: Path, versions: Sequence[tuple[str, Sequence[object]]],
    paths: Sequence[str], route: str,
) -> Iterator[tuple[CanaryRun, list[int]]]:  # fmt: skip
    """Each version of ``script`` (its version and arguments) on loopback, exporting to one store
    in ``directory`` and scraped every 200 ms by a real Prometheus; every path of ``paths`` sent
    to each version once, 12 at a time. Yields the run once Prometheus has scraped them all on
    ``route``, with the statuses the versions answered (path by path, version by version)."""
    from prometheus_server import prometheus_binary, running_prometheus

    binary = prometheus_binary()
    store = directory / "tracekit.db"
    start = datetime.now(UTC)
    cpu = shared_cpu()
    shops = [start_shop(script, version, store, *args, cpu=cpu) for version, args in versions]
    try:
        targets = [f"127.0.0.1:{shop.metrics_port}" for shop in shops]
        with running_prometheus(binary, directory, "shop", targets, interval="200ms") as url:
            for shop in shops:
                shop.wait_up()
            plan = [shop.url + path for path in paths for shop in shops]
            with httpx.Client(timeout=20) as client, ThreadPoolExecutor(12) as pool:
                statuses = list(pool.map(lambda u: client.get(u).status_code, plan))
            wait_for(
                lambda: scraped_requests(url, f'http_route="{route}"') == len(plan),
                30,
                "requests scraped",
            )
            yield CanaryRun(url, store, start.isoformat(), datetime.now(UTC).isoformat()), statuses
    finally:
        for shop in shops:
            shop.stop()


def metric_on(document: dict[str, Any], name: str, route: str) -> dict[str, Any]:
    """The verdict document's metric ``name`` on ``route``."""
    return next(m for m in document["metrics"] if (m["name"], m["route"]) == (name, route))
