"""Frameworks that set up logging themselves keep tracekit's correlation and export (issue #21).

Each test runs the framework as its users do, as a real process with ``tracekit.init`` where its
docs put it: a Celery worker (``worker_hijack_root_logger``) on a real redis-server, Django under
gunicorn (``LOGGING`` applied by ``django.setup()`` after init), uvicorn with ``--log-config``
(and ``uvicorn.run(log_config=...)`` after init), gunicorn with a logger class that replaces the
root's handlers (reloaded by SIGHUP after a preloaded init), gunicorn's access line (logged after
the response, outside the request's context). Each asserts both sides: the
framework's own output still shows the line, with ``%(correlation_id)s`` filled in, and
``tracekit trace`` shows the same line under the request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conditions import wait_for
from loopback import UNREACHABLE, free_port
from redis_server import running_redis

from tracekit.records import BackendError
from tracekit.store import Store

APPS = Path(__file__).parent / "apps"


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The apps' environment: export into the test's store, batches every 100 ms."""
    return {
        **os.environ,
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(tmp_path / "t.db"),
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_BLRP_SCHEDULE_DELAY": "100",
        # the caller's path too: the apps run the tracekit under test (as tests/support/shop.py)
        "PYTHONPATH": os.pathsep.join([str(APPS), *filter(None, [os.environ.get("PYTHONPATH")])]),
        **extra,
    }


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[Any]]:
    """Run ``command`` in the apps folder, its output in ``log``; SIGTERM (then kill) after."""
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=APPS, env=env, stdout=output, stderr=output)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


