"""Two tracekit server layers on one request: tracekit's WSGI middleware around a Django project
that lists tracekit's Django middleware (under gunicorn), and tracekit's ASGI middleware around
an app that mounts a sub-application wrapped in it too (under uvicorn).

The request is one request to the user: one SERVER span, named by its route, and one observation
in the metrics, with that route; one request in flight while it runs.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conditions import wait_for
from loopback import free_port
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from stored import stored_path

from tracekit.asgi import TracekitMiddleware
from tracekit.path import reconstruct
from tracekit.store import Store

DJANGO_SITE = Path(__file__).resolve().parent


def _request_counts(exposition: str) -> dict[tuple[str, str], float]:
    """``(http_route, http_response_status_code)`` -> requests counted, from a scrape."""
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    return {
        (s.labels["http_route"], s.labels["http_response_status_code"]): s.value
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    }


def _counted_since(
    metrics_url: str, before: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    """What a scrape of ``metrics_url`` counts beyond ``before``, an earlier scrape's counts."""
    after = _request_counts(requests.get(metrics_url, timeout=10).text)
    return {key: n - before.get(key, 0.0) for key, n in after.items() if n > before.get(key, 0.0)}


def _in_flight(exposition: str) -> list[float]:
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    return [s.value for s in families["http_server_active_requests"].samples]


@pytest.fixture(scope="module")
def stacked_django(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """(base URL, store, metrics URL) of the Django site served by gunicorn through
    django_site/wsgi_stacked.py."""
    yield from _serve_stacked_django(tmp_path_factory, contrib_outside=False)


@pytest.fixture(scope="module")
def contrib_around_stacked_django(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, str]]:
    """The same site with OpenTelemetry's WSGI middleware around both tracekit layers."""
    yield from _serve_stacked_django(tmp_path_factory, contrib_outside=True)


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def contrib_django_between_the_layers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, str]]:
    """The same site with OpenTelemetry's Django instrumentation, whose middleware runs between
    the two tracekit layers, and a ratio sampler that keeps half of the requests: under
    gunicorn, and wrapped in tracekit's ASGI middleware under uvicorn
    (django_site/asgi_stacked.py)."""
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    if request.param == "wsgi":
        yield from _serve_stacked_django(
            tmp_path_factory, contrib_outside=False, STACKED_DJANGO_CONTRIB="1", **sampler
        )
    else:
        yield from _serve_stacked_django(
            tmp_path_factory,
            contrib_outside=False,
            server=_UVICORN,
            STACKED_DJANGO_CONTRIB="1",
            **sampler,
        )


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def stacked_django_either(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, str]]:
    """The stacked site under gunicorn (django_site/wsgi_stacked.py) and under uvicorn
    (django_site/asgi_stacked.py: tracekit's ASGI middleware around Django's handler)."""
    if request.param == "wsgi":
        yield from _serve_stacked_django(tmp_path_factory, contrib_outside=False)
    else:
        yield from _serve_stacked_django(
            tmp_path_factory,
            contrib_outside=False,
            server=_UVICORN,
        )


@pytest.fixture(scope="module")
def contrib_around_django(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, str]]:
    """The site with tracekit's Django middleware alone, under OpenTelemetry's WSGI middleware
    and Django instrumentation (django_site/wsgi_contrib.py), and a ratio sampler of one half."""
    yield from _serve_stacked_django(
        tmp_path_factory,
        contrib_outside=False,
        server=[
            "gunicorn",
            "--bind",
            "127.0.0.1:{port}",
            "--workers",
            "1",
            "django_site.wsgi_contrib",
        ],
        OTEL_TRACES_SAMPLER="parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG="0.5",
    )


_GUNICORN = ("gunicorn", "--bind", "127.0.0.1:{port}", "--workers", "1", "django_site.wsgi_stacked")
_UVICORN = ("uvicorn", "--port", "{port}", "django_site.asgi_stacked:application")
_UNDER = {"wsgi": _GUNICORN, "asgi": _UVICORN}  # the stacked site under either server


