"""A Flask app mounted in a Starlette or FastAPI app through Starlette's ``WSGIMiddleware``
(``app.mount("/legacy", WSGIMiddleware(flask_app))``), both traced by tracekit: one request,
whose span the outer layer opens. Every request to the Flask app was named by the mount alone
(``GET /legacy``): its spans and metrics could not tell one Flask route from another, while the
inner layer knew the route (``/orders/{order_id}``) and reported it.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from flask import Flask
from loopback import start_uvicorn
from metric_labels import routes_labelled
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Mount

import tracekit.flask
from tracekit import asgi

with warnings.catch_warnings():  # Starlette deprecates it for a2wsgi; still the one it ships
    warnings.simplefilter("ignore")
    from starlette.middleware.wsgi import WSGIMiddleware


def _legacy() -> Flask:
    legacy = Flask("legacy")

    @legacy.route("/orders/<int:order_id>")
    def order(order_id: int) -> str:
        return f"order {order_id}"

    tracekit.flask.init_app(legacy, registry=CollectorRegistry(), service_name="legacy")
    return legacy


def _starlette() -> Any:
    return Starlette(routes=[Mount("/legacy", app=WSGIMiddleware(_legacy()))])


def _fastapi() -> Any:
    app = FastAPI(telemetry={"tracing": False})
    app.mount("/legacy", WSGIMiddleware(_legacy()))
    return app


@pytest.mark.parametrize("make", [_starlette, _fastapi], ids=["starlette", "fastapi"])
def test_a_flask_app_under_a_mount_is_named_by_the_mount_and_its_own_route(
    wait_for_spans: Any, make: Any
) -> None:
    registry = CollectorRegistry()
    app = make()
    app.add_middleware(asgi.TracekitMiddleware, registry=registry, service_name="mounted-wsgi")
    url, stop = start_uvicorn(app)
    try:
        response = requests.get(url + "/legacy/orders/7", timeout=10)
    finally:
        stop()

    assert response.text == "order 7"
    (span,) = wait_for_spans(1)
    assert span.name == "GET /legacy/orders/{order_id}"
    assert span.attributes["http.route"] == "/legacy/orders/{order_id}"
    assert routes_labelled(registry) == {"/legacy/orders/{order_id}"}