def trace_logs(tmp_path: Path, correlation_id: str) -> list[dict[str, Any]]:
    """The log lines ``tracekit trace ID --format json`` shows (none while nothing is stored)."""
    result = subprocess.run(
        [sys.executable, "-m", "tracekit_cli", "trace", correlation_id, "--format", "json",
         "--store", str(tmp_path / "t.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        return []
    logs: list[dict[str, Any]] = json.loads(result.stdout)["logs"]
    return logs


def wait_for_logs(tmp_path: Path, correlation_id: str, bodies: set[str]) -> list[dict[str, Any]]:
    """The request's log lines once every one of ``bodies`` is among them."""

    def complete() -> list[dict[str, Any]] | None:
        logs = trace_logs(tmp_path, correlation_id)
        return logs if bodies <= {log["body"] for log in logs} else None

    found: list[dict[str, Any]] = wait_for(
        complete, 20, f"log lines {bodies} in tracekit trace", ignoring=UNREACHABLE
    )
    return found


def get_when_up(url: str, correlation_id: str, process: subprocess.Popen[Any]) -> None:
    """GET ``url`` with a correlation ID as soon as the server answers."""

    def answer() -> httpx.Response | None:
        assert process.poll() is None, "the server exited"
        try:
            return httpx.get(url, headers={"X-Correlation-ID": correlation_id}, timeout=5)
        except httpx.TransportError:
            return None

    response: httpx.Response = wait_for(answer, 40, f"an answer from {url}", ignoring=UNREACHABLE)
    assert response.status_code == 200, response.text


def test_celery_worker_hijacking_the_root_logger(tmp_path: Path) -> None:
    bodies = {"module logger: charging order 7", "task logger: charged order 7"}
    with running_redis() as url:
        env = environment(tmp_path, CELERY_BROKER_URL=url)
        worker = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=solo",
                  "--loglevel=INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
        with running(worker, env, tmp_path / "worker.log"):
            send = (
                "import tracekit; from tracekit import correlation\n"
                "tracekit.init('web', metrics_port=0)\n"
                "from celery_tasks import charge\n"
                "correlation.set_correlation_id('celery-log-1')\n"
                "charge.delay(7)\n"
                "tracekit.shutdown()\n"
            )
            subprocess.run([sys.executable, "-c", send], cwd=APPS, env=env, check=True, timeout=60)
            logs = wait_for_logs(tmp_path, "celery-log-1", bodies)
    worker_output = (tmp_path / "worker.log").read_text()
    for body in bodies:
        assert body in worker_output, worker_output  # Celery's own handlers still print them
    for log in logs:
        if log["body"] in bodies:
            assert log["service"] == "celery-worker" and log["span_id"], log


def test_django_logging_applied_after_init_under_gunicorn(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "django_wsgi:application"]  # fmt: skip
    with running(command, environment(tmp_path), tmp_path / "server.log") as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "django-log-1", server)
        logs = wait_for_logs(tmp_path, "django-log-1", {"django view: order page"})
    output = (tmp_path / "server.log").read_text()
    assert "django-site INFO [django-log-1] django view: order page" in output, output
    assert [log["service"] for log in logs if log["body"] == "django view: order page"] == [
        "django-site"
    ]


def test_django_error_records_export_the_request_without_its_query(tmp_path: Path) -> None:
    """Django logs every 4xx and 5xx with the request as ``extra``; its repr quotes the full
    path, so a reset link's token went into the exported record."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "django_wsgi:application"]  # fmt: skip
    with running(command, environment(tmp_path), tmp_path / "server.log") as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "django-log-2", server)
        missing = httpx.get(f"http://127.0.0.1:{port}/reset?token=s3cr3t-reset-token", timeout=10)
        assert missing.status_code == 404

        def not_found() -> list[Any] | None:
            if not (tmp_path / "t.db").exists():
                return None
            with Store(tmp_path / "t.db") as store:  # BackendError: not created yet
                trace_ids = {s.trace_id for s in store.spans_since(0)}
                logs = store.logs_by_trace_ids(trace_ids)
            return [log for log in logs if log.body == "Not Found: /reset"] or None

        (record,) = wait_for(
            not_found, 20, "Django's 404 record", ignoring=(*UNREACHABLE, BackendError)
        )
    assert record.attributes["request"] == "<WSGIRequest: GET '/reset?…'>"


@pytest.mark.parametrize(
    ("how", "command"),
    [
        # the file is applied before uvicorn imports the app (and so before init)
        ("cli", ["-m", "uvicorn", "asgi_logging:app", "--port", "{port}",
                 "--log-config", "uvicorn_log_config.json"]),
        # the app calls uvicorn.run(app, log_config=...) after its init
        ("run", ["asgi_logging.py", "{port}", "uvicorn_log_config.json"]),
    ],
)  # fmt: skip
def test_uvicorn_log_config(how: str, command: list[str], tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, *(part.format(port=port) for part in command)]
    cid = f"uvicorn-{how}-1"
    with running(argv, environment(tmp_path), tmp_path / "server.log") as server:
        get_when_up(f"http://127.0.0.1:{port}/order", cid, server)
        wait_for_logs(tmp_path, cid, {"asgi view: order page"})
    output = (tmp_path / "server.log").read_text()
    assert f"uvicorn-config INFO [{cid}] asgi view: order page" in output, output


def test_gunicorn_logger_class_reloaded_after_a_preloaded_init(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "--preload", "--logger-class", "gunicorn_logging.RootTakingLogger",
               "gunicorn_logging:app"]  # fmt: skip
    with running(command, environment(tmp_path), tmp_path / "server.log") as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "gunicorn-log-1", server)
        server.send_signal(signal.SIGHUP)  # logger set up again in the master, new workers
        time.sleep(1)
        get_when_up(f"http://127.0.0.1:{port}/order", "gunicorn-log-2", server)
        for cid in ("gunicorn-log-1", "gunicorn-log-2"):
            wait_for_logs(tmp_path, cid, {"wsgi view: order page"})
    output = (tmp_path / "server.log").read_text()
    for cid in ("gunicorn-log-1", "gunicorn-log-2"):
        assert f"gunicorn-class INFO [{cid}] wsgi view: order page" in output, output


def _get(url: str, correlation_id: str) -> httpx.Response:
    return httpx.get(url, headers={"X-Correlation-ID": correlation_id}, timeout=10)


def _server_log(
    command: list[str], port: int, tmp_path: Path, request: tuple[str, str, int], awaited: str
) -> str:
    """The log of the server ``command`` starts on ``port``, once it has answered ``request``
    (path, correlation ID, the status expected) and logged ``awaited``."""
    log = tmp_path / "server.log"
    path, correlation_id, status = request
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        assert _get(f"http://127.0.0.1:{port}{path}", correlation_id).status_code == status
        wait_for(lambda: awaited in log.read_text(), 20, repr(awaited))
    return log.read_text()


def _view_trace_id(output: str, correlation_id: str) -> str:
    """The trace ID on the application's own line of the request with ``correlation_id``."""
    cid = re.escape(correlation_id)
    view = re.search(rf"shop\.wsgi (?:INFO )?\[{cid} ([0-9a-f]{{32}})\] wsgi view", output)
    assert view is not None, output
    return view[1]


def _gunicorn(port: int, *options: str) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", "gunicorn_access_log.py",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", *options,
            "gunicorn_logging:app"]  # fmt: skip


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorn_access_lines_carry_the_requests_ids(worker_class: str, tmp_path: Path) -> None:
    port = free_port()
    request, awaited = ("/access", "access-1", 200), '"GET /access HTTP/1.1" 200'
    output = _server_log(_gunicorn(port, "-k", worker_class), port, tmp_path, request, awaited)
    trace_id = _view_trace_id(output, "access-1")
    assert f'gunicorn.access [access-1 {trace_id}] "GET /access HTTP/1.1" 200' in output, output


def test_gunicorns_access_log_format_names_the_id_through_the_response_header(
    tmp_path: Path,
) -> None:
    """docs/logs.md: in ``access_log_format``, the ID is the response header's atom, also for an
    ID tracekit made up (the request brought none)."""
    port = free_port()
    access_format = '"%(r)s" %(s)s id=%({x-correlation-id}o)s'
    command = _gunicorn(port, "--access-logformat", access_format)
    log = tmp_path / "server.log"
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        made_up = httpx.get(f"http://127.0.0.1:{port}/access", timeout=10)
        awaited = f'"GET /access HTTP/1.1" 200 id={made_up.headers["X-Correlation-ID"]}'
        wait_for(lambda: awaited in log.read_text(), 20, repr(awaited))


def test_uvicorns_line_on_an_exception_the_app_raised_carries_the_requests_id(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = [sys.executable, "asgi_logging.py", str(port), "uvicorn_log_config.json"]
    request, awaited = ("/fail", "uvicorn-fail-1", 500), "Exception in ASGI application"
    output = _server_log(command, port, tmp_path, request, awaited)
    assert "uvicorn-config ERROR [uvicorn-fail-1] Exception in ASGI application" in output, output


def test_uvicorns_line_carries_the_requests_id_below_a_function_middleware(
    tmp_path: Path,
) -> None:
    """tracekit's middleware below an ``@app.middleware("http")`` function, which Starlette
    runs in a task of its own: the exception is raised again in the request's task, where
    uvicorn logs it, and its line showed '[-]'."""
    port = free_port()
    command = [sys.executable, "asgi_logging.py", str(port), "uvicorn_log_config.json", "below"]
    request, awaited = ("/fail", "below-fail-1", 500), "Exception in ASGI application"
    output = _server_log(command, port, tmp_path, request, awaited)
    assert "uvicorn-config ERROR [below-fail-1] Exception in ASGI application" in output, output


@pytest.mark.parametrize("below", [[], ["gzip"]], ids=["alone", "below-gzip"])
def test_uvicorns_access_line_carries_the_requests_id(tmp_path: Path, below: list[str]) -> None:
    """uvicorn logs its access line as the response starts; GZipMiddleware, outside tracekit's
    (added after it), holds the start back and sends it with the body, in the send that ends
    the response, which tracekit makes in the context the request arrived in: the line showed
    '[-]'."""
    port = free_port()
    command = [sys.executable, "asgi_logging.py", str(port), "uvicorn_log_config.json", *below]
    request, awaited = ("/order", "access-line-1", 200), '"GET /order HTTP/1.1" 200'
    output = _server_log(command, port, tmp_path, request, awaited)
    start = "uvicorn-config INFO [access-line-1] 127.0.0.1:"
    lines = output.splitlines()
    assert any(line.startswith(start) and line.endswith(awaited) for line in lines), output


@pytest.mark.parametrize("below", [[], ["below"]], ids=["alone", "below-a-function-middleware"])
def test_uvicorns_line_on_an_exception_two_requests_raised_carries_each_requests_id(
    tmp_path: Path, below: list[str]
) -> None:
    """Two requests raise the one exception object of a shared lookup that failed: the
    second request's line showed the first request's ID."""
    port, log = free_port(), tmp_path / "server.log"
    command = [sys.executable, "asgi_logging.py", str(port), "uvicorn_log_config.json", *below]
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        for cid in ("shared-fail-1", "shared-fail-2"):
            assert _get(f"http://127.0.0.1:{port}/shared-failure", cid).status_code == 500
        awaited = "Exception in ASGI application"
        wait_for(lambda: log.read_text().count(awaited) == 2, 20, f"two {awaited!r}")
    output = log.read_text()
    for cid in ("shared-fail-1", "shared-fail-2"):
        assert f"uvicorn-config ERROR [{cid}] Exception in ASGI application" in output, output


def test_uvicorns_lines_on_an_exception_two_requests_raised_at_once_below_a_function_middleware(
    tmp_path: Path,
) -> None:
    """Below a function middleware, two requests raise at once the one exception object of a
    shared lookup they both awaited: each line names its own request, or none, never the
    other's (both named the one that raised last)."""
    port, log = free_port(), tmp_path / "server.log"
    command = [sys.executable, "asgi_logging.py", str(port), "uvicorn_log_config.json", "below"]
    url = f"http://127.0.0.1:{port}/shared-failure-together"
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda cid: _get(url, cid), ("together-1", "together-2")))
        assert [answer.status_code for answer in answers] == [500, 500]
        awaited = "Exception in ASGI application"
        wait_for(lambda: log.read_text().count(awaited) == 2, 20, f"two {awaited!r}")
    line = r"uvicorn-config ERROR \[(\S+)\] Exception in ASGI application"
    named = re.findall(line, log.read_text())
    requests_named = [cid for cid in named if cid != "-"]
    assert len(named) == 2 and len(set(requests_named)) == len(requests_named), named


