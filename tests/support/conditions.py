"""Waiting for something to become true, and needing something the machine may not have.

``wait_for`` polls a condition until it holds (a span stored, a server up, a log line written);
``need`` skips a test whose server or tool is missing here, and fails it in CI (``CI=true``),
where everything must be present.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    *,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that; fail after
    ``timeout`` seconds. Exceptions of the ``ignoring`` types count as "not yet".

    Polls every 20 ms at first, backing off to 200 ms: quick when the wait is short, light on a
    loaded machine when it is long.
    """
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        try:
            result = condition()
        except ignoring:
            result = None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


def need(available: bool, what: str) -> None:
    """Skip when ``what`` is missing here; in CI (CI=true) a missing server or tool fails."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")