def _serve_stacked_django(
    tmp_path_factory: pytest.TempPathFactory,
    *,
    contrib_outside: bool,
    server: tuple[str, ...] | list[str] = _GUNICORN,
    **more_env: str,
) -> Iterator[tuple[str, Path, str]]:
    store = tmp_path_factory.mktemp("stacked") / "tracekit.db"
    metrics_port, port = free_port(), free_port()
    env = {
        **os.environ,
        # the site, before the tracekit this run imports (a checkout's src/ on PYTHONPATH)
        "PYTHONPATH": os.pathsep.join([str(DJANGO_SITE), os.environ.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "django_site.settings",
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(store),
        "TRACEKIT_METRICS_PORT": str(metrics_port),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "STACKED_CONTRIB_OUTSIDE": "1" if contrib_outside else "",
        **more_env,
    }
    command = [sys.executable, "-m", *(part.format(port=port) for part in server)]
    log = store.parent / "server.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 30, "the site")
        assert process.poll() is None, log.read_text()
        yield url, store, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        process.terminate()
        process.wait(30)


def _answers(url: str) -> bool:
    try:
        # Nothing listening is retried at once; a request the server took is waited for,
        # however slow a loaded machine makes the first (Django sets up on it).
        requests.get(url + "/in-flight", timeout=(1, 30))
        return True
    except requests.ConnectionError:
        return False


def _server_spans(store: Path, correlation_id: str) -> list[dict[str, Any]]:
    """The SERVER spans ``tracekit trace ID`` shows, once the request's spans are stored."""
    path = stored_path(store, correlation_id, lambda path: any(map(_is_server, path["spans"])))
    return [span for span in path["spans"] if _is_server(span)]


def _is_server(span: dict[str, Any]) -> bool:
    return bool(span["kind"] == "SERVER")


def test_django_under_the_wsgi_middleware_is_one_request_with_its_route(
    stacked_django: tuple[str, Path, str],
) -> None:
    url, store, metrics_url = stacked_django
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    cids = [f"stack-{n}-{uuid.uuid4().hex[:8]}" for n in range(3)]
    for n, cid in enumerate(cids):
        response = requests.get(f"{url}/orders/{n}", headers={"X-Correlation-ID": cid}, timeout=10)
        assert response.status_code == 200
        assert response.headers["X-Correlation-ID"] == cid
        assert response.text.startswith(cid)
    during = requests.get(url + "/in-flight", timeout=10).text

    assert _in_flight(during) == [1.0]

    # the server records a request once it has sent the response: wait for the last one
    wait_for(
        lambda: sum(_counted_since(metrics_url, before).values()) >= 4, 5, "4 requests counted"
    )
    assert _counted_since(metrics_url, before) == {
        ("/orders/{order_id}", "200"): 3.0,
        ("/in-flight", "200"): 1.0,
    }
    for cid in cids:
        (span,) = _server_spans(store, cid)
        assert span["name"] == "GET /orders/{order_id}"
        assert span["attributes"]["http.route"] == "/orders/{order_id}"
        assert span["attributes"]["correlation.id"] == cid


def test_a_server_span_opened_around_both_wsgi_layers_keeps_it_one_request(
    contrib_around_stacked_django: tuple[str, Path, str],
) -> None:
    """OpenTelemetry's WSGI middleware outermost: both tracekit layers stamped its span, and each
    counted the request, the inner one as ``_unmatched`` besides."""
    url, _, metrics_url = contrib_around_stacked_django
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    for n in range(3):
        assert requests.get(f"{url}/orders/{n}", timeout=10).status_code == 200

    assert _in_flight(requests.get(url + "/in-flight", timeout=10).text) == [1.0]

    wait_for(
        lambda: sum(_counted_since(metrics_url, before).values()) >= 4, 5, "4 requests counted"
    )
    assert _counted_since(metrics_url, before) == {
        ("/orders/{order_id}", "200"): 3.0,
        ("/in-flight", "200"): 1.0,
    }


def test_a_view_error_under_both_layers_is_recorded_with_its_exception(
    stacked_django: tuple[str, Path, str],
) -> None:
    url, store, _ = stacked_django
    cid = f"stack-crash-{uuid.uuid4().hex[:8]}"
    response = requests.get(url + "/crash", headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.status_code == 500

    (span,) = _server_spans(store, cid)
    assert span["name"] == "GET /crash"
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == "LookupError"


def test_a_view_error_under_both_layers_is_counted_with_its_exception(
    stacked_django_either: tuple[str, Path, str],
) -> None:
    """The metrics' ``error_type`` is the view's exception, as on the span and as with Django's
    middleware alone. Under tracekit's ASGI middleware the outer layer counted the 500 as it
    went out, with ``error_type="500"``, though the Django layer had already told it the
    exception."""
    url, _, metrics_url = stacked_django_either

    def crashes_counted() -> dict[str, float]:
        families = text_string_to_metric_families(requests.get(metrics_url, timeout=10).text)
        (duration,) = [f for f in families if f.name == "http_server_request_duration_seconds"]
        return {
            s.labels["error_type"]: s.value
            for s in duration.samples
            if s.name.endswith("_count") and s.labels["http_route"] == "/crash"
        }

    before = crashes_counted()
    assert requests.get(url + "/crash", timeout=10).status_code == 500

    wait_for(lambda: crashes_counted() != before, 5, "the crash counted")
    after = crashes_counted()
    assert {k: n - before.get(k, 0.0) for k, n in after.items() if n != before.get(k)} == {
        "LookupError": 1.0
    }


def test_a_streamed_response_under_both_layers_is_named_by_its_route(
    stacked_django_either: tuple[str, Path, str],
) -> None:
    """Under ASGI, Django sends a streamed body's last chunk, then closes the response: the
    outer layer ended the request at that last chunk, before the Django middleware, which names
    it at the close, told it the route: a bare ``GET`` span, counted as ``_unmatched``."""
    url, store, metrics_url = stacked_django_either
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    cid = f"stack-stream-{uuid.uuid4().hex[:8]}"
    response = requests.get(url + "/stream", headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.text == f"{cid}\n" * 3

    (span,) = _server_spans(store, cid)
    assert span["name"] == "GET /stream"
    assert span["attributes"]["http.route"] == "/stream"
    wait_for(lambda: _counted_since(metrics_url, before), 5, "the request counted")
    assert _counted_since(metrics_url, before) == {("/stream", "200"): 1.0}


def test_a_client_that_leaves_during_the_view_under_both_layers_is_a_499(
    stacked_django_either: tuple[str, Path, str], request: pytest.FixtureRequest
) -> None:
    """Under ASGI Django cancels the view and sends nothing: only the Django middleware saw the
    client leave, and the outer layer ended the request without a status (no
    ``http.response.status_code``, counted with an empty status, which the dashboards' error
    ratio, ``=~"5..|"``, takes for a server error). Under WSGI the view runs to its end."""
    url, store, metrics_url = stacked_django_either
    status = {"wsgi": 200, "asgi": 499}[request.node.callspec.params["stacked_django_either"]]
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    cid = f"stack-left-{uuid.uuid4().hex[:8]}"
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET /slow HTTP/1.1\r\nHost: {host}\r\nX-Correlation-ID: {cid}\r\n\r\n".encode()
        )
        time.sleep(0.1)  # the view is running; the client gives up

    (span,) = _server_spans(store, cid)
    assert (span["name"], span["status"]) == ("GET /slow", "UNSET")
    assert span["attributes"]["http.response.status_code"] == status
    wait_for(lambda: _counted_since(metrics_url, before), 5, "the request counted")
    assert _counted_since(metrics_url, before) == {("/slow", str(status)): 1.0}


def test_a_client_that_leaves_during_its_upload_under_both_layers_is_a_499(
    stacked_django_either: tuple[str, Path, str], request: pytest.FixtureRequest
) -> None:
    """Under ASGI Django reads the whole body before any middleware and, when the client
    leaves first, returns without answering: the outer layer ended the request without a
    status (a span named ``POST`` without ``http.response.status_code``, counted with an empty
    status, which the dashboards' error ratio takes for a server error). Under WSGI the view
    runs, its body unread."""
    url, store, metrics_url = stacked_django_either
    server = request.node.callspec.params["stacked_django_either"]
    # a route no other test here counts: the counts are keyed by route and status alone
    route, status = {"wsgi": ("/archive/{0}/{1}/", 200), "asgi": ("_unmatched", 499)}[server]
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    cid = f"stack-upload-{uuid.uuid4().hex[:8]}"
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /archive/2024/05/ HTTP/1.1\r\nHost: {host}\r\nX-Correlation-ID: {cid}\r\n"
            "Content-Length: 100000\r\n\r\npart".encode()
        )
        time.sleep(0.1)  # the body is being read; the client gives up

    (span,) = _server_spans(store, cid)
    assert span["status"] == "UNSET"
    assert span["attributes"]["http.response.status_code"] == status
    wait_for(lambda: _counted_since(metrics_url, before), 5, "the request counted")
    assert _counted_since(metrics_url, before) == {(route, str(status)): 1.0}


def test_a_path_djangos_settings_exclude_is_excluded_under_both_layers(
    stacked_django_either: tuple[str, Path, str],
) -> None:
    """The site's ``TRACEKIT = {"excluded_urls": ["^/health$"]}`` is read by the Django
    middleware alone: wrapped in tracekit's WSGI or ASGI middleware too, as docs/middleware.md
    advises, every health check was a stored span named ``GET`` and a request counted under
    ``_unmatched``."""
    url, store, metrics_url = stacked_django_either
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    checks = [f"stack-health-{n}-{uuid.uuid4().hex[:8]}" for n in range(3)]
    for cid in checks:
        response = requests.get(url + "/health", headers={"X-Correlation-ID": cid}, timeout=10)
        assert response.status_code == 200
        assert response.text.startswith(cid)  # the ID still works inside the view
    order = f"stack-order-{uuid.uuid4().hex[:8]}"
    requests.get(url + "/orders/4", headers={"X-Correlation-ID": order}, timeout=10)

    (span,) = _server_spans(store, order)  # exported after the health checks' would have been
    assert span["name"] == "GET /orders/{order_id}"
    wait_for(lambda: _counted_since(metrics_url, before), 5, "the order counted")
    assert _counted_since(metrics_url, before) == {("/orders/{order_id}", "200"): 1.0}
    with Store(store) as source:
        assert [reconstruct(source, cid) for cid in checks] == [None, None, None]
    assert _in_flight(requests.get(metrics_url, timeout=10).text) == [0.0]


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def stacked_django_configured_in_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, str]]:
    """The stacked site under gunicorn and uvicorn, its tracekit configuration in the
    ``TRACEKIT`` setting alone (django_site/settings_own_header.py)."""
    yield from _serve_stacked_django(
        tmp_path_factory,
        contrib_outside=False,
        server=_UNDER[request.param],
        DJANGO_SETTINGS_MODULE="django_site.settings_own_header",
    )


