"""``tracekit.init()`` in fresh interpreters (one global tracer provider per process).

A real OTLP/HTTP endpoint on loopback (a small capture server in this process) receives what the
child exports; the payloads are decoded with the OTLP protobuf classes.
"""

from __future__ import annotations

import http.server
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback import serve_in_thread
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracekit.store import Store

QUIET = {"TRACEKIT_METRICS_PORT": "0", "TRACEKIT_EXPORT_LOGS": "false"}


class Capture(http.server.ThreadingHTTPServer):
    """Records every OTLP/HTTP trace export it receives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CaptureHandler)
        self.exports: list[ExportTraceServiceRequest] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every exported span."""
        found = []
        for export in self.exports:
            for resource_spans in export.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                found += [(resource, s) for ss in resource_spans.scope_spans for s in ss.spans]
        return found


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


class _CaptureHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self.server.exports.append(ExportTraceServiceRequest.FromString(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Capture]:
    server = Capture()
    stop = serve_in_thread(server)
    yield server
    stop()


def run(script: str, env: dict[str, str], timeout: float = 60) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    full_env.update(QUIET)
    full_env.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_resource_attributes_and_shutdown_flush(collector: Capture) -> None:
    run(
        """
        import tracekit
        from opentelemetry import trace
        tracekit.init("orders", service_version="1.2.3")
        trace.get_tracer("t").start_span("work").end()
        tracekit.shutdown()
        """,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_RESOURCE_ATTRIBUTES": "team=payments,deployment.region=eu-west-1",
            "TRACEKIT_ENVIRONMENT": "staging",
            "OTEL_BSP_SCHEDULE_DELAY": "600000",  # only shutdown's flush can deliver the span
        },
    )

    ((resource, span),) = collector.spans()
    assert span.name == "work"
    assert resource["service.name"] == "orders"
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment"] == "staging"
    assert resource["deployment.environment.name"] == "staging"
    assert resource["team"] == "payments"
    assert resource["deployment.region"] == "eu-west-1"
    assert resource["host.name"] == socket.gethostname()


@pytest.mark.parametrize(("limit", "kept"), [(None, 500), ("20", 20)], ids=["default", "env"])
def test_a_batch_consumer_span_keeps_a_link_to_every_message(
    collector: Capture, limit: str | None, kept: int
) -> None:
    """kafka-python's poll() hands over up to 500 records: the batch's CONSUMER span links to
    each producer (the SDK's default of 128 would lose the rest); OTEL_SPAN_LINK_COUNT_LIMIT
    still decides when set."""
    run(
        """
        import tracekit
        from tracekit import messaging
        tracekit.init("billing")
        batch = [{"traceparent": f"00-{n:032x}-{n:016x}-01"} for n in range(1, 501)]
        with messaging.consume_batch(batch, system="kafka", destination="orders"):
            pass
        tracekit.shutdown()
        """,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
        | ({"OTEL_SPAN_LINK_COUNT_LIMIT": limit} if limit else {}),
    )

    ((_, span),) = collector.spans()
    assert span.name == "process orders"
    assert len(span.links) == kept
    assert span.dropped_links_count == 500 - kept
    # the first messages' links, in order (the SDK alone keeps a span's last ones)
    assert [int.from_bytes(link.span_id, "big") for link in span.links] == list(range(1, kept + 1))


def test_host_name_from_otel_resource_attributes_wins(collector: Capture) -> None:
    run(
        """
        import tracekit
        from opentelemetry import trace
        tracekit.init("orders")
        trace.get_tracer("t").start_span("work").end()
        tracekit.shutdown()
        """,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_RESOURCE_ATTRIBUTES": "host.name=node-7",
        },
    )

    ((resource, _),) = collector.spans()
    assert resource["host.name"] == "node-7"


def test_service_name_from_otel_service_name(collector: Capture) -> None:
    run(
        """
        import tracekit
        from opentelemetry import trace
        tracekit.init()
        trace.get_tracer("t").start_span("work").end()
        tracekit.shutdown()
        """,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "from-otel"},
    )

    ((resource, _),) = collector.spans()
    assert resource["service.name"] == "from-otel"


