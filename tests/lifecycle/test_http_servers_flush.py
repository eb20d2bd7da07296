"""No span lost when a pod stops: HTTP servers stopped with SIGTERM after N requests.

Each server runs the app as its users deploy it (``tracekit.init`` at the top of the app module),
with minute-long batch delays: the N SERVER spans and the N log records reach the store only if
tracekit flushes on the way out. The exit status is the server's own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import socket
import threading
import time

import httpx
import pytest
from conditions import need, wait_for
from loopback import free_port
from stopping import Service, server_spans

N = 4

ASGI_APP = """
import logging, tracekit
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tracekit.asgi import TracekitMiddleware

tracekit.init("stopping-asgi")
log = logging.getLogger("app")

async def hello(request):
    log.warning("handled request %s", request.path_params["n"])
    return PlainTextResponse("ok")

app = TracekitMiddleware(Starlette(routes=[Route("/hello/{n}", hello)]))
"""

WSGI_APP = """
import logging, tracekit
from tracekit.wsgi import TracekitMiddleware

tracekit.init("stopping-wsgi")
log = logging.getLogger("app")

def hello(environ, start_response):
    log.warning("handled request %s", environ["PATH_INFO"].rsplit("/", 1)[-1])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

app = TracekitMiddleware(hello)
"""

DJANGO_APP = """
import logging, tracekit
from django.conf import settings

tracekit.init("stopping-django")
settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="test",
    MIDDLEWARE=["tracekit.django.TracekitMiddleware"],
)
import django
from django.http import HttpResponse
from django.urls import path
log = logging.getLogger("app")

def hello(request, n):
    log.warning("handled request %s", n)
    return HttpResponse("ok")

urlpatterns = [path("hello/<str:n>", hello)]
django.setup()
from django.core.wsgi import get_wsgi_application
app = get_wsgi_application()
"""


# Django's ASGI handler refuses the lifespan protocol: uvicorn serves it without a lifespan stop.
DJANGO_ASGI_APP = DJANGO_APP.replace("wsgi import get_wsgi_", "asgi import get_asgi_").replace(
    "app = get_wsgi_application()", "app = get_asgi_application()"
)


SERVE_WERKZEUG = """
import sys
from werkzeug.serving import make_server
from wsgi_app import app
make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""


def _send_requests(port: int) -> None:
    for n in range(N):
        assert httpx.get(f"http://127.0.0.1:{port}/hello/{n}", timeout=10).status_code == 200


def _assert_all_flushed(service: Service) -> None:
    """Every SERVER span and every app log record of the N requests (and of the warm-up ones:
    a slow first answer on a loaded machine makes the readiness check ask twice)."""
    paths = [s.attributes.get("url.path") for s in server_spans(service.spans())]
    assert sorted(p for p in paths if p != "/hello/warmup") == [f"/hello/{n}" for n in range(N)]
    assert "/hello/warmup" in paths, service.output()
    logs = [b for b in service.log_bodies() if b.startswith("handled request")]
    assert sorted(b for b in logs if not b.endswith("warmup")) == [
        f"handled request {n}" for n in range(N)
    ], service.output()
    assert logs.count("handled request warmup") == paths.count("/hello/warmup")


def test_uvicorn_lifespan_shutdown_flushes_before_sigterm_is_re_raised(service: Service) -> None:
    service.write("asgi_app.py", ASGI_APP)
    port = free_port()
    service.start("-m", "uvicorn", "asgi_app:app", "--port", str(port))
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)

    status = service.terminate()

    # uvicorn shuts down gracefully, then raises SIGTERM again: the process dies of it.
    assert status == -signal.SIGTERM
    assert "Application shutdown complete" in service.output()
    _assert_all_flushed(service)


KAFKA_APP = """
import os, tracekit
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tracekit.asgi import TracekitMiddleware

tracekit.init("stopping-kafka")
from confluent_kafka import Producer
producer = Producer({"bootstrap.servers": os.environ["BOOTSTRAP"]})

async def ship(request):
    producer.produce("shipments", b"parcel", partition=0)
    producer.poll(0)  # serves the reports come so far: not the one of this message
    return PlainTextResponse("ok")

app = TracekitMiddleware(Starlette(routes=[Route("/ship", ship)]))
"""


