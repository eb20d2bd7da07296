"""A Django project's own test suite, run by Django's test runner in a fresh process with
tracekit's middleware in ``MIDDLEWARE`` (tests/http/django_site): tracekit must leave the tests
as they would be without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent

FIRST_REQUEST_SUITE = """
import tracekit
from django.test import SimpleTestCase
from opentelemetry import trace


class Orders(SimpleTestCase):
    async def test_1_first_request_of_the_run(self):
        response = await self.async_client.get("/orders/5", headers={"X-Request-ID": "first-1"})
        assert response["X-Correlation-ID"] == "first-1"
        assert tracekit.correlation_id() is None, tracekit.correlation_id()

    async def test_2_a_later_async_test(self):
        assert tracekit.correlation_id() is None, tracekit.correlation_id()
        assert not trace.get_current_span().get_span_context().is_valid

    def test_3_a_later_sync_test(self):
        assert tracekit.correlation_id() is None, tracekit.correlation_id()
        assert not trace.get_current_span().get_span_context().is_valid
"""


def test_the_first_async_client_request_of_a_test_run_leaves_the_tests_as_they_were(
    tmp_path: Path,
) -> None:
    """The first request of the process builds Django's middleware, tracekit's among them,
    inside ``AsyncClient``'s handler: that request stayed current in the test and, through
    ``async_to_sync``, in every test after it (their logs carried its correlation ID, their
    spans joined its trace)."""
    (tmp_path / "test_orders.py").write_text(textwrap.dedent(FIRST_REQUEST_SUITE))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "DJANGO_SETTINGS_MODULE": "django_site.settings",
        "TRACEKIT_EXPORTER": "none",
    }
    run = subprocess.run(
        [sys.executable, "-m", "django", "test", "test_orders"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Ran 3 tests" in run.stderr and "\nOK" in run.stderr, run.stderr