def _services_counted(metrics_url: str) -> dict[str, float]:
    """``service_name`` -> requests counted, from a scrape."""
    families = text_string_to_metric_families(requests.get(metrics_url, timeout=10).text)
    counted: dict[str, float] = {}
    for family in families:
        if family.name == "http_server_request_duration_seconds":
            for s in family.samples:
                if s.name.endswith("_count"):
                    service = s.labels["service_name"]
                    counted[service] = counted.get(service, 0.0) + s.value
    return counted


def test_the_tracekit_setting_configures_both_layers(
    stacked_django_configured_in_settings: tuple[str, Path, str],
) -> None:
    """The outer layer read ``tracekit.init``'s options alone: a response carried both
    ``X-Correlation-ID`` and the setting's ``X-Request-ID``, a request's ``X-Correlation-ID``
    was read though the setting names ``X-Request-ID`` alone, and the request was counted under
    the service ``tracekit.init`` named, not the setting's ``shop``."""
    url, store, metrics_url = stacked_django_configured_in_settings
    cid = f"own-{uuid.uuid4().hex[:8]}"
    response = requests.get(url + "/orders/1", headers={"X-Request-ID": cid}, timeout=10)
    assert response.headers["X-Request-ID"] == cid
    assert "X-Correlation-ID" not in response.headers
    assert response.text.startswith(cid)

    unread = requests.get(url + "/orders/2", headers={"X-Correlation-ID": "not-read"}, timeout=10)
    assert unread.headers["X-Request-ID"] != "not-read"
    assert "X-Correlation-ID" not in unread.headers
    assert unread.text.startswith(unread.headers["X-Request-ID"])

    (span,) = _server_spans(store, cid)
    assert (span["name"], span["attributes"]["correlation.id"]) == ("GET /orders/{order_id}", cid)
    wait_for(lambda: _services_counted(metrics_url).get("shop", 0) >= 2, 5, "2 requests counted")
    assert _services_counted(metrics_url) == {"shop": 2.0}


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_public_endpoint_in_the_tracekit_setting_is_one_under_both_layers(
    tmp_path_factory: pytest.TempPathFactory, server: str
) -> None:
    """``TRACEKIT = {"public_endpoint": True}``: the outer layer did not read it and continued
    the caller's trace, whatever trace context a client on the internet sent."""
    served = _serve_stacked_django(
        tmp_path_factory,
        contrib_outside=False,
        server=_UNDER[server],
        DJANGO_SETTINGS_MODULE="django_site.settings_public_endpoint",
    )
    url, store, _ = next(served)
    caller = "0af7651916cd43dd8448eb211c80319c"
    cid = f"public-{uuid.uuid4().hex[:8]}"
    headers = {"traceparent": f"00-{caller}-b7ad6b7169203331-01", "X-Correlation-ID": cid}
    try:
        seen = requests.get(url + "/trace-seen", headers=headers, timeout=10).text.split()[0]
        (span,) = _server_spans(store, cid)
    finally:
        served.close()
    assert seen != caller and span["trace_id"] == seen
    assert span["links"] == [{"trace_id": caller, "span_id": "b7ad6b7169203331"}]


