"""What an application emits in its own exit hooks reaches the store, whatever their order.

``atexit`` runs its hooks last registered, first run: a hook the application (or a library it
imported) registered before ``tracekit.init()`` runs after tracekit's own.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from loopback import serve_in_thread
from stopping import Service

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

HOOK_REGISTERED_BEFORE_INIT = """
    import atexit, logging
    from opentelemetry import trace

    def close_connections():
        for n in range(3):
            with trace.get_tracer("app").start_as_current_span(f"close-{n}"):
                logging.getLogger("app").warning("closed connection %s", n)

    atexit.register(close_connections)  # before tracekit's hook: runs after it

    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("app")
    set_correlation_id("job-1")
    with trace.get_tracer("app").start_as_current_span("work"):
        logging.getLogger("app").warning("working")
"""


def _stored(service: Service) -> tuple[list[str], list[str]]:
    with Store(service.store) as store:
        logs = [str(log.body) for log in store.logs_by_correlation_id("job-1")]
    return sorted(span.name for span in service.spans()), logs


def test_what_an_exit_hook_registered_before_init_emits_is_stored(service: Service) -> None:
    service.write("app.py", HOOK_REGISTERED_BEFORE_INIT)
    service.start("app.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    spans, logs = _stored(service)
    assert spans == ["close-0", "close-1", "close-2", "work"], service.output()
    assert logs == ["working", *(f"closed connection {n}" for n in range(3))]


TIMED_EXIT = """
    import atexit, logging, time
    from opentelemetry import trace

    def close_connections():
        for n in range(3):
            with trace.get_tracer("app").start_as_current_span(f"close-{n}"):
                logging.getLogger("app").warning("closed connection %s", n)

    def report():
        print(f"exit hooks took {time.monotonic() - began[0]:.1f} s", flush=True)

    atexit.register(report)  # runs last
    atexit.register(close_connections)  # runs after tracekit's

    import tracekit

    tracekit.init("app")
    began = []
    atexit.register(lambda: began.append(time.monotonic()))  # runs first