@pytest.mark.parametrize(
    ("awaited", "line"),
    [
        ("Error handling request", "gunicorn.error [{} {}] Error handling request GET /fail"),
        ('"GET /fail HTTP/1.1" 500', 'gunicorn.access [{} {}] "GET /fail HTTP/1.1" 500'),
    ],
    ids=["error", "access"],
)
def test_gunicorns_lines_about_a_request_that_raised_carry_its_ids(
    awaited: str, line: str, tmp_path: Path
) -> None:
    """gunicorn logs "Error handling request" with what the app raised, then answers with a 500
    of its own and logs its access line with a new environ, while handling the exception: both
    lines showed '[- -]'."""
    port = free_port()
    output = _server_log(_gunicorn(port), port, tmp_path, ("/fail", "gunicorn-fail", 500), awaited)
    trace_id = _view_trace_id(output, "gunicorn-fail")
    assert line.format("gunicorn-fail", trace_id) in output, output


def _get_cut_body(url: str, correlation_id: str) -> None:
    """GET ``url``, whose body the server cuts off (or answers with its own 500)."""
    with contextlib.suppress(httpx.RemoteProtocolError):  # a chunked body without its end
        _get(url, correlation_id)


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_gunicorns_lines_about_a_django_stream_that_raised_carry_its_ids(
    worker_class: str, tmp_path: Path
) -> None:
    """A Django ``StreamingHttpResponse`` whose body raises: gunicorn logs "Error handling
    request" (and, before any chunk went, the access line of the 500 it answers with) after
    the response was closed and the request's context put back; those lines showed '[- -]'."""
    port, log = free_port(), tmp_path / "server.log"
    command = [*_gunicorn(port, "-k", worker_class)[:-1], "django_wsgi:application"]
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        _get_cut_body(f"http://127.0.0.1:{port}/stream-failing", "stream-cut")
        _get_cut_body(f"http://127.0.0.1:{port}/stream-failing?first", "stream-unsent")
        awaited = '"GET /stream-failing?first HTTP/1.1" 500'
        wait_for(lambda: awaited in log.read_text(), 20, repr(awaited))
    output = log.read_text()
    for cid, request_line in (
        ("stream-cut", "GET /stream-failing HTTP/1.1"),
        ("stream-unsent", "GET /stream-failing?first HTTP/1.1"),
    ):  # the trace ID on gunicorn's access line of the response the view gave
        access = rf'gunicorn\.access \[{cid} ([0-9a-f]{{32}})\] "{re.escape(request_line)}" '
        answered = re.search(access + "200", output)
        assert answered is not None, output
        assert f"gunicorn.error [{cid} {answered[1]}] Error handling request" in output, output
    # nothing had gone: gunicorn answered with a 500 of its own
    assert f'gunicorn.access [stream-unsent {answered[1]}] "{request_line}" 500' in output, output