def test_uvicorn_stopping_records_a_send_still_awaiting_its_delivery_report(
    service: Service,
) -> None:
    """The last message a confluent-kafka producer sent before the stop has no delivery report
    yet: its PRODUCER span, kept open for the report, is recorded with its outcome unknown at
    ``tracekit.shutdown()`` and at exit, but uvicorn's stop (a lifespan flush, then SIGTERM
    raised again, which runs no exit hook) lost it: the request's trace had no send."""
    need(importlib.util.find_spec("confluent_kafka") is not None, "confluent-kafka")
    service.write("kafka_app.py", KAFKA_APP)
    port = free_port()
    bootstrap = f"127.0.0.1:{free_port()}"  # no broker: the report never comes
    service.start("-m", "uvicorn", "kafka_app:app", "--port", str(port), BOOTSTRAP=bootstrap)
    service.wait_http(f"http://127.0.0.1:{port}/ship")

    assert service.terminate() == -signal.SIGTERM
    sends = [s for s in service.spans() if s.kind == "PRODUCER"]
    assert [(s.name, s.attributes.get("tracekit.delivery.outcome")) for s in sends] == [
        ("send shipments", "unknown")
    ], service.output()


def test_uvicorn_workers_each_flush_when_the_supervisor_stops(service: Service) -> None:
    service.write("asgi_app.py", ASGI_APP)
    port = free_port()
    service.start("-m", "uvicorn", "asgi_app:app", "--port", str(port), "--workers", "2")
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)

    assert service.terminate() == 0  # the supervisor's own exit status after stopping workers
    assert service.output().count("Application shutdown complete") == 2
    _assert_all_flushed(service)


def test_uvicorn_workers_of_an_app_without_lifespan_flush_when_the_supervisor_stops(
    service: Service,
) -> None:
    """A worker imports the app (and runs ``tracekit.init``) after uvicorn took SIGTERM, and
    ends by raising it with its default action: no exit hook runs. Django under ASGI has no
    lifespan shutdown either, so every span and log record of the workers' last requests was
    lost (0 of 4 stored)."""
    service.write("app_module.py", DJANGO_ASGI_APP)
    port = free_port()
    service.start("-m", "uvicorn", "app_module:app", "--port", str(port), "--workers", "2")
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)

    assert service.terminate() == 0  # the supervisor's own exit status after stopping workers
    assert "ASGI 'lifespan' protocol appears unsupported" in service.output()
    _assert_all_flushed(service)


def test_uvicorn_without_lifespan_flushes_on_its_re_raised_sigterm(service: Service) -> None:
    """``uvicorn.run`` after ``tracekit.init``: uvicorn restores our handler and re-raises it."""
    service.write("asgi_app.py", ASGI_APP)
    service.write(
        "serve.py",
        """
        import sys, uvicorn
        from asgi_app import app
        uvicorn.run(app, port=int(sys.argv[1]), lifespan="off")
        """,
    )
    port = free_port()
    service.start("serve.py", str(port))
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)

    assert service.terminate() == -signal.SIGTERM
    _assert_all_flushed(service)


@pytest.mark.parametrize(
    ("app_source", "worker_class"),
    [
        (WSGI_APP, "sync"),
        (WSGI_APP, "gthread"),
        (DJANGO_APP, "sync"),
        (ASGI_APP, "uvicorn.workers.UvicornWorker"),
    ],
    ids=["wsgi-sync", "wsgi-gthread", "django-sync", "asgi-uvicorn-worker"],
)
def test_gunicorn_workers_flush_when_the_master_is_stopped(
    service: Service, app_source: str, worker_class: str
) -> None:
    service.write("app_module.py", app_source)
    port = free_port()
    service.start(
        "-m", "gunicorn", "-w", "2", "-k", worker_class, "-b", f"127.0.0.1:{port}",
        "app_module:app",
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )  # fmt: skip
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)
    assert service.spans() == []  # nothing yet: batches wait a minute

    assert service.terminate() == 0  # gunicorn's master exits cleanly after a graceful stop
    _assert_all_flushed(service)


def test_plain_process_flushes_on_sigterm_and_still_dies_of_it(service: Service) -> None:
    """A werkzeug server (or any script) with no SIGTERM handler of its own."""
    service.write("wsgi_app.py", WSGI_APP)
    service.write("serve.py", SERVE_WERKZEUG)
    port = free_port()
    service.start("serve.py", str(port))
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)

    assert service.terminate() == -signal.SIGTERM  # what SIGTERM's default action gives
    _assert_all_flushed(service)


