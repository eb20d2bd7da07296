"""No span lost when a worker stops: Celery (prefork, recycled children, solo) on a real
redis-server broker, and multiprocessing children, with minute-long batch delays.

Prefork children and multiprocessing children end with ``os._exit``, so no exit hook of the
interpreter runs there: they flush through Celery's ``worker_process_shutdown`` and
multiprocessing's finalizers.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from celery import Celery
from conditions import wait_for
from loopback import free_port, serve_in_thread
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from stopping import Service

N = 5

TASKS = """
import logging, os, time, tracekit
from celery import Celery
from celery.signals import worker_process_init

logging.basicConfig(level=logging.INFO)  # before init: host logging is another issue's
if os.environ["INIT_WHERE"] == "module":
    tracekit.init("stopping-celery")

@worker_process_init.connect
def start_tracekit(**_):
    if os.environ["INIT_WHERE"] == "child":
        tracekit.init("stopping-celery")

app = Celery("tasks", broker=os.environ["BROKER"])
# Celery's root logger takeover is another issue's: here the records must reach tracekit.
app.conf.worker_hijack_root_logger = False
log = logging.getLogger("tasks")

@app.task(name="tasks.work")
def work(n):
    log.warning("task %s ran", n)
    return n

@app.task(name="tasks.slow")
def slow():
    log.warning("slow task started")
    time.sleep(1)
"""


def _start_worker(service: Service, redis_url: str, *options: str, init_where: str) -> None:
    service.write("tasks.py", TASKS)
    service.start(
        "-m", "celery", "-A", "tasks", "worker", "-l", "info", "--without-heartbeat",
        "--without-gossip", "--without-mingle", *options,
        BROKER=redis_url, INIT_WHERE=init_where,
    )  # fmt: skip
    service.wait_output("ready.")


def _send_tasks(redis_url: str) -> None:
    producer = Celery("producer", broker=redis_url)
    for n in range(N):
        producer.send_task("tasks.work", args=[n])


def _wait_until_done(service: Service) -> None:
    for n in range(N):
        service.wait_output(f"task {n} ran")
    service.wait_output("succeeded", timeout=30)


def _assert_every_task_stored(service: Service) -> None:
    consumers = [s for s in service.spans() if s.kind == "CONSUMER"]
    assert len(consumers) == N, service.output()
    logs = sorted(b for b in service.log_bodies() if b.endswith(" ran"))
    assert logs == [f"task {n} ran" for n in range(N)], service.output()


@pytest.mark.parametrize(
    ("pool", "init_where"),
    [
        (["--pool", "prefork", "-c", "2"], "module"),
        (["--pool", "prefork", "-c", "2"], "child"),
        (["--pool", "solo"], "module"),
    ],
    ids=["prefork-init-in-module", "prefork-init-in-child", "solo"],
)
def test_warm_shutdown_flushes_every_task(
    service: Service, redis_url: str, pool: list[str], init_where: str
) -> None:
    _start_worker(service, redis_url, *pool, init_where=init_where)
    _send_tasks(redis_url)
    _wait_until_done(service)

    status = service.terminate()

    assert status == 0, service.output()  # Celery's warm shutdown, its own exit status
    assert "worker: Warm shutdown" in service.output()
    _assert_every_task_stored(service)


def test_children_recycled_by_max_tasks_per_child_flush_as_they_go(
    service: Service, redis_url: str
) -> None:
    _start_worker(
        service, redis_url, "--pool", "prefork", "-c", "1", "--max-tasks-per-child", "1",
        init_where="module",
    )  # fmt: skip
    _send_tasks(redis_url)
    _wait_until_done(service)

    # Each child exited after its task, long before the batch delay: all stored already (the
    # last child's log records land just after its spans).
    wait_for(lambda: len([b for b in service.log_bodies() if b.endswith(" ran")]) == N, 30)
    _assert_every_task_stored(service)
    assert service.terminate() == 0


MULTIPROCESSING = """
import sys, time, tracekit
import multiprocessing as mp
from opentelemetry import trace

