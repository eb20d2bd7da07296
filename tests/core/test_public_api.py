"""The public surface is pinned: adding or removing a name is a deliberate change to this test."""

from __future__ import annotations

import tracekit
import tracekit.asgi
import tracekit.django
import tracekit.flask
import tracekit.wsgi


def test_tracekit_all() -> None:
    assert tracekit.__all__ == sorted(tracekit.__all__)
    assert tracekit.__all__ == ["__version__", "correlation_id", "init", "shutdown", "uninstrument"]


def test_middleware_modules_all() -> None:
    assert tracekit.asgi.__all__ == ["TracekitMiddleware"]
    # the environ key a framework adapter leaves the route in (docs/middleware.md)
    assert tracekit.wsgi.__all__ == ["ROUTE_KEY", "TracekitMiddleware"]
    assert tracekit.django.__all__ == ["TracekitMiddleware"]
    assert tracekit.flask.__all__ == ["init_app"]


def test_every_public_name_exists_and_is_documented() -> None:
    modules = (tracekit, tracekit.asgi, tracekit.wsgi, tracekit.django, tracekit.flask)
    for module in modules:
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"