def test_a_path_the_tracekit_setting_excludes_is_left_out_whole_under_both_layers(
    stacked_django_configured_in_settings: tuple[str, Path, str],
) -> None:
    """The outer layer opened a span and counted the request in flight, and dropped both once
    the Django layer excluded it: the request was in flight while it ran, and a span made in
    its view (a health check's own) named that span, never exported, as its parent ("parent
    span missing"). Now a span made there starts a trace of its own, as under OpenTelemetry's
    instrumentations, and carries the request's correlation ID."""
    url, store, _ = stacked_django_configured_in_settings
    assert _in_flight(requests.get(url + "/in-flight", timeout=10).text) == [0.0]

    cid = f"own-health-{uuid.uuid4().hex[:8]}"
    response = requests.get(url + "/health/deep", headers={"X-Request-ID": cid}, timeout=10)
    assert (response.text, response.headers["X-Request-ID"]) == (cid, cid)

    path = stored_path(store, cid)
    assert [(s["name"], s["parent_span_id"]) for s in path["spans"]] == [("check database", None)]
    assert path["warnings"] == []


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_path_excluded_below_a_layer_that_cannot_read_the_setting_is_left_out_whole(
    tmp_path_factory: pytest.TempPathFactory, server: str
) -> None:
    """Django's handler behind a function of the project's: the outer layer cannot read the
    ``TRACEKIT`` setting, and learns of the exclusion from the Django layer once it started the
    request. The request was in flight for the whole view, and a span the view made named the
    outer layer's span, never exported, as its parent ("parent span missing")."""
    server_command = {
        "wsgi": ["gunicorn", "--bind", "127.0.0.1:{port}", "django_site.wsgi_stacked_hidden"],
        "asgi": ["uvicorn", "--port", "{port}", "django_site.asgi_stacked_hidden:application"],
    }[server]
    served = _serve_stacked_django(
        tmp_path_factory,
        contrib_outside=False,
        server=server_command,
        DJANGO_SETTINGS_MODULE="django_site.settings_excluding_in_flight",
    )
    url, store, _ = next(served)
    try:
        during = requests.get(url + "/in-flight", timeout=10).text
        cid = f"hidden-{uuid.uuid4().hex[:8]}"
        response = requests.get(url + "/health/deep", headers={"X-Correlation-ID": cid}, timeout=10)

        path = stored_path(store, cid)
    finally:
        served.close()
    assert _in_flight(during) == [0.0]
    assert response.text == cid
    assert [(s["name"], s["parent_span_id"]) for s in path["spans"]] == [("check database", None)]
    assert path["warnings"] == []


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_a_correlation_only_request_under_both_layers_has_one_id(
    tmp_path_factory: pytest.TempPathFactory, server: str
) -> None:
    """Without a span to share, the outer layer's request was no request to the Django layer:
    for a request without a correlation header each layer made up an ID, and what Django's
    ``request_started`` receivers saw (the outer layer's) was not the ID the view, its logs and
    the response had (the Django layer's)."""
    served = _serve_stacked_django(
        tmp_path_factory,
        contrib_outside=False,
        server=_UNDER[server],
        DJANGO_SETTINGS_MODULE="django_site.settings_correlation_only",
    )
    url, _, _ = next(served)
    try:
        requests.get(url + "/started-with", timeout=10)  # loads the URLconf, which connects them
        answers = [requests.get(url + "/started-with", timeout=10) for _ in range(3)]
        shown = [requests.get(url + "/orders/5", timeout=10) for _ in range(3)]
    finally:
        served.close()
    assert [r.text for r in answers] == [r.headers["X-Correlation-ID"] for r in answers]
    assert [r.text.split()[0] for r in shown] == [r.headers["X-Correlation-ID"] for r in shown]


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_under_both_layers_a_middleware_listed_above_tracekits_is_no_warning(
    tmp_path_factory: pytest.TempPathFactory, server: str
) -> None:
    """The outer layer sees what a middleware above tracekit's Django middleware answers
    itself (CommonMiddleware's APPEND_SLASH redirect): nothing goes unseen to warn about."""
    served = _serve_stacked_django(
        tmp_path_factory,
        contrib_outside=False,
        server=_UNDER[server],
        DJANGO_SETTINGS_MODULE="django_site.settings_below_common",
    )
    url, store, _ = next(served)
    try:
        redirect = requests.get(url + "/legacy/abc", allow_redirects=False, timeout=10)
        assert redirect.status_code == 301 and "X-Correlation-ID" in redirect.headers
    finally:
        served.close()
    assert "above tracekit.django" not in (store.parent / "server.log").read_text()