def test_uvicorns_line_on_a_django_stream_that_raised_carries_the_requests_id(
    tmp_path: Path,
) -> None:
    """A Django ``StreamingHttpResponse`` whose body raises under uvicorn: its "Exception in
    ASGI application" line showed '[-]'; also for a sync body, which Django reads in a thread
    of its own."""
    port, log = free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "uvicorn", "django_asgi:application", "--port", str(port),
               "--log-config", "uvicorn_log_config.json"]  # fmt: skip
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        _get_cut_body(f"http://127.0.0.1:{port}/stream-failing", "asgi-stream-cut")
        _get_cut_body(f"http://127.0.0.1:{port}/stream-failing?sync", "asgi-sync-stream-cut")
        awaited = "Exception in ASGI application"
        wait_for(lambda: log.read_text().count(awaited) == 2, 20, f"two {awaited!r}")
    output = log.read_text()
    for cid in ("asgi-stream-cut", "asgi-sync-stream-cut"):
        assert f"django-site ERROR [{cid}] Exception in ASGI application" in output, output


def test_uvicorns_lines_on_django_streams_that_raised_together_carry_each_requests_id(
    tmp_path: Path,
) -> None:
    """Four Django async ``StreamingHttpResponse`` bodies raise at once, before uvicorn logs the
    first "Exception in ASGI application": each line names its own request. Only the last
    body to raise was named; the other three lines showed '[-]'."""
    port, log = free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "uvicorn", "django_asgi:application", "--port", str(port),
               "--log-config", "uvicorn_log_config.json"]  # fmt: skip
    orders = range(1, 5)
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        url = f"http://127.0.0.1:{port}/stream-failing-together?of={len(orders)}&order="
        with ThreadPoolExecutor(len(orders)) as pool:
            list(pool.map(lambda n: _get_cut_body(f"{url}{n}", f"together-{n}"), orders))
        awaited = "Exception in ASGI application"
        wait_for(lambda: log.read_text().count(awaited) == len(orders), 20, f"4 {awaited!r}")
    records = log.read_text().split("django-site ERROR ")[1:]  # each with its traceback
    named = {re.search(r"order (\d+)'s", record)[1]: record.split("]")[0] for record in records}
    assert named == {str(n): f"[together-{n}" for n in orders}, records


