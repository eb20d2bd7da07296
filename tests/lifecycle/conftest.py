"""Fixtures of the stop-and-count tests; the helpers live in tests/support/stopping.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stopping import Service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path, tmp_path / "spans.db")
    yield running
    running.kill()
