"""Real servers on loopback for the HTTP tests: uvicorn (ASGI) and werkzeug (WSGI) in threads.

Each server binds port 0 so parallel runs never collide; fixtures return the base URL and stop
the servers after the test. ``wait_for_spans`` exists because a server ends its SERVER span just
after the client has read the response.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conditions import wait_for
from loopback import start_uvicorn, start_werkzeug
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracekit import instrumentation


def _serving(start_server: Callable[[Any], tuple[str, Callable[[], None]]]) -> Any:
    """A fixture body: start apps with ``start_server``, stop them all after the test."""
    stops: list[Callable[[], None]] = []

    def start(app: Any) -> str:
        url, stop = start_server(app)
        stops.append(stop)
        return url

    yield start
    for stop in reversed(stops):
        stop()


@pytest.fixture
def serve_asgi() -> Iterator[Callable[[Any], str]]:
    """Start an ASGI app under uvicorn; returns its base URL."""
    yield from _serving(start_uvicorn)


@pytest.fixture
def serve_wsgi() -> Iterator[Callable[[Any], str]]:
    """Start a WSGI app under werkzeug's threaded server; returns its base URL."""
    yield from _serving(start_werkzeug)


@pytest.fixture
def http_clients() -> Iterator[None]:
    """tracekit's HTTP client instrumentation, removed again after the test."""
    instrumentation.instrument(["aiohttp", "httpx", "requests", "urllib3"])
    yield
    instrumentation.uninstrument()


@pytest.fixture
def wait_for_spans(
    spans: InMemorySpanExporter,
) -> Callable[..., list[ReadableSpan]]:
    """Wait until at least ``count`` spans have finished; return them all."""

    def wait(count: int, timeout: float = 5.0) -> list[ReadableSpan]:
        # fewer than ``count`` is for the caller's own assertion to say, with the spans it got
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(spans.get_finished_spans()) >= count, timeout, f"{count} spans")
        time.sleep(0.05)  # let a straggler show up, so "exactly n" assertions mean something
        return list(spans.get_finished_spans())

    return wait


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Every formatted log line (any logger, any level, server threads too) during the test."""
    handler = _ListHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    # uvicorn's loggers do not propagate to the root logger: listen to them directly.
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    old_levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    loggers[0].setLevel(logging.DEBUG)
    yield handler.lines
    for logger, level in zip(loggers, old_levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