def test_request_started_receivers_see_their_own_request_under_both_layers(
    stacked_django: tuple[str, Path, str],
) -> None:
    """Django sends ``request_started`` before any middleware runs: with tracekit's Django
    middleware alone its receivers see no correlation ID. docs/middleware.md says to wrap the
    application in the WSGI middleware too for them to see their request's: they do."""
    url = stacked_django[0]
    requests.get(url + "/started-with", timeout=10)  # loads the URLconf, which connects them
    headers = {"X-Correlation-ID": "started-1"}
    assert requests.get(url + "/started-with", headers=headers, timeout=10).text == "started-1"


def test_a_mounted_sub_application_with_its_own_middleware_is_one_request(
    serve_asgi: Any, wait_for_spans: Any, spans: InMemorySpanExporter
) -> None:
    registry = CollectorRegistry()
    shop = TracekitMiddleware(_item_app(registry, "starlette"), registry=registry)
    app = TracekitMiddleware(Starlette(routes=[Mount("/shop", app=shop)]), registry=registry)

    during = _three_items_counted_once(serve_asgi(app), registry)

    server_spans = [s for s in wait_for_spans(3) if s.kind.name == "SERVER"]
    assert [s.name for s in server_spans] == ["GET /shop/items/{item_id}"] * 3
    assert [s.attributes["correlation.id"] for s in server_spans] == [
        r.headers["X-Correlation-ID"] for r in during
    ]


