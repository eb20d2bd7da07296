"""A worker forked while another thread of its parent was building a service's metrics (gunicorn
``--preload`` with an app whose thread calls out as the master forks) does not wait for ever for
the lock that thread held: the thread does not exist in the worker, so it never lets it go."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from tracekit.metrics import HttpClientMetrics, HttpServerMetrics, MessagingMetrics, _ServiceMetrics


def _forked_child_finishes(work: Callable[[], object], seconds: float) -> bool:
    """Whether a forked child runs ``work`` within ``seconds`` (it is killed otherwise)."""
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            work()
        except BaseException:
            os._exit(1)
        os._exit(0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return False


def _forked_child_builds_metrics(seconds: float) -> bool:
    """Whether a forked child gets a new service's client and messaging metrics in time."""

    def build() -> None:
        registry = CollectorRegistry()
        HttpClientMetrics.get("forked-worker", registry=registry)
        MessagingMetrics.get("forked-worker", registry=registry)

    return _forked_child_finishes(build, seconds)


def test_a_lock_a_parent_thread_held_at_the_fork_does_not_hang_the_worker() -> None:
    holding, release = threading.Event(), threading.Event()

    def building_metrics() -> None:
        with _ServiceMetrics._lock:  # where get() builds a service's metrics
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=building_metrics)
    thread.start()
    try:
        assert holding.wait(10)
        assert _forked_child_builds_metrics(seconds=10)
    finally:
        release.set()
        thread.join()


def _forked_child_counts_a_request(metrics: HttpServerMetrics, seconds: float) -> bool:
    """Whether a forked child counts one request in ``metrics`` in time."""
    return _forked_child_finishes(
        lambda: metrics.request_finished("GET", "/orders", 200, 0.01, None), seconds
    )


def test_a_scrape_in_progress_at_the_fork_does_not_hang_the_childs_requests() -> None:
    """A scrape copies each family's series under the family's lock; a process forked in the
    meantime (a pool in a request, a worker of a preloaded master) waited for ever in its first
    request: 3 of 900 children forked while two threads scraped the metrics port."""
    registry = CollectorRegistry()
    metrics = HttpServerMetrics.get("forked-worker", registry=registry)
    metrics.request_finished("GET", "/orders", 200, 0.01, None)
    scraping, release = threading.Event(), threading.Event()

    def scrape_in_progress() -> None:
        with metrics.duration._lock:  # where collect() copies the series
            scraping.set()
            release.wait(30)

    thread = threading.Thread(target=scrape_in_progress)
    thread.start()
    try:
        assert scraping.wait(10)
        assert _forked_child_counts_a_request(metrics, seconds=10)
    finally:
        release.set()
        thread.join()


class _SlowRegistry(CollectorRegistry):
    """A registry whose ``register`` waits: a thread building a service's metrics in it is held
    where it joins a family to the registry."""

    def __init__(self, inside: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self.inside, self.release = inside, release

    def register(self, collector: Any) -> None:
        self.inside.set()
        self.release.wait(30)
        super().register(collector)


def test_a_parent_thread_joining_a_family_at_the_fork_does_not_hang_the_worker() -> None:
    """The thread building a service's metrics holds, besides the services' lock, the lock of
    the families it joins them to; the worker waited for ever on that one at its first call or
    message for a new service."""
    inside, release = threading.Event(), threading.Event()
    registry = _SlowRegistry(inside, release)
    thread = threading.Thread(target=lambda: HttpClientMetrics.get("parent", registry=registry))
    thread.start()
    try:
        assert inside.wait(10)
        assert _forked_child_builds_metrics(seconds=10)
    finally:
        release.set()
        thread.join()
