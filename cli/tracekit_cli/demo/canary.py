"""The demo's canary step: one service in two versions, the new one slower on one route.

``catalog`` 2.3.0 (the baseline) and 2.4.0 (the canary) run side by side as two processes on
loopback, each writing its spans into one store (beside the demo's), as two deployments behind a
mesh would.
Both serve ``/products/{product_id}`` alike; the canary's ``/search`` takes about twice as long.
Traffic goes to both evenly, then ``tracekit.canary`` judges the canary from the store and the
verdict is printed with its reasons: what ``tracekit canary`` says in a pipeline.

``python -m tracekit_cli.demo.canary VERSION PORT`` runs one version of the service.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tracekit
from tracekit.store._connection import left_by_another_user
from tracekit_cli.demo.topology import (
    inherited_environment,
    open_loopback,
    stop_processes,
)

SERVICE, BASELINE, CANARY = "catalog", "2.3.0", "2.4.0"
ROUTES = ("/products/{product_id}", "/search")
REQUESTS_PER_ROUTE = 300  # per version: enough for every metric to decide
SEARCH_SECONDS = {BASELINE: 0.015, CANARY: 0.03}  # the canary's regression
PRODUCT_SECONDS = 0.02  # long beside scheduling noise: both versions serve it alike
CONCURRENCY = 8
START_TIMEOUT = 30.0
# The listening socket the step hands a version, by its descriptor number in the version's process
LISTEN_FD = "TRACEKIT_DEMO_LISTEN_FD"


def catalog_app(version: str) -> Any:
    """One version of the catalog: Starlette behind tracekit's middleware."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tracekit.asgi import TracekitMiddleware

    async def product(request: Request) -> JSONResponse:
        product_id = request.path_params["product_id"]
        await _work(PRODUCT_SECONDS, product_id)
        return JSONResponse({"id": product_id, "version": version})

    async def search(request: Request) -> JSONResponse:
        await _work(SEARCH_SECONDS[version], request.query_params.get("q", ""))
        return JSONResponse({"hits": [], "version": version})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    routes = [Route("/products/{product_id}", product), Route("/search", search),
              Route("/health", health)]  # fmt: skip
    return TracekitMiddleware(Starlette(routes=routes))


async def _work(median_seconds: float, subject: str) -> None:
    """A handler's work: about ``median_seconds``, varying from one product or query to the next
    as real requests do, and the same for one ``subject`` in both versions, as the same code's
    would be. (Drawn afresh per request, the two versions' samples of /products differed by
    chance now and then enough to call the healthy route significantly slower.)"""
    await asyncio.sleep(median_seconds * random.Random(subject).lognormvariate(0, 0.3))


def main(version: str, port: int) -> None:
    """Serve one version until SIGTERM (on the socket the step handed it, else on ``port``);
    its spans are flushed into the store on the way out."""
    import uvicorn

    tracekit.init(SERVICE, service_version=version, environment="demo")
    inherited = os.environ.pop(LISTEN_FD, None)
    try:
        if inherited is None:
            uvicorn.run(catalog_app(version), host="127.0.0.1", port=port, log_level="warning")
        else:
            config = uvicorn.Config(catalog_app(version), log_level="warning")
            uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(inherited))])
    finally:
        tracekit.shutdown()


# --- the step, as ``tracekit demo`` runs it ---------------------------------------------------


def environment(store_path: Path, version: str) -> dict[str, str]:
    """What a version's process runs with: spans straight into the demo's store."""
    return {
        **inherited_environment(),
        "TRACEKIT_EXPORTER": "store",
        "TRACEKIT_STORE": str(store_path),
        "TRACEKIT_METRICS_PORT": "0",
        "TRACEKIT_EXCLUDED_URLS": "^/health$",  # start-up probes are not requests
        "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={SERVICE}-{version}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "TRACEKIT_EXPORT_LOGS": "false",
    }


@contextmanager
def deployed(store_path: Path) -> Iterator[dict[str, int]]:
    """Both versions running; yields version -> port, and stops both (flushing) on the way out.

    Each version is handed a socket already listening: a port chosen free and bound later by
    the version could be taken meanwhile (any process's outgoing connection may take it), and
    the version would exit, and the demo with it.
    """
    listening = {version: socket.create_server(("127.0.0.1", 0)) for version in (BASELINE, CANARY)}
    ports = {version: int(sock.getsockname()[1]) for version, sock in listening.items()}
    try:
        processes = {version: _start_version(store_path, version, sock)
                     for version, sock in listening.items()}  # fmt: skip
    finally:
        for sock in listening.values():
            sock.close()  # each version holds its own copy
    try:
        for version, port in ports.items():
            _wait_until_up(processes[version], port)
        yield ports
    finally:
        stop_processes(list(processes.values()))


