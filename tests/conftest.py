"""Shared fixtures: one SDK tracer provider for the whole session, recording finished spans;
a process of the test's own to stop and count (``service``).

OpenTelemetry allows one global tracer provider per process, so tests install it once and clear
the recorded spans before each test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from stopping import Service
from venvs import built_wheel

from tracekit import propagation
from tracekit._runtime.setup import CorrelationSpanProcessor

# Bytecode is cached during the suite even where the shell says not to (PYTHONDONTWRITEBYTECODE=1
# on the development machines): the suite starts thousands of Python processes (tracekit
# commands, services, workers), and each compiled tracekit's modules from source again, as each
# test process rewrote every test module's asserts at collection. Popped here, before the xdist
# processes start, so they and every process they start inherit it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

_EXPORTER = InMemorySpanExporter()
_PROVIDER = TracerProvider()
_PROVIDER.add_span_processor(CorrelationSpanProcessor())
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_PROVIDER)
propagate.set_global_textmap(propagation.TracekitPropagator())


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The finished spans of this test (global provider), cleared before and after."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def tracer_provider() -> TracerProvider:
    """The session's global SDK tracer provider."""
    return _PROVIDER


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A process started from ``tmp_path``, storing into ``spans.db`` there (tests/support/
    stopping.py); killed after the test if it still runs."""
    running = Service(tmp_path, tmp_path / "spans.db")
    yield running
    running.kill()


@pytest.fixture(scope="session")
def tracekit_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tracekit's wheel, built once for the session's test processes (tests/support/venvs.py)."""
    own = tmp_path_factory.getbasetemp()
    # pytest-xdist gives each process a folder of its own inside the session's
    return built_wheel(own.parent if os.environ.get("PYTEST_XDIST_WORKER") else own)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests (marked ``slow``) first, the rest in their order.

    ``make test`` runs three processes that take over half of another's remaining tests when
    they run out (``--dist worksteal``), but never part of a test: a 60 s load test started late
    kept one process working alone while the others had nothing left to take. Started first, the
    other processes' short tests fill that time.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