def test_werkzeugs_lines_on_an_exception_the_app_raised_carry_the_requests_ids(
    tmp_path: Path,
) -> None:
    """werkzeug's development server logs "Error on request" and the 500's access line while
    handling what the app raised, after the middleware put the request's context back: both
    showed '[- -]'."""
    port = free_port()
    command = [sys.executable, "werkzeug_logging.py", str(port)]
    request, awaited = ("/fail", "werkzeug-fail-1", 500), "Error on request"
    output = _server_log(command, port, tmp_path, request, awaited)
    trace_id = _view_trace_id(output, "werkzeug-fail-1")
    assert f"werkzeug ERROR [werkzeug-fail-1 {trace_id}] Error on request:" in output, output
    access = rf'werkzeug INFO \[werkzeug-fail-1 {trace_id}\] .*GET /fail HTTP/1\.1.*" 500'
    assert re.search(access, output) is not None, output


def test_loguru_lines_carry_the_requests_ids(tmp_path: Path) -> None:
    """loguru set up as docs/logs.md says, under uvicorn: its own lines and uvicorn's (handed to
    it) show the request's IDs; so does the line of a FastAPI handler for ``Exception``, which
    runs outside the middleware ``add_middleware`` adds, after the request's context was put
    back."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "loguru_app:app", "--port", str(port)]
    headers = {"X-Correlation-ID": "loguru-1", "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
    log = tmp_path / "server.log"
    with running(command, environment(tmp_path), log) as server:
        get_when_up(f"http://127.0.0.1:{port}/order", "server-up", server)
        httpx.get(f"http://127.0.0.1:{port}/order", headers=headers, timeout=10)
        assert _get(f"http://127.0.0.1:{port}/fail", "loguru-2").status_code == 500
        wait_for(lambda: "unexpected error" in log.read_text(), 20, "the handler's line")
    output = log.read_text()
    assert f"loguru INFO [loguru-1 {'ab' * 16}] loguru view: order page" in output, output
    access = rf'loguru INFO \[loguru-1 {"ab" * 16}\] 127\.0\.0\.1:\d+ - "GET /order'
    assert re.search(access, output) is not None, output  # uvicorn's, a stdlib record
    handler_line = re.search(r"loguru ERROR \[(\S+) (\S+)\] loguru handler", output)
    assert handler_line is not None, output
    assert handler_line[1] == "loguru-2" and re.fullmatch("[0-9a-f]{32}", handler_line[2])
