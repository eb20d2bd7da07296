"""tracekit's short path to OpenTelemetry's current context behaves as the API does."""

from __future__ import annotations

import contextvars
import logging

import pytest
from opentelemetry import context as otel_context

from tracekit._runtime import current_context


def test_what_it_attaches_is_what_the_api_reads() -> None:
    token = current_context.attach(otel_context.set_value("k", "v"))
    try:
        assert otel_context.get_value("k") == "v"
        assert current_context.get_current() is otel_context.get_current()
    finally:
        current_context.detach(token)
    assert otel_context.get_value("k") is None


def test_a_token_from_another_context_is_logged_as_the_api_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = contextvars.copy_context().run(current_context.attach, otel_context.Context())
    with caplog.at_level(logging.ERROR):
        current_context.detach(token)  # never raises: the request goes on
    assert "Failed to detach context" in caplog.text