def test_otel_traces_sampler_is_honoured_and_parent_based(collector: Capture) -> None:
    run(
        """
        import tracekit
        from opentelemetry import propagate, trace
        tracekit.init("sampled")
        tracer = trace.get_tracer("t")
        tracer.start_span("root-dropped").end()
        parent = propagate.extract(
            {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        tracer.start_span("child-kept", context=parent).end()
        tracekit.shutdown()
        """,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0",
        },
    )

    assert [span.name for _, span in collector.spans()] == ["child-kept"]


def test_init_is_idempotent_and_can_restart_after_shutdown() -> None:
    out = run(
        """
        import tracekit, requests
        from tracekit._runtime import state
        first = tracekit.init("first", exporter="console")
        runtime = state.current()
        send = requests.Session.__dict__["send"]
        second = tracekit.init("second", exporter="none")
        print(first.service_name, second.service_name, second is first)
        print(state.current() is runtime, requests.Session.__dict__["send"] is send)
        tracekit.shutdown()
        print(requests.Session.__dict__["send"] is not send, state.current())
        third = tracekit.init("third", exporter="none")
        print(third.service_name)
        tracekit.shutdown()
        """,
        {},
    )

    assert out.split("\n")[:4] == ["first first True", "True True", "True None", "third"]


def test_init_after_uninstrument_instruments_again() -> None:
    """``tracekit.uninstrument()`` then ``init()``: the clients stayed bare for good (``init``
    saw tracekit running and did nothing), with no word of it; only a ``shutdown()`` first
    brought the trace headers back."""
    out = run(
        """
        import http.server, threading, requests, tracekit

        class Echo(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = ",".join(sorted(k.lower() for k in self.headers)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/"
        original = requests.Session.__dict__["send"]

        def sent():
            names = requests.get(url, timeout=10).text.split(",")
            is_original = requests.Session.__dict__["send"] is original
            print("traceparent" in names, "original" if is_original else "patched")

        tracekit.init("svc", exporter="none")
        sent()
        tracekit.uninstrument()
        sent()
        tracekit.init("svc", exporter="none")
        sent()
        tracekit.init("svc", exporter="none")
        sent()
        tracekit.shutdown()
        sent()
        server.shutdown()
        """,
        {},
    )

    assert out.splitlines() == [
        "True patched",
        "False original",
        "True patched",
        "True patched",
        "False original",
    ]


def test_a_second_init_asking_for_other_options_says_they_are_not_taken(tmp_path: Any) -> None:
    """A second init() while the first runs keeps the first configuration: a service whose
    framework plugin called init() first, then its own init("orders", exporter="store"), had
    its spans sent over OTLP to nowhere under the plugin's name, and nothing said so (a DEBUG
    line). Asking again for the same options, or for none, stays quiet."""
    store = tmp_path / "spans.db"
    ours = _tracekit_lines(f"""
        import tracekit
        from opentelemetry import trace
        tracekit.init("plugin", exporter="none")
        tracekit.init("orders", exporter="store", store={str(store)!r})
        tracekit.init("plugin", exporter="none")
        tracekit.init()
        tracekit.init(exporter="no such exporter")
        trace.get_tracer("t").start_span("checkout").end()
        tracekit.shutdown()
    """)
    assert ours == [
        "tracekit: init() was called again while running, asking for other options (exporter,"
        " service_name, store); they are not taken: the first init() stays in force until"
        " tracekit.shutdown()",
        "tracekit: init() was called again while running, asking for other options (exporter);"
        " they are not taken: the first init() stays in force until tracekit.shutdown()",
    ]
    assert not store.exists()


def test_a_second_init_with_one_refused_option_names_that_option_alone() -> None:
    """A second init() repeating the first's options and adding one that init would refuse
    (a misspelt instrumentation) named every option it gave as not taken ("exporter,
    instrument, service_name"), though the others were those in force: only the refused one
    is named now."""
    ours = _tracekit_lines("""
        import tracekit
        tracekit.init("orders", exporter="none")
        tracekit.init("orders", exporter="none", instrument="flask")
        tracekit.shutdown()
    """)
    assert ours == [
        "tracekit: init() was called again while running, asking for other options (instrument);"
        " they are not taken: the first init() stays in force until tracekit.shutdown()",
    ]


