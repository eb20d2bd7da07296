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


BELOW_COMMON_SUITE = """
from django.test import SimpleTestCase


class Orders(SimpleTestCase):
    def test_1(self):
        assert self.client.get("/orders/1").status_code == 200

    def test_2(self):
        assert self.client.get("/orders/2").status_code == 200

    async def test_3(self):
        assert (await self.async_client.get("/orders/3")).status_code == 200
"""


def _run_suite(tmp_path: Path, suite: str, settings: str) -> subprocess.CompletedProcess[str]:
    """``python -m django test`` on ``suite`` in a fresh process, tracekit's ``none`` exporter."""
    (tmp_path / "test_orders.py").write_text(textwrap.dedent(suite))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "DJANGO_SETTINGS_MODULE": settings,
        "TRACEKIT_EXPORTER": "none",
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "test", "test_orders"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_middleware_listed_above_tracekits_is_one_warning_for_a_whole_test_run(
    tmp_path: Path,
) -> None:
    """Each test's client builds Django's middleware anew: the warning that names the middleware
    listed above tracekit's is said once in the run, not once a test."""
    run = _run_suite(tmp_path, BELOW_COMMON_SUITE, "django_site.settings_below_common")
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("above tracekit.django.TracekitMiddleware") == 1, run.stderr


def test_a_process_wide_option_in_the_tracekit_setting_is_one_warning_for_a_test_run(
    tmp_path: Path,
) -> None:
    """``TRACEKIT = {"exporter": ...}`` is ignored with a warning (``tracekit.init`` configures
    the process): said as each test's client built Django's middleware anew, once a test."""
    (tmp_path / "exporting_settings.py").write_text(
        "from django_site.settings import *  # noqa: F403\n"
        'TRACEKIT = {"excluded_urls": ["^/health$"], "exporter": "console"}\n'
    )
    run = _run_suite(tmp_path, BELOW_COMMON_SUITE, "exporting_settings")
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("the middleware ignores exporter") == 1, run.stderr


def test_the_first_async_client_request_of_a_test_run_leaves_the_tests_as_they_were(
    tmp_path: Path,
) -> None:
    """The first request of the process builds Django's middleware, tracekit's among them,
    inside ``AsyncClient``'s handler: that request stayed current in the test and, through
    ``async_to_sync``, in every test after it (their logs carried its correlation ID, their
    spans joined its trace)."""
    run = _run_suite(tmp_path, FIRST_REQUEST_SUITE, "django_site.settings")
    assert run.returncode == 0, run.stderr
    assert "Ran 3 tests" in run.stderr and "\nOK" in run.stderr, run.stderr