FLASK_ORDER_HANDLED_FOR_A_MINUTE = """
import sys, time
import tracekit
from flask import Flask
from werkzeug.serving import make_server
from tracekit.flask import init_app

tracekit.init("shop")
app = init_app(Flask("shop"))

@app.get("/orders/<int:order_id>")
def order(order_id):
    print("handling", flush=True)
    time.sleep(60)
    return "ok"

make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""


@pytest.mark.parametrize(
    ("stop", "status", "cut_by"),
    [
        (signal.SIGTERM, -signal.SIGTERM, "SIGTERM ended the process"),
        (signal.SIGINT, 0, "the process exited"),  # werkzeug's server returns on Ctrl-C
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_a_flask_request_cut_short_keeps_the_route_flask_matched(
    service: Service, stop: signal.Signals, status: int, cut_by: str
) -> None:
    """A Flask request under way as SIGTERM (or Ctrl-C of werkzeug's threaded server, whose
    request threads the exit stops) ends the process: Flask had matched its route before the
    view ran, but its span was stored as "GET" without ``http.route``, and a search by route
    missed it."""
    service.write("shop.py", FLASK_ORDER_HANDLED_FOR_A_MINUTE)
    port = free_port()
    service.start("shop.py", str(port))
    wait_for(lambda: _listening(port), what="the shop to listen")
    threading.Thread(target=_get_quietly, args=(port, "/orders/42"), daemon=True).start()
    service.wait_output("handling")
    assert service.process is not None

    service.process.send_signal(stop)

    assert service.process.wait(30) == status, service.output()
    [span] = server_spans(service.spans())
    assert span.name == "GET /orders/{order_id}"
    assert span.attributes["http.route"] == "/orders/{order_id}"
    assert span.status_message == f"HandlerInterrupted: {cut_by} before the handler returned"


DJANGO_ORDER_HANDLED_FOR_A_MINUTE = """
import sys, time
import tracekit
from django.conf import settings

tracekit.init("shop")
settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="test",
    MIDDLEWARE=["tracekit.django.TracekitMiddleware"],
)
import django
from django.http import HttpResponse
from django.urls import path

def order(request, order_id):
    print("handling", flush=True)
    time.sleep(60)
    return HttpResponse("ok")

urlpatterns = [path("orders/<int:order_id>", order)]
django.setup()
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from tracekit import asgi as tracekit_asgi
from tracekit.wsgi import TracekitMiddleware
asgi = get_asgi_application()
asgi_inside_middleware = tracekit_asgi.TracekitMiddleware(asgi)

if __name__ == "__main__":
    from werkzeug.serving import make_server
    app = get_wsgi_application()
    if sys.argv[2] == "inside-wsgi-middleware":
        app = TracekitMiddleware(app)
    make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""


UVICORN_CANCELLING_AFTER_1S = ("--port", "{port}", "--timeout-graceful-shutdown", "1")


@pytest.mark.parametrize(
    "serving",
    [
        ("shop.py", "{port}", "alone"),
        ("shop.py", "{port}", "inside-wsgi-middleware"),
        # uvicorn's stop cancels the ASGI handler's task; the view's thread goes on until the
        # SIGTERM uvicorn raises again, whose default action ends it.
        ("-m", "uvicorn", "shop:asgi", *UVICORN_CANCELLING_AFTER_1S),
        ("-m", "uvicorn", "shop:asgi_inside_middleware", *UVICORN_CANCELLING_AFTER_1S),
    ],
    ids=["werkzeug", "werkzeug-wsgi-middleware", "uvicorn-asgi", "uvicorn-asgi-middleware"],
)
def test_a_django_request_cut_short_by_sigterm_keeps_the_route_django_resolved(
    service: Service, serving: tuple[str, ...]
) -> None:
    """Django resolves the URL before its view runs, but the span of a request SIGTERM cut short
    was stored as "GET" without ``http.route``, also where tracekit's WSGI or ASGI middleware
    around Django held the span."""
    service.write("shop.py", DJANGO_ORDER_HANDLED_FOR_A_MINUTE)
    port = free_port()
    service.start(*(arg.format(port=port) for arg in serving))
    wait_for(lambda: _listening(port), what="the shop to listen")
    threading.Thread(target=_get_quietly, args=(port, "/orders/42"), daemon=True).start()
    service.wait_output("handling")

    assert service.terminate(30) == -signal.SIGTERM, service.output()
    [span] = server_spans(service.spans())
    assert span.name == "GET /orders/{order_id}"
    assert span.attributes["http.route"] == "/orders/{order_id}"
    assert span.status_message == (
        "HandlerInterrupted: SIGTERM ended the process before the handler returned"
    )


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _get_quietly(port: int, path: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30)


