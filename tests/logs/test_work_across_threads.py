"""What a view's log lines show when its work moves to another thread (docs/logs.md, "Work
on other threads"): a Flask app behind tracekit's WSGI middleware and a Starlette app behind
its ASGI middleware, on real servers.

Python gives a new thread, and each thread of a ``ThreadPoolExecutor``, an empty context:
their lines carry no correlation ID, and never the ID of an earlier request that thread helped
with. Flask's ``copy_current_request_context`` carries Flask's request only.
``contextvars.copy_context().run`` carries the request's ID and trace there, and so does
carrying only OpenTelemetry's context (its threading instrumentation): the ID rides in it.
A process pool's processes start with no ID either, also when they are forked inside a request.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import anyio.to_thread
import flask
import pytest
import requests
from asgiref.sync import async_to_sync, sync_to_async
from loopback import free_port, serve_in_thread, start_uvicorn
from opentelemetry import context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from stopping import Service

from tracekit import asgi, config, logs, wsgi

FORMAT = "%(correlation_id)s %(trace_id)s %(message)s"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    factory = logging.getLogRecordFactory()  # put back after: tracekit's stays installed
    logs.install(config.resolve("shop", environ={}, export_logs=False))
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("shop.threads")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield output
    finally:
        logger.removeHandler(handler)
        logs.uninstall()
        logging.setLogRecordFactory(factory)


def with_otel_context(captured: Context) -> Callable[[str], None]:
    """What OpenTelemetry's threading instrumentation runs in a pool thread: the trace context
    of the submitting code attached, and nothing else of its context variables."""

    def log_in_it(message: str) -> None:
        token = context.attach(captured)
        try:
            logging.getLogger("shop.threads").info(message)
        finally:
            context.detach(token)

    return log_in_it


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_pool_threads_show_no_id_unless_the_context_is_copied(
    lines: io.StringIO, tracer_provider: TracerProvider
) -> None:
    log = logging.getLogger("shop.threads")
    pool = ThreadPoolExecutor(1)
    app = flask.Flask(__name__)

    @app.get("/")
    def index() -> str:
        log.info("view")
        pool.submit(log.info, "pool").result()
        pool.submit(contextvars.copy_context().run, log.info, "pool copied").result()
        pool.submit(with_otel_context(context.get_current()), "otel carried").result()
        thread = threading.Thread(target=log.info, args=("thread",))
        thread.start()
        thread.join()
        flasks = flask.copy_current_request_context(lambda: log.info("flask %s", "copied"))
        thread = threading.Thread(target=flasks)
        thread.start()
        thread.join()
        both = flask.copy_current_request_context(lambda: log.info("both %s", "copied"))
        thread = threading.Thread(target=contextvars.copy_context().run, args=(both,))
        thread.start()
        thread.join()
        return "ok"

    app.wsgi_app = wsgi.TracekitMiddleware(app.wsgi_app, tracer_provider=tracer_provider)  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    stop = serve_in_thread(server)
    try:
        for cid in ("order-1", "order-2"):
            url = f"http://127.0.0.1:{server.server_port}/"
            requests.get(url, headers={"X-Correlation-ID": cid}, timeout=10)
        pool.submit(log.info, "pool idle").result()
    finally:
        stop()
        pool.shutdown()
    shown = [line.split(" ", 2) for line in lines.getvalue().splitlines()]
    by_message: dict[str, list[tuple[str, str]]] = {}
    for cid, trace_id, message in shown:
        by_message.setdefault(message, []).append((cid, trace_id))
    views = by_message["view"]
    assert [cid for cid, _ in views] == ["order-1", "order-2"]
    assert by_message["pool copied"] == views  # the request's ID and trace, in the pool
    assert by_message["otel carried"] == views  # the ID rides with the trace context
    assert by_message["pool"] == [("-", "-")] * 2  # no ID, and never the other request's
    assert by_message["thread"] == [("-", "-")] * 2
    assert by_message["pool idle"] == [("-", "-")]
    assert by_message["flask copied"] == [("-", "-")] * 2  # Flask's request, not the IDs
    assert by_message["both copied"] == views


def test_async_views_threads_show_the_id_where_python_copies_the_context(
    lines: io.StringIO, tracer_provider: TracerProvider
) -> None:
    """The table of docs/logs.md, row by row, under uvicorn: what copies the context (as
    OpenTelemetry's own context is copied) carries the request's IDs; an executor does not."""
    log = logging.getLogger("shop.threads")
    pool = ThreadPoolExecutor(1)

    async def logged_in_a_task() -> None:
        log.info("task")

    async def view(request: Request) -> PlainTextResponse:
        log.info("view")
        await asyncio.to_thread(log.info, "asyncio.to_thread")
        await anyio.to_thread.run_sync(log.info, "anyio.to_thread")
        await run_in_threadpool(log.info, "run_in_threadpool")
        await sync_to_async(log.info)("sync_to_async")
        await sync_to_async(async_to_sync(logged_in_a_task))()
        await asyncio.create_task(logged_in_a_task())
        await asyncio.get_running_loop().run_in_executor(pool, log.info, "run_in_executor")
        return PlainTextResponse("ok")

    app = asgi.TracekitMiddleware(
        Starlette(routes=[Route("/", view)]), tracer_provider=tracer_provider
    )
    url, stop = start_uvicorn(app)
    try:
        for cid in ("order-1", "order-2"):
            requests.get(url, headers={"X-Correlation-ID": cid}, timeout=10)
    finally:
        stop()
        pool.shutdown()
    by_message: dict[str, list[tuple[str, str]]] = {}
    for line in lines.getvalue().splitlines():
        cid, trace_id, message = line.split(" ", 2)
        by_message.setdefault(message, []).append((cid, trace_id))
    views = by_message.pop("view")
    assert [cid for cid, _ in views] == ["order-1", "order-2"]
    assert by_message.pop("run_in_executor") == [("-", "-")] * 2
    carried = ["asyncio.to_thread", "anyio.to_thread", "run_in_threadpool", "sync_to_async"]
    assert by_message.pop("task") == [views[0], views[0], views[1], views[1]]  # two per request
    assert by_message == dict.fromkeys(carried, views)


PROCESS_POOL_APP = """
import logging, signal, sys, threading, tracekit
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from werkzeug.serving import make_server
from tracekit.wsgi import TracekitMiddleware

tracekit.init("shop")
logging.basicConfig(
    format="%(correlation_id)s %(trace_id)s %(message)s", level=logging.INFO, stream=sys.stdout
)
log = logging.getLogger("shop.processes")
# Made at import; its process is forked when the first request submits to it.
pool = ProcessPoolExecutor(1, mp_context=mp.get_context("fork"))

def work():
    log.info("pool")
    sys.stdout.flush()

def app(environ, start_response):
    log.info("view")
    pool.submit(work).result()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

server = make_server("127.0.0.1", int(sys.argv[1]), TracekitMiddleware(app))
# SIGTERM stops the server, then the pool's process (which would outlive a killed parent).
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
with pool:
    server.serve_forever()
"""


def test_a_process_pool_forked_in_a_request_shows_no_id_of_it(tmp_path: Path) -> None:
    """A pool's process serves every later request: the IDs of the request it was forked in
    are not its own, as a pool started with spawn or forkserver has none either."""
    service = Service(tmp_path, tmp_path / "spans.db")
    service.write("pool_app.py", PROCESS_POOL_APP)
    port = free_port()
    service.start("pool_app.py", str(port), TRACEKIT_EXPORTER="none")
    try:
        service.wait_http(f"http://127.0.0.1:{port}/")
        for cid in ("order-1", "order-2"):
            url = f"http://127.0.0.1:{port}/"
            requests.get(url, headers={"X-Correlation-ID": cid}, timeout=30)
    finally:
        service.terminate()
    shown = [line.split(" ", 2) for line in service.output().splitlines() if line.count(" ") >= 2]
    pool_lines = [(cid, trace_id) for cid, trace_id, message in shown if message == "pool"]
    views = [cid for cid, _, message in shown if message == "view"]
    assert views[-2:] == ["order-1", "order-2"], service.output()
    assert pool_lines == [("-", "-")] * len(views), service.output()
