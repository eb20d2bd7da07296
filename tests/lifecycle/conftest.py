"""Fixtures of the stop-and-count tests; the helpers live in tests/support/stopping.py and
``service`` in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import running_redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A throw-away redis-server (no persistence) as Celery's broker, one per test: a worker
    stopped before its ack reached the broker leaves the message to be restored, and the next
    test's worker would run it too."""
    with running_redis() as url:
        yield url