# Servers of the event libraries, as their documentation starts them: monkey-patched first.
SERVE_IN_EVENT_LOOP = {
    "gevent": """
        from gevent import monkey; monkey.patch_all()
        import sys
        from gevent.pywsgi import WSGIServer
        from wsgi_app import app
        WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None).serve_forever()
        """,
    "eventlet": """
        import eventlet; eventlet.monkey_patch()
        import sys
        from eventlet import wsgi
        from wsgi_app import app
        wsgi.server(eventlet.listen(("127.0.0.1", int(sys.argv[1]))), app, log_output=False)
        """,
}


@pytest.mark.parametrize("library", sorted(SERVE_IN_EVENT_LOOP))
def test_a_server_in_an_event_loop_flushes_on_sigterm_and_still_dies_of_it(
    service: Service, library: str
) -> None:
    """A monkey-patched process runs a signal handler in the library's event loop, where nothing
    may wait: tracekit's flush failed there (gevent's "Impossible to call blocking function in
    the event loop callback"), and the server died of that error, with its traceback and exit
    status 1, not of SIGTERM. eventlet's monkey-patching also hid the main thread from
    tracekit, which then handled no SIGTERM there: none of the requests' spans was stored."""
    need(importlib.util.find_spec(library) is not None, library)
    service.write("wsgi_app.py", WSGI_APP)
    service.write("serve.py", SERVE_IN_EVENT_LOOP[library])
    port = free_port()
    service.start("serve.py", str(port), PYTHONWARNINGS="ignore::DeprecationWarning")
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)
    time.sleep(0.5)  # the server idle, its loop waiting for the next request, as it is told to stop

    assert service.terminate() == -signal.SIGTERM, service.output()
    assert "Traceback" not in service.output()
    _assert_all_flushed(service)


@pytest.mark.parametrize("patch_first", [True, False], ids=["app-patches", "worker-patches"])
def test_preloaded_gevent_workers_boot_and_stop_without_tracebacks(
    service: Service, patch_first: bool
) -> None:
    """``gunicorn --preload -k gevent`` with the app module monkey-patching first, as gevent
    asks: ``init`` runs in the master, and every worker is forked with the master's green
    threads, tracekit's SIGTERM watcher among them. That copy failed in each worker as it
    booted: two tracebacks a worker ("File descriptor was closed in another greenlet", then a
    ``KeyError`` from threading's record of the threads of a fork).

    Without that line gunicorn's gevent worker patches after the fork. Each worker then ended
    with "Exception ignored in: <function _removeHandlerRef ...>" and a ``TypeError``
    traceback: the handler that hears logging's exit hook was collected as the interpreter tore
    its modules down, and logging's callback for it reached gevent's cleared ``get_ident``."""
    need(importlib.util.find_spec("gevent") is not None, "gevent")
    patch = "from gevent import monkey; monkey.patch_all()\n" if patch_first else ""
    service.write("app_module.py", patch + WSGI_APP)
    port = free_port()
    service.start(
        "-m", "gunicorn", "--preload", "-w", "2", "-k", "gevent", "-b", f"127.0.0.1:{port}",
        "app_module:app",
    )  # fmt: skip
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)

    assert service.terminate() == 0
    assert "Traceback" not in service.output()
    _assert_all_flushed(service)


SLOW_WSGI_APP = """
import logging, time, tracekit
from tracekit.wsgi import TracekitMiddleware

tracekit.init("stopping-wsgi")
log = logging.getLogger("app")

def hello(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        log.warning("handling the slow request")
        print("handling", flush=True)
        time.sleep(60)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

app = TracekitMiddleware(hello)
"""