def child(n, init_in_child):
    if init_in_child:
        tracekit.init("stopping-mp")
    trace.get_tracer("t").start_span(f"child-{n}").end()
    if n == 0 and sys.argv[2] == "terminate":
        time.sleep(60)  # stopped by Process.terminate(), which sends SIGTERM

if __name__ == "__main__":
    start_method, how, where = sys.argv[1], sys.argv[2], sys.argv[3]
    if where == "parent":
        tracekit.init("stopping-mp")
    context = mp.get_context(start_method)
    if how == "pool":
        with context.Pool(2) as pool:
            pool.starmap(child, [(n, where == "child") for n in range(5)])
            pool.close()
            pool.join()
        print("exit codes", [0] * 5, flush=True)
        sys.exit(0)
    children = [context.Process(target=child, args=(n, where == "child")) for n in range(5)]
    for process in children:
        process.start()
    if how == "terminate":
        time.sleep(3)
        children[0].terminate()
    for process in children:
        process.join()
    print("exit codes", [process.exitcode for process in children], flush=True)
"""


@pytest.mark.parametrize(
    ("start_method", "how", "where"),
    [
        ("fork", "exit", "child"),
        ("fork", "exit", "parent"),
        ("spawn", "exit", "child"),
        ("fork", "terminate", "parent"),
        ("fork", "pool", "parent"),
        ("spawn", "pool", "child"),
    ],
)
def test_multiprocessing_children_flush_before_they_exit(
    service: Service, start_method: str, how: str, where: str
) -> None:
    service.write("children.py", MULTIPROCESSING)
    service.start("children.py", start_method, how, where)
    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()

    expected = [-signal.SIGTERM if how == "terminate" else 0] + [0] * (N - 1)
    assert f"exit codes {expected}" in service.output()
    names = sorted(s.name for s in service.spans())
    assert names == [f"child-{n}" for n in range(N)], service.output()


POOL_LEFT_BY_WITH = """
import logging, sys, tracekit
import multiprocessing as mp
from opentelemetry import trace

tracekit.init("stopping-pool")

def work(n):
    with trace.get_tracer("t").start_as_current_span(f"work-{n}"):
        logging.getLogger("work").warning("work %s ran", n)

if __name__ == "__main__":
    with mp.get_context(sys.argv[1]).Pool(3) as pool:  # leaving it calls pool.terminate()
        pool.map(work, range(30))
    print("pool left", flush=True)
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_pool_left_by_its_with_block_keeps_every_workers_spans_and_logs(
    service: Service, start_method: str
) -> None:
    """``Pool.__exit__`` terminates the pool: each worker gets its stop sentinel, starts
    flushing in its finalizer, and is sent SIGTERM milliseconds later. SIGTERM ended the worker
    in the middle of that flush (12 runs in 15 lost spans); it now waits for the flush."""
    service.write("pool.py", POOL_LEFT_BY_WITH)
    service.start("pool.py", start_method)
    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()

    assert "pool left" in service.output()
    names = sorted(s.name for s in service.spans() if s.name.startswith("work-"))
    assert names == sorted(f"work-{n}" for n in range(30)), service.output()
    logs = [b for b in service.log_bodies() if b.endswith(" ran")]
    assert len(logs) == 30, service.output()


def test_children_forked_while_the_metrics_port_is_served_exit_and_flush(
    service: Service,
) -> None:
    """The metrics server's thread stays in the parent: a forked child must not wait for it to
    stop when it exits (it waited for ever: join never returned, gunicorn's workers were killed)."""
    service.write("children.py", MULTIPROCESSING)
    service.start("children.py", "fork", "exit", "parent", TRACEKIT_METRICS_PORT=str(free_port()))
    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()

    assert f"exit codes {[0] * N}" in service.output()
    assert sorted(s.name for s in service.spans()) == [f"child-{n}" for n in range(N)]


