"""A Django project (tests/http/django_site) as users run it: under gunicorn (WSGI) and uvicorn
(ASGI), ``tracekit.init`` in its wsgi.py/asgi.py, exporting into the embedded store. Asserts the
route names of path, re_path (named and unnamed groups), include prefixes of both kinds and
i18n_patterns, and that what Django answers with a 4xx is not a server error, on the path
``tracekit trace`` shows (the same reconstruction the CLI renders)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from conditions import wait_for
from loopback import free_port
from stored import stored_path

from tracekit._runtime.guard import MAX_MESSAGE

HERE = Path(__file__).resolve().parent

ROUTES = [  # (request path, route template, status)
    ("/orders/7", "/orders/{order_id}", 200),
    ("/legacy/abc/", "/legacy/{slug}/", 200),
    ("/archive/2024/05/", "/archive/{0}/{1}/", 200),
    ("/files/report.v2.json", "/files/{name}.json", 200),
    ("/api/v2/orders/7/", "/api/v{version}/orders/{order_id}/", 200),
    ("/api/v2/legacy/abc/", "/api/v{version}/legacy/{slug}/", 200),
    ("/shop/acme/orders/7/", "/shop/{shop}/orders/{order_id}/", 200),
    ("/en/about/", "/{language}/about/", 200),
    ("/fr/about/", "/{language}/about/", 200),
    ("/fr/news/2024/", "/{language}/news/{year}/", 200),
    ("/missing/9001", "/missing/{item_id}", 404),
    ("/forbidden", "/forbidden", 403),
    ("/suspicious", "/suspicious", 400),
]


def _command(server: str, port: int, wsgi: str = "django_site.wsgi") -> list[str]:
    bind = ["--bind", f"127.0.0.1:{port}"]
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", *bind, "--workers", "1", wsgi]
    return [sys.executable, "-m", "uvicorn", "--port", str(port), "django_site.asgi:application"]


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """(base URL, store path, metrics URL) of the site served by ``request.param``."""
    store = tmp_path_factory.mktemp("django") / "tracekit.db"
    with _served_site(request.param, store) as served:
        yield served


@contextmanager
def _served_site(
    server: str, store: Path, wsgi: str = "django_site.wsgi", **settings: str
) -> Iterator[tuple[str, Path, str]]:
    """The site served by ``server`` (gunicorn: the WSGI application ``wsgi``) with more
    ``TRACEKIT_*`` ``settings``, until the end."""
    env = {
        **os.environ,
        # the caller's path too: the servers run the tracekit under test (as tests/support/shop.py)
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "DJANGO_SETTINGS_MODULE": "django_site.settings",
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(store),
        "TRACEKIT_METRICS_PORT": str(metrics_port := free_port()),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **settings,
    }
    port = free_port()
    with _log_of(store).open("wb") as log:  # the server's stderr, beside the store
        process = subprocess.Popen(
            _command(server, port, wsgi), env=env, stdout=subprocess.DEVNULL, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 30, "the site")
        assert process.poll() is None, _log_of(store).read_text()
        yield url, store, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        process.terminate()
        process.wait(30)


def _log_of(store: Path) -> Path:
    return store.parent / "server.log"


def _answers(url: str) -> bool:
    try:
        # Nothing listening is retried at once; a request the server took is waited for,
        # however slow a loaded machine makes the first (Django sets up on it).
        requests.get(url + "/orders/0", timeout=(1, 30))
        return True
    except requests.ConnectionError:
        return False


@pytest.mark.parametrize(("request_path", "route", "status"), ROUTES)
def test_route_names_and_client_errors(
    site: tuple[str, Path, str], request_path: str, route: str, status: int
) -> None:
    url, store, metrics = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    response = requests.get(url + request_path, headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.status_code == status
    assert response.headers["X-Correlation-ID"] == cid

    path = stored_path(store, cid)
    (span,) = [s for s in path["spans"] if s["kind"] == "SERVER"]
    assert span["name"] == f"GET {route}"
    assert span["attributes"]["http.route"] == route
    assert span["attributes"]["http.response.status_code"] == status
    assert span["status"] != "ERROR"
    assert "error.type" not in span["attributes"]
    assert path["errors"] == []
    labels = (f'http_route="{route}"', f'http_response_status_code="{status}"')
    lines = requests.get(metrics, timeout=10).text.splitlines()
    assert any(all(label in line for label in labels) for line in lines)  # the metrics label


def test_server_error_is_recorded_with_its_message(site: tuple[str, Path, str]) -> None:
    url, store, _ = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    response = requests.get(url + "/crash", headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.status_code == 500
    assert response.headers["X-Correlation-ID"] == cid
    time.sleep(0.1)
    path = stored_path(store, cid)
    (span,) = [s for s in path["spans"] if s["kind"] == "SERVER"]
    assert span["status"] == "ERROR" and span["attributes"]["error.type"] == "LookupError"
    # The exception's own words, as for a failed task: bounded, on one printable line.
    start = "card service said:  [31mdeclined [0m "
    message = start + "x" * (MAX_MESSAGE - len(start)) + "…"
    assert span["status_message"] == f"LookupError: {message}"
    assert path["errors"] == [
        {"span_id": span["span_id"], "service": "django-site", "message": span["status_message"],
         "trace_id": span["trace_id"]}
    ]  # fmt: skip


@pytest.mark.parametrize("request_path", ["/middleware-crash", "/missing/9?fail-after"])
def test_a_middleware_below_that_raises_is_recorded_with_its_exception(
    site: tuple[str, Path, str], request_path: str
) -> None:
    """Django answers it with its 500 page, as it does a view's exception, but never passes it
    to ``process_exception``: the span was an error without a message, ``error.type`` "500"
    (after a view's ``Http404``, the 500 was that ``Http404``'s)."""
    url, store, _ = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    response = requests.get(url + request_path, headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.status_code == 500
    assert response.headers["X-Correlation-ID"] == cid

    path = stored_path(store, cid)
    (span,) = [s for s in path["spans"] if s["kind"] == "SERVER"]
    assert span["status"] == "ERROR"
    assert span["attributes"]["error.type"] == "ConnectionError"
    assert span["status_message"] == "ConnectionError: the session store is unreachable"
    assert [e["message"] for e in path["errors"]] == [span["status_message"]]


def test_server_is_described_as_the_wsgi_middleware_describes_it(
    site: tuple[str, Path, str],
) -> None:
    """url.scheme, server.address, server.port, network.protocol.version and client.address,
    under either server (Django's META has no SERVER_PROTOCOL under ASGI: the scope's
    http_version says it)."""
    url, store, _ = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    requests.get(url + "/orders/7", headers={"X-Correlation-ID": cid}, timeout=10)
    (span,) = [s for s in stored_path(store, cid)["spans"] if s["kind"] == "SERVER"]
    described = {k: v for k, v in span["attributes"].items() if k in WSGI_DESCRIBES}
    assert described == {
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": int(url.rsplit(":", 1)[1]),
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
    }


WSGI_DESCRIBES = (
    "url.scheme", "server.address", "server.port", "network.protocol.version", "client.address",
)  # fmt: skip


def test_a_streamed_response_ends_its_span_when_closed_and_logs_nothing(
    site: tuple[str, Path, str],
) -> None:
    """Under ASGI Django closes a streamed response from a worker thread's context, not the one
    the request started in: the span still ends, and nothing is logged about the context."""
    url, store, _ = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    response = requests.get(url + "/stream", headers={"X-Correlation-ID": cid}, timeout=10)
    assert (response.status_code, response.text) == (200, f"{cid}\n" * 3)

    (span,) = [s for s in stored_path(store, cid)["spans"] if s["kind"] == "SERVER"]
    assert (span["name"], span["status"]) == ("GET /stream", "UNSET")
    log = _log_of(store).read_text()
    assert "Failed to detach context" not in log and "tracekit" not in log, log


@pytest.mark.parametrize(
    ("request_path", "line"),
    [("/missing/9001", "Not Found: /missing/9001"), ("/refused", "Bad Request: /refused")],
)
def test_djangos_own_log_line_for_a_4xx_is_the_requests(
    site: tuple[str, Path, str], request_path: str, line: str
) -> None:
    """Django logs "Not Found: /x" (logger ``django.request``) after the middleware chain has
    returned: the line still carries the request's correlation ID and trace, so ``tracekit
    trace`` shows it under the request's span; and nothing of the request stays current after
    it (a request tracekit does not trace, served next on the same worker thread, sees none)."""
    url, store, _ = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    response = requests.get(url + request_path, headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.status_code in (400, 404)

    def logged() -> dict[str, Any] | None:
        path = stored_path(store, cid)
        return path if line in [log["body"] for log in path["logs"]] else None

    path = wait_for(logged, 15, f"{line!r} in the path of {cid}")
    (span,) = [s for s in path["spans"] if s["kind"] == "SERVER"]
    (log,) = [log for log in path["logs"] if log["body"] == line]
    assert (log["span_id"], log["severity"]) == (span["span_id"], "WARN")
    assert requests.get(url + "/health", timeout=10).text == "None False"


@pytest.mark.parametrize("request_path", ["/orders/5", "/stream"])
def test_request_finished_receivers_see_the_requests_correlation_id(
    site: tuple[str, Path, str], request_path: str
) -> None:
    """Django sends ``request_finished`` when the server closes the response. Under gunicorn its
    receivers (a project's log line, a metrics flush) saw the request's correlation ID and
    span; under uvicorn Django closes the response from its handler's task, outside the
    request's context, and they saw none: their log lines showed ``-``."""
    url = site[0]
    cid = "dj-" + uuid.uuid4().hex[:12]
    response = requests.get(url + request_path, headers={"X-Correlation-ID": cid}, timeout=10)
    assert response.status_code == 200

    def seen() -> list[str]:
        lines = requests.get(url + "/finished-with", timeout=10).text.splitlines()
        return [line for line in lines if line.startswith(cid)]

    assert wait_for(seen, 5, f"request_finished with {cid}") == [f"{cid} True"]


def test_a_view_that_returns_one_response_object_for_every_request_has_it_closed_each_time(
    site: tuple[str, Path, str],
) -> None:
    """tracekit's close on that response called the one it had put there for the request
    before: after some hundred requests closing it overflowed the stack ("RecursionError" in
    the server's log for every request), and Django's ``request_finished`` (which closes the
    database connections) was no longer sent."""
    url, store, _ = site
    with requests.Session() as session:
        for n in range(400):
            headers = {"X-Correlation-ID": f"shared-{n}"}
            response = session.get(url + "/shared", headers=headers, timeout=10)
            assert (response.text, response.headers["X-Correlation-ID"]) == ("ok", f"shared-{n}")

    finished = requests.get(url + "/finished-with", timeout=10).text.splitlines()
    assert "shared-399 True" in finished
    assert "RecursionError" not in _log_of(store).read_text()


@pytest.mark.parametrize("site", ["uvicorn"], indirect=True)  # gunicorn runs the view to its end
def test_request_finished_receivers_see_the_correlation_id_of_a_request_whose_client_left(
    site: tuple[str, Path, str],
) -> None:
    """Under ASGI Django cancels the view when the client disconnects and sends
    ``request_finished`` from its handler's task, where none of the request's context was:
    its receivers' lines showed ``-``, while those of a request that answered show its ID."""
    cid = _abandon_held_view(site[0])
    # the client has gone: Django cancels the view and sends request_finished
    seen = lambda: _finished_with(site[0], cid)  # noqa: E731
    assert wait_for(seen, 10, f"request_finished with {cid}") == [f"{cid} True"]


def _abandon_held_view(url: str) -> str:
    """Request ``/hold`` and give up once its view runs; returns the request's ID."""
    cid = "dj-" + uuid.uuid4().hex[:12]
    host, port = url.removeprefix("http://").split(":")
    head = f"GET /hold HTTP/1.1\r\nHost: {host}\r\nX-Correlation-ID: {cid}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        held = lambda: cid in requests.get(url + "/held", timeout=10).text.split()  # noqa: E731
        wait_for(held, 10, f"the view holding {cid}")
    return cid


def _finished_with(url: str, cid: str) -> list[str]:
    """What ``request_finished``'s receiver saw for the request ``cid``."""
    lines = requests.get(url + "/finished-with", timeout=10).text.splitlines()
    return [line for line in lines if line.startswith(cid)]


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_a_streamed_response_in_a_prefixed_language_is_named_with_its_prefix(
    server: str, tmp_path: Path
) -> None:
    """``i18n_patterns(prefix_default_language=False)``: a streamed response's span ends when
    the response is closed, under ASGI outside the request's task, where French is no longer
    the active language: ``/fr/stream/`` was named ``GET /stream/`` (the English page's
    route), where ``/fr/about/`` is ``GET /{language}/about/``."""
    unprefixed = {"DJANGO_SETTINGS_MODULE": "django_site.settings_default_language_unprefixed"}
    with _served_site(server, tmp_path / "t.db", **unprefixed) as (url, store, metrics):
        for request_path, cid in (("/fr/about/", "fr-page-1"), ("/fr/stream/", "fr-stream-1")):
            response = requests.get(
                url + request_path, headers={"X-Correlation-ID": cid}, timeout=10
            )
            assert response.status_code == 200
        names = {cid: _server_span(store, cid)["name"] for cid in ("fr-page-1", "fr-stream-1")}
        lines = requests.get(metrics, timeout=10).text.splitlines()
    assert names == {
        "fr-page-1": "GET /{language}/about/",
        "fr-stream-1": "GET /{language}/stream/",
    }
    assert not any('http_route="/stream/"' in line for line in lines)


def test_a_prefixed_language_page_whose_view_switches_language_keeps_its_prefix(
    tmp_path: Path,
) -> None:
    """``i18n_patterns(prefix_default_language=False)``: the language prefix was read from the
    language active when the route was named, so ``/fr/in-english/``, whose view makes English
    active, was named ``GET /in-english/``, the English page's route."""
    unprefixed = {"DJANGO_SETTINGS_MODULE": "django_site.settings_default_language_unprefixed"}
    with _served_site("gunicorn", tmp_path / "t.db", **unprefixed) as (url, store, metrics):
        headers = {"X-Correlation-ID": "fr-switch-1"}
        response = requests.get(url + "/fr/in-english/", headers=headers, timeout=10)
        assert response.status_code == 200
        assert _server_span(store, "fr-switch-1")["name"] == "GET /{language}/in-english/"
        lines = requests.get(metrics, timeout=10).text.splitlines()
    assert any('http_route="/{language}/in-english/"' in line for line in lines), lines


@pytest.mark.parametrize(
    ("settings", "request_path"),
    [
        ("settings_default_language_unprefixed", "/en/news/"),
        ("settings_without_locale_middleware", "/fr/news/"),
    ],
)
def test_a_default_language_page_whose_path_starts_like_a_language_has_no_prefix(
    settings: str, request_path: str, tmp_path: Path
) -> None:
    """``i18n_patterns(prefix_default_language=False)`` with an English page at
    ``<slug:section>/news/``: ``/en/news/`` (or, without ``LocaleMiddleware``, ``/fr/news/``) is
    that English page, its section the first part, yet the language prefix was told by the
    path alone and it was named ``GET /{language}/{section}/news/``, a route it has not."""
    module = {"DJANGO_SETTINGS_MODULE": f"django_site.{settings}"}
    with _served_site("gunicorn", tmp_path / "t.db", **module) as (url, store, metrics):
        headers = {"X-Correlation-ID": "section-1"}
        response = requests.get(url + request_path, headers=headers, timeout=10)
        section = request_path.split("/")[1]
        assert response.text == f"section-1 () [('section', '{section}')]"
        assert _server_span(store, "section-1")["name"] == "GET /{section}/news/"
        lines = requests.get(metrics, timeout=10).text.splitlines()
    assert any('http_route="/{section}/news/"' in line for line in lines), lines
    assert not any("{language}" in line for line in lines), lines


def _server_span(store: Path, correlation_id: str) -> dict[str, Any]:
    (span,) = [s for s in stored_path(store, correlation_id)["spans"] if s["kind"] == "SERVER"]
    return span


CACHED = {"DJANGO_SETTINGS_MODULE": "django_site.settings_cached"}


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_a_page_djangos_cache_middleware_caches_is_served_and_served_again(
    server: str, tmp_path: Path
) -> None:
    """``UpdateCacheMiddleware`` pickles the response: the close tracekit's middleware had put
    on it could not be, and every cacheable page was a 500 ("Can't pickle local object"). Each
    request served from the cache gets its own correlation ID, not the cached page's."""
    with _served_site(server, tmp_path / "t.db", **CACHED) as (url, store, _):
        first = requests.get(url + "/orders/7", headers={"X-Correlation-ID": "cache-1"}, timeout=10)
        again = requests.get(url + "/orders/7", headers={"X-Correlation-ID": "cache-2"}, timeout=10)

        assert (first.status_code, first.text) == (200, "cache-1 () [('order_id', 7)]")
        assert (again.status_code, again.text) == (200, first.text)  # from the cache
        # the cached copy carried the header of the request it was made for
        assert [first.headers["X-Correlation-ID"], again.headers["X-Correlation-ID"]] == [
            "cache-1",
            "cache-2",
        ]
        assert _server_span(store, "cache-1")["name"] == "GET /orders/{order_id}"


def test_a_response_replaced_above_the_middleware_leaves_nothing_of_its_request(
    tmp_path: Path,
) -> None:
    """tracekit's middleware below CommonMiddleware, whose APPEND_SLASH redirect replaces the
    404 tracekit saw: gunicorn closes the redirect, never that 404, and the request's context
    stayed current in the worker: the next request's ``request_started`` receivers (and any
    line the worker logged in between) had the redirected request's correlation ID."""
    below_common = {"DJANGO_SETTINGS_MODULE": "django_site.settings_below_common"}
    with _served_site("gunicorn", tmp_path / "t.db", **below_common) as (url, _, _):
        headers = {"X-Correlation-ID": "redirected-1"}
        redirect = requests.get(
            url + "/legacy/abc", headers=headers, allow_redirects=False, timeout=10
        )
        assert redirect.status_code == 301 and redirect.headers["Location"] == "/legacy/abc/"
        after = requests.get(url + "/started-with", timeout=10)
    assert after.text == "None"


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_a_middleware_listed_above_tracekits_is_named_once_in_a_warning(
    tmp_path: Path, server: str
) -> None:
    """Django runs the middleware listed above tracekit's first: what one of them answers itself
    (SecurityMiddleware's HTTPS redirect, CommonMiddleware's APPEND_SLASH redirect, a
    maintenance page) was never traced nor counted, without a word. OpenTelemetry's Django
    instrumentation puts its middleware first by itself; tracekit leaves MIDDLEWARE as the user
    wrote it, and says which ones are above it."""
    below_common = {"DJANGO_SETTINGS_MODULE": "django_site.settings_below_common"}
    with _served_site(server, tmp_path / "t.db", **below_common) as (url, _, _):
        for _ in range(3):
            redirect = requests.get(url + "/legacy/abc", allow_redirects=False, timeout=10)
            assert redirect.status_code == 301
    warnings = [
        line
        for line in _log_of(tmp_path / "t.db").read_text().splitlines()
        if "above tracekit.django.TracekitMiddleware" in line
    ]
    assert len(warnings) == 1, warnings
    assert "django.middleware.common.CommonMiddleware" in warnings[0]


def test_a_site_that_lists_tracekits_middleware_first_has_no_such_warning(
    site: tuple[str, Path, str],
) -> None:
    """The test site lists it first (and under both layers the outer one sees every request)."""
    url, store, _ = site
    assert requests.get(url + "/orders/3", timeout=10).status_code == 200
    assert "above tracekit.django" not in _log_of(store).read_text()


@pytest.mark.parametrize("site", ["uvicorn"], indirect=True)  # gunicorn's sync worker: one
def test_a_request_pipelined_behind_another_sees_nothing_of_it(  # request per connection
    site: tuple[str, Path, str],
) -> None:
    """uvicorn starts a connection's next pipelined request from inside the send of the
    previous response, which Django makes in the previous request's context: the excluded
    health check behind it saw that request's correlation ID and span."""
    first, second = _pipelined(site[0], "/orders/1", "/health")
    assert "first-request () [('order_id', 1)]" in first
    assert second.startswith("200") and _chunked_body(second) == "None False", second


@pytest.mark.parametrize("site", ["uvicorn"], indirect=True)
def test_request_started_receivers_of_a_pipelined_request_see_nothing_of_the_one_before(
    site: tuple[str, Path, str],
) -> None:
    """Django sends ``request_started`` before any middleware runs: under uvicorn a pipelined
    request's receivers ran in the context the previous request's last send left, and saw its
    correlation ID (a receiver's log line joined another request's trace)."""
    first, second = _pipelined(site[0], "/orders/1", "/started-with")
    assert "first-request () [('order_id', 1)]" in first
    assert second.startswith("200") and _chunked_body(second) == "None", second


# A synchronous-only middleware below tracekit's: under ASGI Django runs tracekit's synchronously.
SYNC_BELOW = {"DJANGO_SETTINGS_MODULE": "django_site.settings_sync_middleware_below"}


def test_with_a_sync_middleware_below_a_pipelined_request_sees_nothing_of_the_one_before(
    tmp_path: Path,
) -> None:
    """Django ran tracekit's middleware synchronously (it adapts each middleware to the one
    below), and tracekit then left Django's ASGI handler as it was: a pipelined request's
    ``request_started`` receivers saw the previous request's correlation ID."""
    with _served_site("uvicorn", tmp_path / "t.db", **SYNC_BELOW) as (url, _, _):
        first, second = _pipelined(url, "/orders/1", "/started-with")
    assert "first-request () [('order_id', 1)]" in first
    assert second.startswith("200") and _chunked_body(second) == "None", second


@pytest.mark.parametrize(("path", "seen"), [("/health", "None False"), ("/started-with", "None")])
def test_in_correlation_only_mode_a_pipelined_request_sees_nothing_of_the_one_before(
    tmp_path: Path, path: str, seen: str
) -> None:
    """Correlation-only mode left nothing in the context saying a request had answered: the
    request behind it (its ``request_started`` receivers, an excluded health check's view and
    logs) got the previous request's correlation ID."""
    with _served_site("uvicorn", tmp_path / "tracekit.db", TRACEKIT_MODE="correlation") as site:
        first, second = _pipelined(site[0], "/orders/1", path)
    assert "first-request () [('order_id', 1)]" in first
    assert second.startswith("200") and _chunked_body(second) == seen, second


def _pipelined(url: str, first: str, second: str) -> list[str]:
    """Send two requests in one write on one connection; return the two responses' texts."""
    host, port = url.removeprefix("http://").split(":")
    wire = (f"GET {first} HTTP/1.1\r\nHost: {host}\r\nX-Correlation-ID: first-request\r\n\r\n"
            f"GET {second} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(wire.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    responses = received.decode().split("HTTP/1.1 ")[1:]
    assert len(responses) == 2, received
    return responses


def _chunked_body(response: str) -> str:
    """The body of a response read from the wire, sent in one chunk (as Django's under uvicorn)."""
    return response.split("\r\n\r\n", 1)[1].split("\r\n")[1]


# The status of a request whose client gave up during the view: Django under ASGI cancels the
# view and sends nothing (counted as nginx's 499, "client closed request"); under WSGI the view
# runs to its end and answers a socket nobody reads.
ABANDONED_STATUS = {"gunicorn": 200, "uvicorn": 499}


def test_a_client_that_disconnects_during_the_view_is_no_server_error(
    site: tuple[str, Path, str], request: pytest.FixtureRequest
) -> None:
    """Not an ERROR span, no error in ``tracekit trace``, not counted by the dashboards' error
    ratio (``http_response_status_code=~"5..|"``)."""
    _assert_abandoned_request_is_no_error(
        site, ABANDONED_STATUS[request.node.callspec.params["site"]]
    )


def test_with_a_sync_middleware_below_a_client_that_leaves_during_the_view_is_a_499(
    tmp_path: Path,
) -> None:
    """Django ran tracekit's middleware synchronously and cancelled the view when the client
    left: the ``CancelledError`` that came out of the view was taken for a server error (an
    ERROR span, ``error_type="CancelledError"`` with an empty status, counted by the error
    ratio), and ``request_finished``'s receivers saw no correlation ID."""
    with _served_site("uvicorn", tmp_path / "t.db", **SYNC_BELOW) as site:
        _assert_abandoned_request_is_no_error(site, 499)
        cid = _abandon_held_view(site[0])
        assert wait_for(lambda: _finished_with(site[0], cid), 10, cid) == [f"{cid} True"]


def _assert_abandoned_request_is_no_error(site: tuple[str, Path, str], status: int) -> None:
    """A client gives up on ``/slow`` while its view runs: its span and metrics say ``status``,
    with no error."""
    url, store, metrics = site
    cid = "dj-" + uuid.uuid4().hex[:12]
    host, port = url.removeprefix("http://").split(":")
    head = f"GET /slow HTTP/1.1\r\nHost: {host}\r\nX-Correlation-ID: {cid}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        time.sleep(0.1)  # the view is running; the client gives up

    path = stored_path(store, cid)
    (span,) = [s for s in path["spans"] if s["kind"] == "SERVER"]
    assert (span["name"], span["status"]) == ("GET /slow", "UNSET")
    assert span["attributes"]["http.response.status_code"] == status
    assert "error.type" not in span["attributes"]
    assert path["errors"] == []
    slow = [line for line in requests.get(metrics, timeout=10).text.splitlines()
            if line.startswith("http_server_request_duration_seconds_count")
            and 'http_route="/slow"' in line]  # fmt: skip
    assert len(slow) == 1 and f'http_response_status_code="{status}"' in slow[0], slow


NO_INIT = "tracekit: a request arrived before tracekit.init() ran in this process"


def test_a_project_without_init_says_once_what_to_call(tmp_path: Path) -> None:
    """The README's Django lines are a ``MIDDLEWARE`` entry and an ``init`` in wsgi.py. A project
    with the first and not the second answered with correlation IDs, exported nothing and said
    nothing about it (``tracekit trace`` found no store): Django's own application, no init."""
    store = tmp_path / "tracekit.db"
    with _served_site("gunicorn", store, "django.core.wsgi:get_wsgi_application()") as served:
        for _ in range(3):
            response = requests.get(
                served[0] + "/orders/7", headers={"X-Correlation-ID": "o-7"}, timeout=10
            )
            assert response.headers["X-Correlation-ID"] == "o-7"
    said = [line for line in _log_of(store).read_text().splitlines() if NO_INIT in line]
    assert said == [
        f"{NO_INIT}: it gets a correlation ID, but no span or log record is exported. Call"
        " tracekit.init() as the application starts (Django: in wsgi.py or asgi.py)."
    ]


def test_a_project_that_calls_init_hears_nothing_of_it(site: tuple[str, Path, str]) -> None:
    url, store, _ = site
    requests.get(url + "/orders/7", timeout=10)
    assert NO_INIT not in _log_of(store).read_text()


def test_init_after_get_wsgi_application_configures_the_middleware(tmp_path: Path) -> None:
    """The middleware read its options when Django built it, before ``init``: the response
    carried X-Correlation-ID instead of the configured header, and the metrics were labelled
    ``unknown_service:python`` while the spans said ``django-site``."""
    metrics_port, port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(tmp_path / "tracekit.db"),
        "TRACEKIT_METRICS_PORT": str(metrics_port),
    }
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "django_site.wsgi_init_last"]  # fmt: skip
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or process.poll() is not None, 30, "the site")
        assert process.poll() is None, (tmp_path / "server.log").read_text()
        response = requests.get(url + "/orders/7", headers={"X-Correlation-ID": "late-1"})
        scrape = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    finally:
        process.terminate()
        process.wait(30)
    assert response.headers.get("X-Site-Correlation") == "late-1"
    assert "X-Correlation-ID" not in response.headers
    counts = [line for line in scrape.splitlines()
              if line.startswith("http_server_request_duration_seconds_count{")]  # fmt: skip
    assert counts and all('service_name="django-site"' in line for line in counts), counts
    # nor a request gauge of the service it was not, at 0 for the life of the process
    labelled = [line for line in scrape.splitlines() if line.startswith("http_server")]
    assert not [line for line in labelled if "unknown_service" in line], labelled
