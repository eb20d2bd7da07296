"""A middleware applies the options that concern its own app's requests; the others configure
the whole process (export, metrics port, logs, instrumentation) and only ``tracekit.init()``
applies them. Given to a middleware, they were accepted and silently did nothing: an app built
with ``TracekitMiddleware(app, exporter="console")`` printed no span and nothing said why."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tracekit import asgi, wsgi


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """Never called: the tests only build the middleware."""


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    """Never called: the tests only build the middleware."""
    return []


MIDDLEWARE = {"asgi": (asgi.TracekitMiddleware, asgi_app),
              "wsgi": (wsgi.TracekitMiddleware, wsgi_app)}  # fmt: skip


@pytest.mark.parametrize("flavour", sorted(MIDDLEWARE))
def test_a_process_wide_option_given_to_a_middleware_is_said_to_be_ignored(
    flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    middleware, app = MIDDLEWARE[flavour]
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        middleware(app, exporter="console", metrics_port=0, excluded_urls=["^/health$"])

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "exporter, metrics_port" in warnings[0]
    assert "tracekit.init()" in warnings[0]
    assert "excluded_urls" not in warnings[0]


@pytest.mark.parametrize("flavour", sorted(MIDDLEWARE))
def test_the_options_of_one_app_are_taken_quietly(
    flavour: str, caplog: pytest.LogCaptureFixture
) -> None:
    middleware, app = MIDDLEWARE[flavour]
    per_app = {"service_name": "shop", "service_version": "2.0", "mode": "correlation",
               "correlation_headers": ["X-Request-ID"], "response_header": "X-Request-ID",
               "public_endpoint": True, "excluded_urls": ["^/health$"]}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="tracekit"):
        middleware(app, **per_app)

    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
