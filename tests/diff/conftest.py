"""This directory's helpers (``sdk_requests``, ``checkout``) made importable, and one store per
test module that requests are built into.

The suite runs with ``--import-mode=importlib``, which does not put test directories on
``sys.path``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from sdk_requests import Deployment  # noqa: E402 (found through the path set above)

from tracekit.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """SDK providers exporting into a store of the test module's own."""
    with Store(tmp_path_factory.mktemp("diff") / "tracekit.db") as store:
        running = Deployment(store)
        yield running
        running.shutdown()
