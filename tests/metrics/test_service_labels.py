"""The ``service_name`` label is the service's that recorded the sample: after
``tracekit.shutdown()`` and an ``init()`` under a new name, and for a middleware given its own
``service_name``, beside the others in one registry.

A fresh interpreter (init, shutdown and the global registry are the process's) serves Starlette
under uvicorn on loopback, calls it through httpx, and scrapes tracekit's own metrics port.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scripted_metrics import metrics_printed_by, script_output

SCRIPT = """
import sys

import httpx
from loopback import start_uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

metrics_port = int(sys.argv[1])


async def order(request):
    return PlainTextResponse("ok")


def serve_and_call(**overrides):
    app = TracekitMiddleware(Starlette(routes=[Route("/orders/{id}", order)]), **overrides)
    url, stop = start_uvicorn(app)
    httpx.get(url + "/orders/1").raise_for_status()
    stop()


tracekit.init("first", exporter="none", metrics_port=metrics_port)
serve_and_call()
tracekit.shutdown()
tracekit.init("second", service_version="2.0", exporter="none", metrics_port=metrics_port)
serve_and_call()
serve_and_call(service_name="billing")
print(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
tracekit.shutdown()
"""


def test_each_service_labels_its_own_requests() -> None:
    families = metrics_printed_by(SCRIPT)

    def counted(family: str) -> dict[tuple[str, str], float]:
        """Observations per (service_name, service_version), over every other label."""
        totals: dict[tuple[str, str], float] = {}
        for sample in families[family].samples:
            if sample.name.endswith("_count"):
                service = (sample.labels["service_name"], sample.labels["service_version"])
                totals[service] = totals.get(service, 0.0) + sample.value
        return totals

    assert counted("http_server_request_duration_seconds") == {
        ("first", ""): 1.0,
        ("second", "2.0"): 1.0,
        ("billing", "2.0"): 1.0,
    }
    # httpx's calls, instrumented by init: the service making them is the one init named
    assert counted("http_client_request_duration_seconds") == {
        ("first", ""): 1.0,
        ("second", "2.0"): 2.0,
    }
    in_flight = {
        (s.labels["service_name"], s.labels["service_version"]): s.value
        for s in families["http_server_active_requests"].samples
    }
    assert in_flight == {("first", ""): 0.0, ("second", "2.0"): 0.0, ("billing", "2.0"): 0.0}


ONE_APP_SCRIPT = """
import sys

import httpx

import tracekit

metrics_port = int(sys.argv[1])
url, stop = serve()
tracekit.init("first", exporter="none", metrics_port=metrics_port)
httpx.get(url + "/orders/1").raise_for_status()
tracekit.shutdown()
httpx.get(url + "/orders/2").raise_for_status()  # still the first service's, not the env's
tracekit.init("second", service_version="2.0", exporter="none", metrics_port=metrics_port)
httpx.get(url + "/orders/3").raise_for_status()
stop()
print(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
tracekit.shutdown()
"""
SERVE_ASGI = """
from loopback import start_uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tracekit.asgi import TracekitMiddleware


async def order(request):
    return PlainTextResponse("ok")


def serve():
    return start_uvicorn(TracekitMiddleware(Starlette(routes=[Route("/orders/{id}", order)])))
"""
SERVE_DJANGO = """
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path
from loopback import start_werkzeug

settings.configure(
    ALLOWED_HOSTS=["*"], SECRET_KEY="test-only", ROOT_URLCONF=__name__, LOGGING_CONFIG=None,
    MIDDLEWARE=["tracekit.django.TracekitMiddleware"],
)
urlpatterns = [path("orders/<int:order_id>", lambda request, order_id: HttpResponse("ok"))]
django.setup()


def serve():
    from django.core.wsgi import get_wsgi_application

    return start_werkzeug(get_wsgi_application())
"""


@pytest.mark.parametrize("serve", [SERVE_ASGI, SERVE_DJANGO], ids=["asgi", "django"])
def test_an_app_served_across_init_calls_labels_its_requests_with_the_current_service(
    serve: str,
) -> None:
    """One application object outlives ``tracekit.shutdown()`` and an ``init()`` under a new
    name (a test suite's module-level app, whose lifespan inits per test; a notebook): its
    requests after the new ``init`` were counted under the first service's name and version,
    while its outgoing calls and messages already said the new one."""
    families = metrics_printed_by(serve + ONE_APP_SCRIPT)
    requests = {
        (sample.labels["service_name"], sample.labels["service_version"]): sample.value
        for sample in families["http_server_request_duration_seconds"].samples
        if sample.name.endswith("_count")
    }
    assert requests == {("first", ""): 2.0, ("second", "2.0"): 1.0}


OTEL_ONLY_SCRIPT = """
import sys

import httpx
from loopback import start_uvicorn
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import tracekit
from tracekit.asgi import TracekitMiddleware

metrics_port = int(sys.argv[1])
tracekit.init(exporter="none", metrics_port=metrics_port)


async def order(request):
    return PlainTextResponse(trace.get_current_span().resource.attributes["service.version"])


url, stop = start_uvicorn(TracekitMiddleware(Starlette(routes=[Route("/orders/{id}", order)])))
print("span:", httpx.get(url + "/orders/1").text)
stop()
print(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
tracekit.shutdown()
"""


def test_the_version_in_otel_resource_attributes_labels_the_metrics() -> None:
    """OpenTelemetry has no variable of its own for the version: ``service.version`` in
    ``OTEL_RESOURCE_ATTRIBUTES`` is how a deployment sets it. Spans carried it, the metrics said
    ``service_version=""``: the canary dashboard and ``tracekit canary --prometheus`` found no
    versions to compare."""
    output = script_output(
        OTEL_ONLY_SCRIPT,
        OTEL_SERVICE_NAME="orders",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=production,service.version=1.1.0",
    )
    span_line, scrape = output.split("\n", 1)
    assert span_line == "span: 1.1.0"
    requests = [
        (sample.labels["service_name"], sample.labels["service_version"], sample.value)
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
    ]
    assert requests == [("orders", "1.1.0", 1.0)]
