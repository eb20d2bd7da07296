"""A test suite or a dev loop with no collector running: tracekit's default OTLP endpoint refuses
every connection, and each stop that flushes (a test client's lifespan, ``tracekit.shutdown()``
in a fixture) must not wait out the SDK's retries again and again."""

from __future__ import annotations

import json
import time

from loopback import free_port
from stopping import Service, server_spans

# A user's test module run as a script: a TestClient per test (its lifespan ends with a flush),
# then a fixture's init/shutdown per test; at last a collector starts, and the next stop's
# spans must reach it.
PER_TEST_STOPS = """
import json, logging, sys, time
import tracekit
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from tracekit.asgi import TracekitMiddleware
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

async def hello(request):
    logging.getLogger("app").warning("handled %s", request.path_params["n"])
    return PlainTextResponse("ok")

app = TracekitMiddleware(Starlette(routes=[Route("/hello/{n}", hello)]))

def timed(action):
    started = time.monotonic()
    action()
    return time.monotonic() - started

def a_test_with_a_client(n):
    with TestClient(app) as client:
        client.get(f"/hello/{n}")

def a_test_with_its_own_init(n):
    tracekit.init("per-test")
    TestClient(app).get(f"/hello/{n}")
    return timed(tracekit.shutdown)

def main(port, store):
    tracekit.init("per-test")
    lifespans = [timed(lambda: a_test_with_a_client(n)) for n in range(3)]
    tracekit.shutdown()
    shutdowns = [a_test_with_its_own_init(n) for n in range(3, 6)]
    receiver = Receiver(Store(store), ReceiverConfig(port=port, grpc_port=0)).start()
    tracekit.init("per-test")
    a_test_with_a_client("collector-up")
    receiver.stop()
    print(json.dumps({"lifespans": lifespans, "shutdowns": shutdowns}))

if __name__ == "__main__":  # the store's writer process is spawned: it imports this file
    main(int(sys.argv[1]), sys.argv[2])
"""


def test_stops_after_the_first_refused_one_do_not_wait_for_retries(service: Service) -> None:
    """Each TestClient lifespan and each shutdown() waited 7 s (the SDK's retries after 1, 2
    and 4 s against a refused connection): a 50-test FastAPI suite took 6 minutes instead of
    2 s. A stop tries a refused endpoint once now; once a collector listens, spans go."""
    port = free_port()
    service.write("per_test_stops.py", PER_TEST_STOPS)
    service.start(
        "per_test_stops.py", str(port), str(service.store),
        TRACEKIT_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
    )  # fmt: skip
    assert service.process is not None
    assert service.process.wait(120) == 0, service.output()

    times = json.loads(service.output().splitlines()[-1])
    print(times)
    assert max(times["lifespans"] + times["shutdowns"]) < 2.0, times
    assert "could not export spans to the OTLP endpoint" in service.output()
    paths = [span.attributes.get("url.path") for span in server_spans(service.spans())]
    assert "/hello/collector-up" in paths, service.output()


DEV_APP = """
import logging, tracekit
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tracekit.asgi import TracekitMiddleware

tracekit.init("dev-loop")

async def hello(request):
    logging.getLogger("app").warning("handled")
    return PlainTextResponse("ok")

app = TracekitMiddleware(Starlette(routes=[Route("/hello", hello)]))
"""


def test_a_reloading_dev_server_stops_at_once_with_no_collector(service: Service) -> None:
    """``uvicorn --reload`` stops its server with SIGTERM at every change of a file. A request
    just before: the log records' export (a second later) was retrying against the refused
    endpoint, and the stop's flush waited for it, then retried its own: each reload took 8 s
    instead of 1. A stop now tries a refused endpoint once, and ends an export retrying."""
    service.write("dev_app.py", DEV_APP)
    port, refused = free_port(), free_port()
    service.start(
        "-m", "uvicorn", "dev_app:app", "--port", str(port),
        TRACEKIT_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{refused}",
        OTEL_BLRP_SCHEDULE_DELAY="1000",
    )  # fmt: skip
    service.wait_http(f"http://127.0.0.1:{port}/hello")
    service.wait_output("Transient error")  # the log records' export retries meanwhile
    started = time.monotonic()
    service.terminate()
    took = time.monotonic() - started
    assert took < 4.0, service.output()  # at most the retry wait under way (1 or 2 s)