class _ScopeCopying:
    """A middleware that passes a copy of the scope on, as some auth and proxy-header ones do."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(dict(scope), receive, send)


def test_a_scope_copied_between_the_layers_keeps_the_route_the_inner_one_saw(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    # Starlette's routing below the copying middleware wrote the route into the copy, which the
    # outer layer never reads: the request was a bare "GET" span and an unmatched metric
    registry = CollectorRegistry()
    shop = _ScopeCopying(TracekitMiddleware(_item_app(registry, "starlette"), registry=registry))
    app = TracekitMiddleware(Starlette(routes=[Mount("/shop", app=shop)]), registry=registry)

    _three_items_counted_once(serve_asgi(app), registry)

    server_spans = [s for s in wait_for_spans(3) if s.kind.name == "SERVER"]
    assert [s.name for s in server_spans] == ["GET /shop/items/{item_id}"] * 3
    assert [s.attributes["http.route"] for s in server_spans] == ["/shop/items/{item_id}"] * 3


def _three_items_counted_once(url: str, registry: CollectorRegistry) -> list[Any]:
    """Three requests for a shop item, each seeing itself alone in flight and counted once,
    under its route; their responses."""
    during = [requests.get(f"{url}/shop/items/{n}", timeout=10) for n in range(3)]

    assert [_in_flight(response.text) for response in during] == [[1.0]] * 3

    def counts() -> dict[tuple[str, str], float]:
        return _request_counts(generate_latest(registry).decode())

    # the server records a request once it has sent the response: wait for the last one
    wait_for(lambda: sum(counts().values()) >= 3, 5, "3 requests counted")
    assert counts() == {("/shop/items/{item_id}", "200"): 3.0}
    return during


def _item_app(registry: CollectorRegistry, kind: str) -> Any:
    """The shop's sub-application, answering the exposition of ``registry`` from inside the
    request: a Starlette app, or a FastAPI app with FastAPI's own SERVER span."""

    async def exposition(request: Request) -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode())

    if kind == "starlette":
        return Starlette(routes=[Route("/items/{item_id}", exposition)])
    from fastapi import FastAPI

    app = FastAPI()
    app.add_api_route("/items/{item_id}", exposition)
    return app


@pytest.mark.parametrize("outside", ["contrib-asgi", "fastapi-telemetry"])
def test_a_server_span_opened_around_or_between_the_layers_keeps_it_one_request(
    outside: str, serve_asgi: Any, wait_for_spans: Any, spans: InMemorySpanExporter
) -> None:
    """OpenTelemetry's ASGI middleware around both layers, or FastAPI's own SERVER span around
    each app (a FastAPI app mounting another, each with tracekit's middleware): each layer
    stamped that span instead of its own, and every request was counted twice."""
    registry = CollectorRegistry()
    if outside == "contrib-asgi":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        shop = TracekitMiddleware(_item_app(registry, "starlette"), registry=registry)
        inner = TracekitMiddleware(Starlette(routes=[Mount("/shop", app=shop)]), registry=registry)
        app: Any = OpenTelemetryMiddleware(inner)
    else:
        from fastapi import FastAPI

        child = _item_app(registry, "fastapi")
        child.add_middleware(TracekitMiddleware, registry=registry)
        app = FastAPI()
        app.add_middleware(TracekitMiddleware, registry=registry)
        app.mount("/shop", child)

    during = _three_items_counted_once(serve_asgi(app), registry)

    outermost = [s for s in wait_for_spans(3) if s.kind.name == "SERVER" and s.parent is None]
    assert [s.attributes["correlation.id"] for s in outermost] == [
        r.headers["X-Correlation-ID"] for r in during
    ]


def test_a_traced_layer_inside_a_correlation_only_one_keeps_its_span(
    serve_wsgi: Any, wait_for_spans: Any
) -> None:
    """A correlation-only layer outside (``mode="correlation"`` on the WSGI app) has no span to
    share: the traced layer inside it opens its own, with the same correlation ID."""
    from tracekit import wsgi

    def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"hello"]

    traced = wsgi.TracekitMiddleware(hello, registry=CollectorRegistry())
    url = serve_wsgi(wsgi.TracekitMiddleware(traced, mode="correlation"))
    response = requests.get(url + "/hello", headers={"X-Correlation-ID": "layered-1"}, timeout=10)

    assert response.headers["X-Correlation-ID"] == "layered-1"
    (span,) = wait_for_spans(1)
    assert (span.name, span.attributes["correlation.id"]) == ("GET", "layered-1")


