"""Fixtures of the stop-and-count tests; the helpers live in tests/support/stopping.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import running_redis
from stopping import Service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path, tmp_path / "spans.db")
    yield running
    running.kill()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throw-away redis-server (no persistence) as Celery's broker, one per test: a worker
    stopped before its ack reached the broker leaves the message to be restored, and the next
    test's worker would run it too."""
    with running_redis() as url:
        yield url