FORKED_EXPORTER = """
import os, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tracekit.store.exporter import StoreSpanExporter

exporter = StoreSpanExporter(sys.argv[1])
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
provider.get_tracer("t").start_span("parent-before-fork").end()  # opens the parent's connection
pid = os.fork()
if pid == 0:
    provider.get_tracer("t").start_span("child").end()
    os._exit(0)
print("child status:", os.waitpid(pid, 0)[1])
provider.get_tracer("t").start_span("parent-after-fork").end()
"""


def test_a_forked_child_and_its_parent_both_store_through_one_exporter(service: Service) -> None:
    """No SQLite connection crosses the fork (tests/store/test_fork.py has the data it lost):
    both sides reopen theirs."""
    service.write("forked.py", FORKED_EXPORTER)
    service.start("forked.py", str(service.store))
    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()

    assert "child status: 0" in service.output()
    names = sorted(s.name for s in service.spans())
    assert names == ["child", "parent-after-fork", "parent-before-fork"], service.output()


class _KeepAliveCollector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps connections open, as a collector does; notes which
    connection (the client's port) brought which span names and log bodies."""

    protocol_version = "HTTP/1.1"
    received: ClassVar[list[tuple[int, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        for name in _names(self.path, body):
            self.received.append((self.client_address[1], name))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _names(path: str, body: bytes) -> list[str]:
    if path == "/v1/traces":
        spans = ExportTraceServiceRequest.FromString(body)
        return [
            f"span {s.name}" for r in spans.resource_spans for g in r.scope_spans for s in g.spans
        ]
    logs = ExportLogsServiceRequest.FromString(body)
    return [
        f"log {lr.body.string_value}"
        for r in logs.resource_logs
        for g in r.scope_logs
        for lr in g.log_records
    ]


@pytest.fixture
def collector() -> Iterator[str]:
    _KeepAliveCollector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveCollector)
    stop = serve_in_thread(server)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop()


FORKED_AFTER_EXPORTING = """
import logging, tracekit, tracekit.logs
import multiprocessing as mp
from opentelemetry import trace

tracekit.init("forked-otlp")

def work(name):
    with trace.get_tracer("t").start_as_current_span(name):
        logging.getLogger("app").warning(name)

if __name__ == "__main__":
    work("parent-before-fork")
    trace.get_tracer_provider().force_flush()  # exported: the connection stays open
    tracekit.logs.flush()
    child = mp.get_context("fork").Process(target=work, args=("child",))
    child.start()
    child.join()
    work("parent-after-fork")
"""


def test_a_child_forked_after_an_otlp_export_exports_on_its_own_connection(
    service: Service, collector: str
) -> None:
    """A child of ``fork()`` inherited the parent's open connection to the collector: parent and
    children wrote their requests onto one socket, interleaved (the collector answered 400)
    and read each other's answers (exports waited out their timeout), and batches were lost."""
    service.write("forked.py", FORKED_AFTER_EXPORTING)
    service.start("forked.py", TRACEKIT_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=collector)
    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()

    received = _KeepAliveCollector.received
    names = sorted(name for _, name in received)
    expected = ["child", "parent-after-fork", "parent-before-fork"]
    assert names == sorted([f"log {n}" for n in expected] + [f"span {n}" for n in expected])
    child_connections = {port for port, name in received if name.endswith(" child")}
    parent_connections = {port for port, name in received if " parent-" in name}
    assert not child_connections & parent_connections, received


# What a hung collector may add to a worker's stop besides one export timeout: the noise
# between two stops of the same worker, measured in the same test.
STOP_NOISE_S = 1.5


def _seconds_to_stop(
    service: Service,
    redis_url: str,
    pool: list[str],
    collector: str,
    *,
    slow_task_running: bool = False,
    **timeouts: str,
) -> float:
    """A worker exporting by OTLP to ``collector`` runs the tasks (and, if asked, is still
    running a slow one as it is told to stop); SIGTERM to its exit."""
    service.write("tasks.py", TASKS)
    timeouts = {"OTEL_EXPORTER_OTLP_TIMEOUT": "60", "OTEL_BSP_EXPORT_TIMEOUT": "4000", **timeouts}
    service.start(
        "-m", "celery", "-A", "tasks", "worker", "-l", "info", "--without-heartbeat",
        "--without-gossip", "--without-mingle", *pool,
        BROKER=redis_url, INIT_WHERE="module", TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector, **timeouts,
    )  # fmt: skip
    service.wait_output("ready.")
    _send_tasks(redis_url)
    for n in range(N):
        service.wait_output(f"task {n} ran")
    if slow_task_running:
        Celery("producer", broker=redis_url).send_task("tasks.slow")
        service.wait_output("slow task started")
    started = time.monotonic()
    status = service.terminate()
    stopped_after = time.monotonic() - started
    assert status == 0, service.output()
    return stopped_after


def _stops(
    service: Service,
    redis_url: str,
    pool: list[str],
    collector: str,
    tmp_path: Path,
    **kwargs: Any,
) -> tuple[float, float]:
    """Seconds from SIGTERM to exit of a worker exporting to ``collector``, then of the same
    worker exporting to a collector that takes connections and never answers."""
    answering = Service(tmp_path / "answering", tmp_path / "answering.db")
    answering.workdir.mkdir()
    try:
        own_stop = _seconds_to_stop(answering, redis_url, pool, collector, **kwargs)
    finally:
        answering.kill()
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    try:
        hung = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        return own_stop, _seconds_to_stop(service, redis_url, pool, hung, **kwargs)
    finally:
        blackhole.close()


@pytest.mark.parametrize(
    "pool", [["--pool", "solo"], ["--pool", "prefork", "-c", "2"]], ids=["solo", "prefork"]
)
def test_a_worker_with_a_hung_collector_stops_within_one_export_timeout(
    service: Service, redis_url: str, collector: str, tmp_path: Path, pool: list[str]
) -> None:
    """The collector takes connections and never answers. The worker's main process flushed at
    worker_shutdown, then at exit, and (prefork) only after its children had flushed: each
    waited the whole export timeout, so a 4 s timeout stopped a solo worker in 10 s and a prefork
    one in 15 s, past the grace period a platform gives before SIGKILL.

    Compared with the same worker's stop when the collector answers: Celery's own stop (a second
    or two for a prefork pool) takes over 3 s on a loaded machine, so no fixed bound holds."""
    own_stop, hung_stop = _stops(service, redis_url, pool, collector, tmp_path)

    # One export timeout, not two or three.
    assert hung_stop - own_stop < 4.0 + STOP_NOISE_S, (own_stop, hung_stop, service.output())


@pytest.mark.parametrize(
    "pool", [["--pool", "solo"], ["--pool", "threads", "-c", "2"]], ids=["solo", "threads"]
)
def test_a_worker_running_its_tasks_itself_waits_for_a_hung_collector_once(
    service: Service, redis_url: str, collector: str, tmp_path: Path, pool: list[str]
) -> None:
    """A solo or threads pool runs its tasks in the worker's own process. Told to stop while a
    task runs, with OpenTelemetry's OTLP timeout (4 s here, 10 s by default) shorter than the
    export timeout: the worker flushed as the stop began, the task's span ended after, and
    worker_shutdown's flush exported it once the first export had given up: the collector was
    waited for twice (about 8 s here; 20 s with the defaults, where prefork stops in 13 s)."""
    timeouts = {"OTEL_EXPORTER_OTLP_TIMEOUT": "4", "OTEL_BSP_EXPORT_TIMEOUT": "12000"}
    own_stop, hung_stop = _stops(
        service, redis_url, pool, collector, tmp_path, slow_task_running=True, **timeouts
    )

    # One OTLP timeout, not two.
    assert hung_stop - own_stop < 4.0 + STOP_NOISE_S, (own_stop, hung_stop, service.output())