def test_a_correlation_only_layer_inside_a_traced_one_keeps_its_id(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """A sub-application mounted with ``mode="correlation"`` made up an ID of its own for a
    request without a correlation header: the view and the response had it, the request's span
    another one."""
    import tracekit

    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(tracekit.correlation_id()))

    shop = TracekitMiddleware(Starlette(routes=[Route("/items/{n}", item)]), mode="correlation")
    app = TracekitMiddleware(Starlette(routes=[Mount("/shop", app=shop)]))
    response = requests.get(serve_asgi(app) + "/shop/items/1", timeout=10)

    (span,) = [s for s in wait_for_spans(1) if s.kind.name == "SERVER"]
    assert response.text == response.headers["X-Correlation-ID"]
    assert span.attributes["correlation.id"] == response.text


@pytest.mark.parametrize("outer", ["starlette", "fastapi-tracing-off"])
def test_a_fastapi_app_mounted_under_a_traced_app_is_one_request_with_one_id(
    outer: str, serve_asgi: Any, wait_for_spans: Any, spans: InMemorySpanExporter
) -> None:
    """A FastAPI sub-application whose constructor adds tracekit's middleware, mounted in an
    app traced by tracekit without FastAPI's own span around it. FastAPI's SERVER span for the
    sub-application starts from the request's headers alone, so the context the inner layer
    met held nothing of the outer one: it traced the request again, counted it a second time
    and, for a request without a correlation header, gave it a second correlation ID (the
    response's ID was not the one on tracekit's span)."""
    from fastapi import FastAPI

    import tracekit

    registry = CollectorRegistry()

    class ShopApi(FastAPI):
        def __init__(self) -> None:
            super().__init__()
            self.add_middleware(TracekitMiddleware, registry=registry)

    child = ShopApi()

    @child.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"correlation_id": tracekit.correlation_id()}

    if outer == "starlette":
        app: Any = TracekitMiddleware(
            Starlette(routes=[Mount("/shop", app=child)]), registry=registry
        )
    else:
        app = FastAPI(telemetry={"tracing": False})
        app.add_middleware(TracekitMiddleware, registry=registry)
        app.mount("/shop", child)

    response = requests.get(serve_asgi(app) + "/shop/items/3", timeout=10)
    cid = response.headers["X-Correlation-ID"]

    assert response.json() == {"correlation_id": cid}
    server_spans = [s for s in wait_for_spans(2) if s.kind.name == "SERVER"]
    # FastAPI's own span for the sub-application is FastAPI's doing; tracekit's is one
    (own,) = [s for s in server_spans if s.instrumentation_scope.name == "tracekit"]
    assert own.name == "GET /shop/items/{item_id}"
    assert {s.attributes["correlation.id"] for s in server_spans} == {cid}

    def counts() -> dict[tuple[str, str], float]:
        return _request_counts(generate_latest(registry).decode())

    wait_for(counts, 5, "the request counted")
    assert counts() == {("/shop/items/{item_id}", "200"): 1.0}


def test_a_websocket_through_a_mounted_app_with_its_own_middleware_keeps_the_mount(
    serve_asgi: Any, wait_for_spans: Any
) -> None:
    """A WebSocket ends when the application returns, so the inner layer (added inside the
    sub-application, which names itself in the scope) named its route first, from the
    sub-application, where the mount is not seen; that name was remembered for the route
    object and the outer layer's span took it: ``GET /chat/{room}`` for a socket served at
    ``/shop/chat/{room}``."""
    from starlette.websockets import WebSocket
    from websockets.sync.client import connect

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    shop = Starlette(routes=[WebSocketRoute("/chat/{room}", chat)])
    shop.add_middleware(TracekitMiddleware)  # inside the sub-application, which names itself
    url = serve_asgi(TracekitMiddleware(Starlette(routes=[Mount("/shop", app=shop)])))
    with connect(url.replace("http://", "ws://") + "/shop/chat/lobby") as socket:
        assert socket.recv(timeout=10) == "hello"

    (span,) = [s for s in wait_for_spans(1) if s.kind.name == "SERVER"]
    assert (span.name, span.attributes["http.route"]) == (
        "GET /shop/chat/{room}",
        "/shop/chat/{room}",
    )