"""


def test_exit_hooks_wait_no_longer_than_the_export_timeout_for_a_hung_backend(
    service: Service,
) -> None:
    """Flushing at exit and flushing what each later hook emits share one export timeout: a
    backend that never answers holds the exit that long once, not once per record."""
    # One second for all; a second per late flush (three spans, three log records) is seven.
    assert _exit_hooks_seconds(service, TIMED_EXIT, export_timeout_ms=1000) < 3


HOST_PROCESSOR_ON_TRACEKITS_PROVIDER = """
    import atexit, json, sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor, SpanExporter, SpanExportResult,
    )

    class ReportExporter(SpanExporter):
        '''Writes its report when shut down, as the SDK does for every provider at exit.'''

        def __init__(self):
            self.names = []

        def export(self, spans):
            self.names.extend(span.name for span in spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            with open(sys.argv[1], "w") as report:
                json.dump(self.names, report)

    def close_connections():
        with trace.get_tracer("app").start_as_current_span("close"):
            pass

    atexit.register(close_connections)  # before tracekit's hook: runs after it

    import tracekit

    tracekit.init("app")
    trace.get_tracer_provider().add_span_processor(BatchSpanProcessor(ReportExporter()))
    with trace.get_tracer("app").start_as_current_span("work"):
        pass
"""


def test_a_processor_the_host_adds_to_tracekits_provider_is_shut_down_at_exit(
    service: Service,
) -> None:
    """The SDK shuts a provider's processors down at exit; a host that added its own to the
    provider tracekit made gets its exporter's shutdown too, and tracekit still stores what
    the later exit hooks emit."""
    report = service.workdir / "report.json"
    service.write("app.py", HOST_PROCESSOR_ON_TRACEKITS_PROVIDER)
    service.start("app.py", str(report))
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert report.exists(), service.output()
    assert json.loads(report.read_text()) == ["work"], service.output()
    assert sorted(span.name for span in service.spans()) == ["close", "work"], service.output()


SHUTDOWN_IN_AN_EXIT_HOOK = """
    import atexit, logging, time
    from opentelemetry import trace

    import tracekit

    def report():
        print(f"exit hooks took {time.monotonic() - began[0]:.1f} s", flush=True)

    atexit.register(report)  # runs last
    atexit.register(tracekit.shutdown)  # the host's cleanup, registered before init: runs after

    tracekit.init("app")
    with trace.get_tracer("app").start_as_current_span("work"):
        logging.getLogger("app").warning("working")
    began = []
    atexit.register(lambda: began.append(time.monotonic()))  # runs first
"""


def test_shutdown_in_a_later_exit_hook_shares_the_exit_timeout_for_a_hung_backend(
    service: Service,
) -> None:
    """A host's exit hook that calls ``tracekit.shutdown()`` after tracekit's flush at exit
    waits for what is left of the same export timeout, not for a second one."""
    # Two seconds for the flush at exit and the stop together; one timeout each would be four.
    assert _exit_hooks_seconds(service, SHUTDOWN_IN_AN_EXIT_HOOK, export_timeout_ms=2000) < 3


TRACING_STARTED_BY_A_LATER_INIT = """
    import atexit
    from opentelemetry import trace

    def close_connections():
        with trace.get_tracer("app").start_as_current_span("close"):
            pass

    atexit.register(close_connections)  # before tracekit's hook: runs after it

    import tracekit

    tracekit.init("app", mode="correlation")  # no tracer provider yet
    tracekit.shutdown()
    tracekit.init("app")  # makes tracekit's tracer provider, after tracekit's exit hook
    with trace.get_tracer("app").start_as_current_span("work"):
        pass
"""


def test_an_exit_hook_registered_before_init_is_stored_when_a_later_init_starts_tracing(
    service: Service,
) -> None:
    """The provider's own exit hook still runs after tracekit's, however many inits came first."""
    service.write("app.py", TRACING_STARTED_BY_A_LATER_INIT)
    service.start("app.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert sorted(span.name for span in service.spans()) == ["close", "work"], service.output()


def _exit_hooks_seconds(
    service: Service, script: str, *, export_timeout_ms: int, **env: str
) -> float:
    """Run ``script`` against a backend that takes connections and never answers: the seconds
    its exit hooks took, from its first-run hook to its last-run one ("exit hooks took S s")."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    try:
        service.write("app.py", script)
        service.start(
            "app.py",
            TRACEKIT_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_EXPORT_TIMEOUT=str(export_timeout_ms),
            **{"OTEL_EXPORTER_OTLP_TIMEOUT": "60", **env},
        )  # fmt: skip
        assert service.process is not None
        assert service.process.wait(30) == 0, service.output()
    finally:
        blackhole.close()
    took = [line for line in service.output().splitlines() if line.startswith("exit hooks took")]
    assert len(took) == 1, service.output()
    return float(took[0].split()[3])


HOOK_REGISTERED_BETWEEN_INITS = """
    import atexit, threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    import requests
    from opentelemetry import trace

    import tracekit

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            print("traceparent", self.headers.get("traceparent"), flush=True)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def tell_the_registry():
        with trace.get_tracer("app").start_as_current_span("deregister"):
            requests.get(f"http://127.0.0.1:{server.server_port}/bye", timeout=10)

    tracekit.init("app", mode="correlation")  # no tracer provider yet
    tracekit.shutdown()
    atexit.register(tell_the_registry)  # after tracekit's hook: runs before it
    tracekit.init("app")  # makes tracekit's tracer provider
"""


def test_an_exit_hook_registered_between_inits_runs_before_tracekits_flush(
    service: Service,
) -> None:
    """A hook registered after the first ``init`` runs before tracekit's flush at exit, as
    with one ``init``: what it does with an instrumented library is still traced. A later
    ``init`` that made the tracer provider moved tracekit's hook to run first, which undid the
    instrumentation before that hook ran: its request left without a trace context."""
    service.write("app.py", HOOK_REGISTERED_BETWEEN_INITS)
    service.start("app.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    spans = {span.name: span for span in service.spans()}
    assert sorted(spans) == ["GET", "deregister"], service.output()
    assert spans["GET"].parent_span_id == spans["deregister"].span_id
    sent = [line.split()[1] for line in service.output().splitlines() if "traceparent" in line]
    assert [header.rsplit("-", 1)[0] for header in sent] == [
        f"00-{spans['GET'].trace_id}-{spans['GET'].span_id}"
    ], service.output()


MANY_RECORDS_IN_A_LATE_HOOK = """
    import atexit, logging
    from opentelemetry import trace

    def drain_the_queue():
        tracer = trace.get_tracer("app")
        for n in range(1000):
            with tracer.start_as_current_span(f"drained-{n}"):
                logging.getLogger("app").info("drained message %s", n)

    atexit.register(drain_the_queue)  # before tracekit's hook: runs after it

    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("app")
    logging.getLogger("app").setLevel(logging.INFO)
    set_correlation_id("job-1")
"""


def test_a_late_exit_hook_emitting_many_records_sends_them_in_batches(
    service: Service,
) -> None:
    """What the hooks after tracekit's emit was flushed record by record, one export request
    each: a hook draining 1,000 messages held the exit for seconds. They now go out in export
    batches, and none is lost."""
    receiver = Receiver(Store(service.store), ReceiverConfig(port=0, grpc_port=0)).start()
    try:
        with _counting_requests(receiver.endpoint) as (endpoint, requests):
            service.write("app.py", MANY_RECORDS_IN_A_LATE_HOOK)
            service.start("app.py", TRACEKIT_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
            assert service.process is not None
            assert service.process.wait(60) == 0, service.output()
    finally:
        receiver.stop()
    assert len(service.spans()) == 1000, service.output()
    with Store(service.store) as store:
        assert len(store.logs_by_correlation_id("job-1")) == 1000
    # 2,000 records, flushed whenever 512 of them (spans and log records) wait, and at the end.
    assert requests["/v1/traces"] <= 4, requests
    assert requests["/v1/logs"] <= 4, requests


HOOK_REGISTERED_BEFORE_LOGGING_IS_IMPORTED = """
    import atexit

    def close_connections():  # runs after logging's own exit hook
        import logging
        from opentelemetry import trace

        for n in range(3):
            with trace.get_tracer("app").start_as_current_span(f"close-{n}"):
                logging.getLogger("app").warning("closed connection %s", n)

    atexit.register(close_connections)

    import tracekit
    from tracekit.correlation import set_correlation_id

    tracekit.init("app")
    set_correlation_id("job-1")
"""


def test_what_a_hook_running_after_loggings_own_emits_is_stored(service: Service) -> None:
    """The records of the late hooks wait for logging's exit hook; a hook registered before
    logging was imported runs after it, and what it emits is flushed as it comes."""
    service.write("app.py", HOOK_REGISTERED_BEFORE_LOGGING_IS_IMPORTED)
    service.start("app.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    spans, logs = _stored(service)
    assert spans == ["close-0", "close-1", "close-2"], service.output()
    assert logs == [f"closed connection {n}" for n in range(3)]


@contextmanager
def _counting_requests(upstream: str) -> Iterator[tuple[str, Counter[str]]]:
    """An OTLP/HTTP endpoint that passes each request on to ``upstream`` and counts them by
    path."""
    requests: Counter[str] = Counter()
    client = httpx.Client(base_url=upstream, timeout=30)

    class PassOn(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            requests[self.path] += 1
            passed = {k: v for k, v in self.headers.items() if k.lower().startswith("content-")}
            answer = client.post(self.path, content=body, headers=passed)
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), PassOn)
    stop = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        stop()
        client.close()


STOPPED_WITH_OR_WITHOUT_SHUTDOWN = """
    import sys
    from opentelemetry import trace

    import tracekit

    tracekit.init("app")
    with trace.get_tracer("app").start_as_current_span("work"):
        pass
    if sys.argv[1:] == ["shutdown"]:
        tracekit.shutdown()
        print("shut down", flush=True)
"""


@pytest.mark.parametrize("how", ["shutdown", "exit"])
def test_an_export_timeout_longer_than_a_thread_can_wait_still_stops_and_stores(
    service: Service, how: str
) -> None:
    """``OTEL_BSP_EXPORT_TIMEOUT=99999999999999999999`` (a container's "never give up"): past
    the longest wait a thread takes (about 292 years), ``tracekit.shutdown()`` raised
    OverflowError into the application, and at exit every flush printed that traceback. Such
    a timeout now waits as long as a thread can, and the span is stored."""
    service.write("app.py", STOPPED_WITH_OR_WITHOUT_SHUTDOWN)
    service.start("app.py", how, OTEL_BSP_EXPORT_TIMEOUT="99999999999999999999")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert "Traceback" not in service.output() and "OverflowError" not in service.output()
    assert [span.name for span in service.spans()] == ["work"]
    assert ("shut down" in service.output()) == (how == "shutdown")


NO_THREAD_STARTS_AT_EXIT = """
    import atexit, logging, threading
    from opentelemetry import trace

    import tracekit

    tracekit.init("app")
    with trace.get_tracer("app").start_as_current_span("work"):
        logging.getLogger("app").warning("working")

    def no_thread_starts(thread):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    # What Python 3.12.0 and 3.12.1 do from the first exit hook on (run before tracekit's).
    atexit.register(lambda: setattr(threading.Thread, "start", no_thread_starts))
"""


def test_an_exit_where_no_thread_may_start_still_stores_what_was_batched(
    service: Service,
) -> None:
    """Python 3.12.0 and 3.12.1 refuse to start a thread in an exit hook; tracekit's flush at
    exit starts one to bound each export, and failed: a traceback on stderr, nothing stored."""
    service.write("app.py", NO_THREAD_STARTS_AT_EXIT)
    service.start("app.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert "Traceback" not in service.output()
    assert [span.name for span in service.spans()] == ["work"]
    assert service.log_bodies() == ["working"]


MANY_BATCHES_WHERE_NO_THREAD_MAY_START = """
    import atexit, threading, time
    from opentelemetry import trace

    def report():
        print(f"exit hooks took {time.monotonic() - began[0]:.1f} s", flush=True)

    atexit.register(report)  # runs after tracekit's

    import tracekit

    tracekit.init("app")
    for n in range(400):  # eight export batches of 50
        with trace.get_tracer("app").start_as_current_span(f"work-{n}"):
            pass

    def no_thread_starts(thread):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    # What Python 3.12.0 and 3.12.1 do from the first exit hook on (run before tracekit's).
    atexit.register(lambda: setattr(threading.Thread, "start", no_thread_starts))
    began = []
    atexit.register(lambda: began.append(time.monotonic()))  # runs first
"""


def test_an_exit_where_no_thread_may_start_waits_one_export_timeout_for_a_hung_backend(
    service: Service,
) -> None:
    """Python 3.12.0 and 3.12.1 start no thread in an exit hook, so tracekit's flush at exit
    runs in the hook's own thread, where no thread's join bounds it. Run on this machine's
    Python (3.11), the script makes ``Thread.start`` fail from its first exit hook on, as those
    versions do, which forces that path. The flush waited for every batch's export in turn,
    each its exporter's whole timeout (eight batches, 2 s each: 16 s); no export starts past
    the export timeout now, and the one under way ends by its own timeout."""
    took = _exit_hooks_seconds(
        service, MANY_BATCHES_WHERE_NO_THREAD_MAY_START, export_timeout_ms=2000,
        OTEL_EXPORTER_OTLP_TIMEOUT="2", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="50",
    )  # fmt: skip
    assert took < 6  # the export timeout, and the 2 s of the export under way at its end
    assert "Traceback" not in service.output()