def _tracekit_lines(script: str) -> list[str]:
    """tracekit's own lines on stderr of ``script`` run in a fresh interpreter (exit 0)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**_clean_env(), **QUIET}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("tracekit: ")]


def test_a_later_init_under_another_name_says_its_spans_keep_the_first(tmp_path: Any) -> None:
    """The global tracer provider (and the spans' resource) is set once per process: a second
    init() under another name cannot rename spans, and must say so rather than mislabel them."""
    store = tmp_path / "renamed.db"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import tracekit
            from opentelemetry import trace
            tracekit.init("first")
            tracekit.shutdown()
            tracekit.init("second")
            trace.get_tracer("t").start_span("after").end()
            tracekit.shutdown()
            tracekit.init("second")  # warned again: the provider still says "first"
            tracekit.shutdown()
        """)],
        env={**_clean_env(), **QUIET, "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "spans keep" in line]
    assert (
        warnings
        == [
            "tracekit: spans keep the resource of the first init() in this process (service.name"
            " 'first', not 'second'): OpenTelemetry sets its tracer provider once per process;"
            " logs and metrics use the new one"
        ]
        * 2
    )
    with Store(store) as stored:
        assert [s.service for s in stored.spans_since(0)] == ["first"]


def test_init_shutdown_cycles_leave_one_working_set_of_processors(tmp_path: Any) -> None:
    """Test runners, notebooks and reloaders init and shut down again and again."""
    store = tmp_path / "cycles.db"
    result = subprocess.run(
        [sys.executable, "-c", CYCLES],
        env={**_clean_env(), "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    # The provider holds tracekit's one forwarding processor however often init ran.
    assert lines[0] == "processors on the provider: 1"
    # correlation stamping + open spans kept for SIGTERM + one batch exporter
    assert lines[1] == "tracekit processors: 3"
    assert "Shutdown called" not in result.stderr
    assert "ignoring" not in result.stderr
    from tracekit.store import Store

    with Store(store) as reader:
        names = sorted(span.name for span in reader.spans_since(0))
    assert names == ["after", "round-0", "round-1", "round-2", "round-3"]


CYCLES = """
import logging, tracekit
from opentelemetry import trace
from tracekit._runtime import state
logging.basicConfig(level=logging.DEBUG)  # any SDK warning about stopped processors shows up
for round in range(4):
    tracekit.init("cycles")
    trace.get_tracer("t").start_span(f"round-{round}").end()
    tracekit.shutdown()
    tracekit.shutdown()  # idempotent
trace.get_tracer("t").start_span("between").end()  # nothing running: goes nowhere, silently
tracekit.init("cycles")
provider = trace.get_tracer_provider()
print("processors on the provider:", len(provider._active_span_processor._span_processors))
print("tracekit processors:", len(state.current().span_processors))
trace.get_tracer("t").start_span("after").end()
tracekit.shutdown()
"""


def test_init_shutdown_cycles_do_not_grow_memory_for_libraries_not_imported_yet() -> None:
    """A test suite that inits and shuts down around each test, in a service that imports some
    of the instrumented libraries only later (or never): each cycle kept a whole instrumentor
    alive for each of them (about 2 KB a cycle), so memory grew with every test."""
    out = run(GROWTH, {"TRACEKIT_EXPORTER": "none"}, timeout=120)
    not_imported, per_cycle = out.split()

    assert int(not_imported) > 0  # (some instrumented library the cycles had to wait for)
    assert float(per_cycle) < 300, f"{per_cycle} bytes more after each init and shutdown"


GROWTH = """
import gc, sys, tracemalloc, tracekit
targets = {"kafka": "kafka", "confluent_kafka": "confluent_kafka", "botocore": "botocore",
           "aio_pika": "aio_pika", "celery": "celery"}
not_imported = [name for name in targets.values() if name not in sys.modules]
def cycles(n):
    for _ in range(n):
        tracekit.init("cycles")
        tracekit.shutdown()
    gc.collect()
cycles(20)
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
cycles(200)
after = tracemalloc.get_traced_memory()[0]
print(len(not_imported), (after - before) / 200)
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    env.update(QUIET)
    return env


def test_a_propagator_opentelemetry_cannot_load_does_not_stop_init() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UNKNOWN_PROPAGATOR],
        env={**_clean_env(), "OTEL_PROPAGATORS": "b3,ottrace", "TRACEKIT_EXPORTER": "none"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["b3", "x-correlation-id", "order-9"]
    # tracekit's warning, and OpenTelemetry's own refusal in one line: no traceback
    assert result.stderr.splitlines() == [
        "tracekit: OTEL_PROPAGATORS names 'ottrace', which tracekit does not carry; ignored",
        "tracekit: OpenTelemetry refuses OTEL_PROPAGATORS (Propagator ottrace not found. It is"
        " either misspelled or not installed.); its own instrumentations will not import until"
        " the name is fixed or its package installed",
    ]


UNKNOWN_PROPAGATOR = """
import tracekit
from opentelemetry import trace
from tracekit import correlation
from tracekit._http.client import inject_only
tracekit.init("mesh")
headers = {}
correlation.set_correlation_id("order-9")
with trace.get_tracer("t").start_as_current_span("call"):
    inject_only(headers)
print(*sorted(headers))
print(headers["x-correlation-id"])
"""


SERVICE = """
import sys, tracekit
from werkzeug.serving import make_server
from tracekit.wsgi import TracekitMiddleware
tracekit.init("latency")

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]

server = make_server("127.0.0.1", 0, TracekitMiddleware(app), threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


def _median_latency(env: dict[str, str], requests: int = 150) -> float:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    full_env.update({**QUIET, **env})
    child = subprocess.Popen(
        [sys.executable, "-c", SERVICE],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        durations = []
        for _ in range(requests):
            started = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b"".join(iter(lambda: sock.recv(4096), b""))
            durations.append(time.perf_counter() - started)
            assert reply.startswith(b"HTTP/1.1 200") and b"X-Correlation-ID" in reply
        return statistics.median(durations)
    finally:
        child.kill()
        child.wait(10)


def test_unreachable_otlp_endpoint_never_slows_requests() -> None:
    # A listener that never accepts: the exporter's connection hangs until its timeout, the worst
    # case (a refused connection fails fast). Batches leave every 10 ms, so exports are in
    # flight during the whole measurement.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    try:
        baseline = _median_latency({"TRACEKIT_EXPORTER": "none"})
        hanging = _median_latency(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{blackhole.getsockname()[1]}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
                "OTEL_BSP_SCHEDULE_DELAY": "10",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
            }
        )
    finally:
        blackhole.close()

    print(
        f"median latency: exporter none {baseline * 1e3:.2f} ms,"
        f" blackholed otlp {hanging * 1e3:.2f} ms"
    )
    assert hanging < baseline * 2 + 0.002


REFUSED_BATCH_SETTING = """
import logging, os, sys, tracekit
from opentelemetry import trace
from tracekit._runtime import state
from tracekit.config import ConfigError
try:
    tracekit.init("half")
except ConfigError as error:
    print("refused:", error)
print("running after the refusal:", state.current() is not None)
os.environ[sys.argv[1]] = sys.argv[2]  # fixed, and init called again
tracekit.init("half")
trace.get_tracer("t").start_span("after-the-fix").end()
logging.getLogger("half").warning("logged after the fix")
tracekit.shutdown()
"""


@pytest.mark.parametrize(
    ("variable", "value", "refusal", "fixed"),
    [
        ("OTEL_BSP_SCHEDULE_DELAY", "-5", "schedule_delay_millis must be positive.", "100"),
        # logs' batch processor: init went on with a traceback and without log export
        ("OTEL_BLRP_SCHEDULE_DELAY", "-5", "schedule_delay_millis must be positive.", "100"),
        ("OTEL_BLRP_MAX_QUEUE_SIZE", "-1", "max_queue_size must be a positive integer.", "4096"),
    ],
)
def test_a_batch_setting_the_sdk_refuses_fails_init_whole_and_names_the_variable(
    tmp_path: Path, variable: str, value: str, refusal: str, fixed: str
) -> None:
    store = tmp_path / "half.db"
    result = subprocess.run(
        [sys.executable, "-c", REFUSED_BATCH_SETTING, variable, fixed],
        env={**_clean_env(), variable: value, "TRACEKIT_EXPORTER": "store",
             "TRACEKIT_STORE": str(store), "TRACEKIT_EXPORT_LOGS": "true"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"refused: {variable}: {refusal}",
        "running after the refusal: False",
    ]
    assert "Traceback" not in result.stderr, result.stderr
    with Store(store) as written:
        assert [s.name for s in written.spans_since(0)] == ["after-the-fix"]
        assert written.count_logs() == 1  # "logged after the fix": logs are exported too


def test_a_limit_the_sdk_refuses_is_left_out_with_one_warning_and_init_goes_on(
    tmp_path: Any,
) -> None:
    """``OTEL_*_LIMIT`` values the SDK cannot read raised ValueError out of init (spans) or lost
    every exported log record (logs): the service did not start over a tuning knob."""
    store = tmp_path / "limits.db"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import logging, tracekit
            from opentelemetry import trace
            tracekit.init("limited")
            with trace.get_tracer("t").start_as_current_span("work") as span:
                span.set_attribute("note", "twelve chars")
                logging.getLogger("app").warning("inside", extra={"a": 1, "b": 2})
            tracekit.shutdown()
            tracekit.init("limited")  # warned once a process
            tracekit.shutdown()
        """)],
        env={
            **_clean_env(), "TRACEKIT_EXPORTER": "store", "TRACEKIT_STORE": str(store),
            "TRACEKIT_EXPORT_LOGS": "true",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "abc",
            "OTEL_SPAN_EVENT_COUNT_LIMIT": "1e3",
            "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "-3",
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "6",  # one it reads is still honoured
        },
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("tracekit: ")] == [
        "tracekit: OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT='abc' is not a whole number of 0 or more;"
        " using the default",
        "tracekit: OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT='-3' is not a whole number of 0 or more;"
        " using 128",
        "tracekit: OTEL_SPAN_EVENT_COUNT_LIMIT='1e3' is not a whole number of 0 or more; using 128",
    ]
    assert "Traceback" not in result.stderr
    with Store(store) as stored:
        (span,) = stored.spans_since(0)
        (log,) = stored.logs_by_trace_ids([span.trace_id])
    assert span.attributes["note"] == "twelve"
    assert (log.body, log.attributes["a"], log.attributes["b"]) == ("inside", 1, 2)


def test_init_under_another_name_than_the_applications_own_provider_says_so() -> None:
    """Under ``opentelemetry-instrument`` (or a provider the application set), spans keep that
    provider's service.name: init("checkout") left them 'zc-app' and labelled the metrics
    'checkout', silently. The same name, from OTEL_SERVICE_NAME, is not worth a line."""
    script = """
        import tracekit
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        named = Resource.create({"service.name": "zc-app"})
        trace.set_tracer_provider(TracerProvider(resource=named))
        tracekit.init(NAME)
        tracekit.shutdown()
    """
    assert _tracekit_lines(script.replace("NAME", '"checkout"')) == [
        "tracekit: spans keep the service.name of the tracer provider the application set"
        " before init() ('zc-app', not 'checkout'): tracekit's metrics say 'checkout';"
        " give both one name"
    ]
    assert _tracekit_lines(script.replace("NAME", '"zc-app"')) == []


def test_the_warnings_of_init_reach_a_format_set_before_it_that_names_the_fields() -> None:
    """A format naming tracekit's fields, set before init (uvicorn's --log-config, Django's
    LOGGING): each warning init gave, tracekit's or the SDK's, printed "--- Logging error ---"
    and a traceback (KeyError: 'correlation_id') in place of its line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import logging, tracekit
            logging.basicConfig(format="[%(correlation_id)s] %(levelname)s %(message)s")
            tracekit.init("formatted")
            tracekit.shutdown()
        """)],
        env={
            **_clean_env(), "TRACEKIT_EXPORTER": "none", "OTEL_SDK_DISABLED": "1",
            "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "abc",
        },
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "[-] WARNING tracekit: OTEL_SDK_DISABLED='1' is neither true nor false; telemetry stays"
        " on (only true turns it off)",
        "[-] WARNING Could not convert TRACES_SAMPLER_ARG to float. Using default rate 1.0.",
    ]