def test_a_request_in_flight_when_sigterm_ends_a_plain_server_keeps_its_span(
    service: Service,
) -> None:
    service.write("wsgi_app.py", SLOW_WSGI_APP)
    service.write("serve.py", SERVE_WERKZEUG)
    port = free_port()
    service.start("serve.py", str(port))
    service.wait_http(f"http://127.0.0.1:{port}/warmup")
    in_flight = threading.Thread(
        target=lambda: _ask_cut_short(f"http://127.0.0.1:{port}/slow"), daemon=True
    )
    in_flight.start()
    service.wait_output("handling")

    assert service.terminate() == -signal.SIGTERM
    [span] = [s for s in server_spans(service.spans()) if s.attributes.get("url.path") == "/slow"]
    assert span.status == "ERROR"
    assert span.status_message == (
        "HandlerInterrupted: SIGTERM ended the process before the handler returned"
    )
    assert "handling the slow request" in service.log_bodies()


def _ask_cut_short(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server ends before it answers
        httpx.get(url, timeout=60)


def test_a_hanging_export_delays_the_stop_by_the_export_timeout_at_most(service: Service) -> None:
    """The collector accepts connections but never answers: SIGTERM still ends the process."""
    service.write("wsgi_app.py", WSGI_APP)
    service.write("serve.py", SERVE_WERKZEUG)
    port = free_port()
    status, stopped_after = _stop_with_a_hanging_collector(
        service, port, "serve.py", str(port),
        TRACEKIT_EXPORT_LOGS="false", OTEL_BSP_EXPORT_TIMEOUT="2000",
    )  # fmt: skip

    assert status == -signal.SIGTERM
    assert 2.0 <= stopped_after < 2.0 + 2.0  # it waited the export timeout, and no longer


def test_uvicorn_with_a_hanging_collector_stops_within_one_export_timeout(
    service: Service,
) -> None:
    """uvicorn flushes at lifespan shutdown, then raises SIGTERM again: tracekit flushed at
    both, each waiting the whole export timeout for a collector that never answers (4 s: the
    server stopped in 8 s)."""
    service.write("asgi_app.py", ASGI_APP)
    port = free_port()
    status, stopped_after = _stop_with_a_hanging_collector(
        service, port, "-m", "uvicorn", "asgi_app:app", "--port", str(port),
        OTEL_BSP_EXPORT_TIMEOUT="4000",
    )  # fmt: skip

    assert status == -signal.SIGTERM
    assert stopped_after < 4.0 + 2.0, service.output()


def _stop_with_a_hanging_collector(
    service: Service, port: int, *command: str, **env: str
) -> tuple[int, float]:
    """Start ``command`` (serving on ``port``) exporting to a collector that takes connections
    and never answers, send it requests, then SIGTERM it: its exit status, and how long it took
    to stop."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    service.start(
        *command, TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{blackhole.getsockname()[1]}",
        OTEL_EXPORTER_OTLP_TIMEOUT="60", **env,
    )  # fmt: skip
    try:
        service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
        _send_requests(port)
        started = time.monotonic()
        status = service.terminate()
        return status, time.monotonic() - started
    finally:
        blackhole.close()


STOP_WITH_A_HANGING_COLLECTOR = """
import logging, sys, time, tracekit
from opentelemetry import trace
tracekit.init("hanging")
with trace.get_tracer("t").start_as_current_span("pending"):
    logging.getLogger("app").warning("pending too")
print(f"started at {time.monotonic()}", flush=True)
if sys.argv[1] == "shutdown":
    started = time.monotonic()
    tracekit.shutdown()
    print(f"shutdown took {time.monotonic() - started:.1f} s", flush=True)
"""


@pytest.mark.parametrize("how", ["shutdown", "exit"])
def test_shutdown_and_exit_wait_the_export_timeout_at_most(service: Service, how: str) -> None:
    """``tracekit.shutdown()``, or the exit hook, with spans and log records still batched and a
    collector that never answers: bounded by OTEL_BSP_EXPORT_TIMEOUT, not by the exporters'
    own timeouts and retries (they took 10 s, or 40 s with OTEL_EXPORTER_OTLP_TIMEOUT=40)."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    service.write("stop.py", STOP_WITH_A_HANGING_COLLECTOR)
    service.start(
        "stop.py", how,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{blackhole.getsockname()[1]}",
        OTEL_EXPORTER_OTLP_TIMEOUT="40", OTEL_BSP_EXPORT_TIMEOUT="2000",
    )  # fmt: skip
    try:
        assert service.process is not None
        assert service.process.wait(60) == 0, service.output()
        took = service.seconds_since("started at ")
    finally:
        blackhole.close()

    assert took < 2.0 + 3.0, service.output()  # the export timeout at most, then the exit
    if how == "shutdown":
        assert "shutdown took 2.0 s" in service.output()


def test_gunicorn_workers_recycled_by_max_requests_flush_as_they_exit(service: Service) -> None:
    service.write("app_module.py", WSGI_APP)
    port = free_port()
    service.start(
        "-m", "gunicorn", "-w", "1", "--max-requests", "2", "-b", f"127.0.0.1:{port}",
        "app_module:app",
    )  # fmt: skip
    service.wait_http(f"http://127.0.0.1:{port}/hello/warmup")
    _send_requests(port)  # the worker restarts after every second request

    # Recycled workers exited long before the batch delay: their spans are stored already.
    wait_for(lambda: len(server_spans(service.spans())) >= N, 30, "the recycled workers' spans")
    assert service.terminate() == 0
    _assert_all_flushed(service)


# One process serving the application twice (a test harness's TestClient): its first stop meets
# a collector that takes connections and never answers, its second a collector that works.
TWO_LIFESPANS = """
import socket, sys, tracekit
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from tracekit.asgi import TracekitMiddleware
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

async def hello(request):
    return PlainTextResponse("ok")

def main(port, store):
    hanging = socket.create_server(("127.0.0.1", port))
    tracekit.init("served-twice")
    app = TracekitMiddleware(Starlette(routes=[Route("/hello/{n}", hello)]))
    with TestClient(app) as client:
        client.get("/hello/first")
    hanging.close()
    receiver = Receiver(Store(store), ReceiverConfig(port=port, grpc_port=0)).start()
    with TestClient(app) as client:
        client.get("/hello/second")
    receiver.stop()

if __name__ == "__main__":  # the store's writer process is spawned: it imports this file
    main(int(sys.argv[1]), sys.argv[2])
"""


def test_an_application_served_again_has_its_stop_flushed_after_an_earlier_stop_hung(
    service: Service,
) -> None:
    """The flushes of one stop share one export timeout; the first stop used it up waiting for
    the collector that hung, and the second lifespan's shutdown, with the collector back, did
    not flush at all: its request's span was never sent."""
    port = free_port()
    service.write("two_lifespans.py", TWO_LIFESPANS)
    service.start(
        "two_lifespans.py", str(port), str(service.store),
        TRACEKIT_EXPORTER="otlp", TRACEKIT_EXPORT_LOGS="false",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="1", OTEL_BSP_EXPORT_TIMEOUT="1000",
    )  # fmt: skip
    assert service.process is not None
    assert service.process.wait(60) == 0, service.output()

    paths = [span.attributes.get("url.path") for span in server_spans(service.spans())]
    assert "/hello/second" in paths, service.output()


SERVE_IN_A_THREAD = """
import os, socket, threading, time
import httpx, uvicorn
from asgi_app import app

for run in range(2):  # a test fixture, or a notebook cell, serving and stopping the app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    httpx.get(f"http://127.0.0.1:{sock.getsockname()[1]}/hello/{run}")
    started = time.monotonic()
    server.should_exit = True
    thread.join(30)
    print(f"stopped in {time.monotonic() - started:.1f} s", flush=True)
os._exit(0)  # the process's own exit flush is not what this is about
"""


def test_a_server_stopped_without_a_signal_does_not_wait_for_the_collector(
    service: Service,
) -> None:
    """uvicorn run in a thread (a test fixture, a notebook) and stopped with ``should_exit``:
    the process goes on. A stop waited for an export: the whole export timeout (4 s) with a
    collector that never answers; with none running, 7 s at every stop."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    service.write("asgi_app.py", ASGI_APP)
    service.write("serve.py", SERVE_IN_A_THREAD)
    service.start(
        "serve.py", TRACEKIT_EXPORTER="otlp", TRACEKIT_EXPORT_LOGS="false",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{blackhole.getsockname()[1]}",
        OTEL_EXPORTER_OTLP_TIMEOUT="60", OTEL_BSP_EXPORT_TIMEOUT="4000",
    )  # fmt: skip
    try:
        assert service.process is not None
        assert service.process.wait(60) == 0, service.output()
    finally:
        blackhole.close()

    stops = [line.split()[2] for line in service.output().splitlines() if "stopped in" in line]
    assert len(stops) == 2, service.output()
    assert all(float(took) < 1.0 for took in stops), service.output()  # uvicorn's own: 0.1 s