def test_a_plain_asgi_app_mounted_in_a_sub_application_with_its_own_middleware_keeps_its_mount(
    serve_asgi: Any, wait_for_spans: Any, caplog: Any
) -> None:
    """A WebSocket, and a request that fails with a 5xx, end with the application: the layer
    inside the sub-application named them first, under the sub-application's mount (``/ws``),
    and the outer layer followed the mount it found with that name, as it follows a mounted
    Flask app's mount with the route Flask names: ``GET /shop/ws/ws``."""
    from websockets.sync.client import connect

    async def sockets(scope: Any, receive: Any, send: Any) -> None:  # as socketio's ASGIApp
        if scope["type"] == "http":
            raise RuntimeError("the socket server failed")
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})
        await send({"type": "websocket.close"})

    caplog.set_level(logging.CRITICAL)  # uvicorn logs the exception
    registry = CollectorRegistry()
    shop = Starlette(routes=[Mount("/ws", app=sockets)])
    shop.add_middleware(TracekitMiddleware, registry=registry)
    app = TracekitMiddleware(Starlette(routes=[Mount("/shop", app=shop)]), registry=registry)
    url = serve_asgi(app)
    with connect(url.replace("http://", "ws://") + "/shop/ws/lobby") as socket:
        assert socket.recv(timeout=10) == "hello"
    assert requests.get(url + "/shop/ws/poll", timeout=10).status_code == 500

    server_spans = [s for s in wait_for_spans(2) if s.kind.name == "SERVER"]
    assert [(s.name, s.attributes["http.route"]) for s in server_spans] == [
        ("GET /shop/ws", "/shop/ws")
    ] * 2

    def counts() -> dict[tuple[str, str], float]:
        return _request_counts(generate_latest(registry).decode())

    wait_for(counts, 5, "the request counted")
    assert counts() == {("/shop/ws", "500"): 1.0}


def _traces_seen(url: str, prefix: str) -> dict[str, tuple[str, bool]]:
    """20 requests to ``/trace-seen``, each with a correlation ID of its own: by ID, the trace
    the view saw and whether it was sampled."""
    seen = {}
    for n in range(20):
        cid = f"{prefix}-{n}-{uuid.uuid4().hex[:8]}"
        response = requests.get(url + "/trace-seen", headers={"X-Correlation-ID": cid}, timeout=10)
        assert response.status_code == 200
        assert response.headers["X-Correlation-ID"] == cid
        trace_id, sampled = response.text.split()
        seen[cid] = (trace_id, sampled == "True")
    return seen


def test_contribs_django_span_between_the_layers_leaves_one_request_and_one_decision(
    contrib_django_between_the_layers: tuple[str, Path, str],
) -> None:
    """OpenTelemetry's Django middleware made its span current between the layers: the inner
    layer took the request for a new one, opened a second SERVER span, in a trace of its own
    that the sampler was asked about again, and both layers counted it (the outer one as
    ``_unmatched``). The view saw a trace that was not the request's; with 0.3, 16 of 40
    requests stored a trace the view never saw, and 5 one of the view's alone."""
    url, store, metrics_url = contrib_django_between_the_layers
    before = _request_counts(requests.get(metrics_url, timeout=10).text)
    seen = _traces_seen(url, "between")

    wait_for(
        lambda: sum(_counted_since(metrics_url, before).values()) >= 20, 5, "20 requests counted"
    )
    assert _counted_since(metrics_url, before) == {("/trace-seen", "200"): 20.0}
    kept = [cid for cid, (_, sampled) in seen.items() if sampled]
    assert 0 < len(kept) < 20  # (each request is kept with odds of one half)
    for cid in kept:
        (span,) = _server_spans(store, cid)
        assert span["name"] == "GET /trace-seen"
        assert span["trace_id"] == seen[cid][0]
    wait_for(lambda: _stored_correlation_ids(store) >= set(kept), 15, "the kept requests")
    assert _stored_correlation_ids(store) & set(seen) == set(kept)


def test_contribs_django_span_inside_contribs_wsgi_span_is_the_one_tracekit_stamps(
    contrib_around_django: tuple[str, Path, str],
) -> None:
    """Contrib's Django span, INTERNAL inside contrib's WSGI SERVER span, was current as
    tracekit's Django middleware started: tracekit opened a SERVER span of its own from the
    headers alone, the root of another trace that the sampler was asked about again (0.3, 40
    requests: 15 traces stored, 11 of them without the view's work), and a caller's trace got two
    SERVER spans a request. Now tracekit stamps contrib's span and adds none."""
    url, store, _ = contrib_around_django
    seen = _traces_seen(url, "contrib")

    kept = [cid for cid, (_, sampled) in seen.items() if sampled]
    assert 0 < len(kept) < 20  # (each request is kept with odds of one half)
    for cid in kept:
        (span,) = _server_spans(store, cid)  # contrib's WSGI span
        assert span["trace_id"] == seen[cid][0]
        with Store(store) as source:
            path = reconstruct(source, cid)
        assert path is not None and path.to_json()["trace_ids"] == [seen[cid][0]]
        stamped = [s for s in path.to_json()["spans"] if s["kind"] == "INTERNAL"]
        assert [s["attributes"]["correlation.id"] for s in stamped] == [cid]  # contrib's Django
    wait_for(lambda: _stored_correlation_ids(store) >= set(kept), 15, "the kept requests")
    assert _stored_correlation_ids(store) & set(seen) == set(kept)


def _stored_correlation_ids(store: Path) -> set[str]:
    with Store(store) as source:
        return {r.correlation_id for r in source.recent_requests(limit=1000) if r.correlation_id}