def _start_version(
    store_path: Path, version: str, listening: socket.socket
) -> subprocess.Popen[bytes]:
    port = listening.getsockname()[1]
    return subprocess.Popen(  # noqa: S603 (this interpreter, our module)
        [sys.executable, "-m", "tracekit_cli.demo.canary", version, str(port)],
        env={**environment(store_path, version), LISTEN_FD: str(listening.fileno())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        pass_fds=(listening.fileno(),),
    )


def _wait_until_up(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the demo's {SERVICE} service exited before it answered")
        try:
            with open_loopback(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the demo's {SERVICE} service did not start") from None
            time.sleep(0.1)


def send_traffic(ports: dict[str, int], per_route: int = REQUESTS_PER_ROUTE) -> int:
    """``per_route`` requests to each route of each version, a few at a time; returns how many.

    Each version has clients of its own, as many as the other's: from one shared pool the slower
    canary would always hold more of the requests in flight, and wait more for its event loop
    and the CPU on /products too."""
    paths = [f"/products/p-{n}" if route != "/search" else f"/search?q=item-{n}"
             for n in range(per_route) for route in ROUTES]  # fmt: skip
    pools = {port: ThreadPoolExecutor(CONCURRENCY // len(ports)) for port in ports.values()}
    try:
        sent = [pool.submit(_get, f"http://127.0.0.1:{port}{path}")
                for path in paths for port, pool in pools.items()]  # fmt: skip
        for request in sent:
            request.result()
    finally:
        for pool in pools.values():
            pool.shutdown(cancel_futures=True)
    return len(sent)


def _get(url: str) -> None:
    with open_loopback(url, timeout=10) as response:
        response.read()


def canary_store(store_path: Path) -> Path:
    """The step's own store beside the demo's (``tracekit.db`` -> ``tracekit-canary.db``), so the
    checkouts stay the newest requests in the demo's store and its search hints keep working."""
    return store_path.with_name(f"{store_path.stem}-canary{store_path.suffix}")


def run_canary_step(console: Any, store_path: Path) -> Any:
    """Deploy both versions, send traffic, judge the canary from the store, print the verdict."""
    from tracekit_cli.render.canary import render_rich

    store = canary_store(store_path)
    console.rule("canary")
    console.print(
        f"{SERVICE} {BASELINE} (baseline) and {CANARY} (canary) side by side;"
        f" the canary's /search is about twice as slow"
    )
    with _taking_turns(console, store):
        start_ns = _whole_microseconds(time.time_ns(), up=False)
        with deployed(store) as ports:
            sent = send_traffic(ports)
        console.print(f"sent {sent} requests, half to each version; the verdict:")
        end_ns = _whole_microseconds(time.time_ns(), up=True)
        verdict = _judge(store, start_ns, end_ns)
    render_rich(console, verdict)
    _show_command(console, store, start_ns, end_ns, verdict.verdict)
    return verdict


@contextmanager
def _taking_turns(console: Any, store_path: Path) -> Iterator[None]:
    """Hold the step's store until its verdict is in: the verdict covers a time window, and a
    second demo's step in the same store at the same time would be counted in it. The lock is
    a file beside the store (locking the store's own file would break SQLite's locks), never
    opened through a symlink: in a shared folder (``--store /tmp/...``) anyone could have left
    one there naming a file for this user to create, nor a file another user left there (see
    ``_open_own_lock``)."""
    lock_path = store_path.with_name(f"{store_path.name}.lock")  # in the demo store's folder
    with open(_open_own_lock(lock_path)) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print("waiting for another demo's canary step on this store")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, on any way out


def _open_own_lock(lock_path: Path) -> int:
    """The lock file's descriptor, refused (``PermissionError``) when the file is one another
    user left in a shared folder (``--store /tmp/...``): whoever holds a lock on it made the
    step wait forever, as the store refuses their files beside it. Looked at once opened, so
    that the file looked at is the file locked."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    if left_by_another_user(os.fstat(fd), lock_path.parent):
        os.close(fd)
        raise PermissionError(
            errno.EACCES, "a lock file another user left in a shared folder", str(lock_path)
        )
    return fd


def _whole_microseconds(unix_nano: int, *, up: bool) -> int:
    """``unix_nano`` moved out to a whole microsecond, the finest time ``--start`` and ``--end``
    take, so that the printed command judges exactly the window the demo judged."""
    micros = -(-unix_nano // 1000) if up else unix_nano // 1000
    return micros * 1000


def _judge(store_path: Path, start_ns: int, end_ns: int) -> Any:
    from tracekit.canary import Subject, judge, samples_from_store
    from tracekit.store import Store

    subject = Subject(SERVICE, BASELINE, CANARY, start_ns, end_ns, "store")
    with Store(store_path) as store:
        samples = samples_from_store(store, SERVICE, (BASELINE, CANARY), start_ns, end_ns)
    return judge(subject, *samples)


def _show_command(console: Any, store_path: Path, start_ns: int, end_ns: int, verdict: str) -> None:
    """The command that gives the same ``verdict``, and the exit status it gives a pipeline:
    this step's window to the microsecond (``--since`` would count the traffic of an earlier or
    concurrent demo sharing the store)."""
    from rich.markup import escape

    from tracekit.canary import exit_code
    from tracekit_cli.demo.typed import command_as_typed

    command = (
        f"{command_as_typed()} canary --service {SERVICE} --baseline {BASELINE}"
        f" --canary {CANARY} --start {_iso(start_ns)} --end {_iso(end_ns)}"
        f" --store {shlex.quote(str(store_path))}"
    )
    console.print(f"The same from the command line (exit status {exit_code(verdict)}: {verdict}):")
    console.print(f"  [bold]{escape(command)}[/]", soft_wrap=True)  # one line to paste


def _iso(unix_nano: int) -> str:
    """``2026-12-03T18:42:07.123456+00:00``: a whole-microsecond time, exactly."""
    seconds, nanos = divmod(unix_nano, 10**9)
    moment = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)
    return moment.isoformat(timespec="microseconds")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
