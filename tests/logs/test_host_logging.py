"""``tracekit.init()`` leaves the host's logging as it was, and still exports every record.

Each case runs in a fresh interpreter: the point is what a process that configured (or did not
configure) logging sees on its own stderr once tracekit is in, and what lands in the store.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest
from loopback import free_port

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; fail with its output if it exits non-zero."""
    environ = {**os.environ, "TRACEKIT_STORE": str(tmp_path / "t.db"), **env}
    for name in ("TRACEKIT_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if name not in env:
            environ.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result


# structlog through the stdlib, rendered as JSON by its ProcessorFormatter on stderr, and
# tracekit's JSON lines on stdout (a script's lines, for ``run_python``)
STRUCTLOG_THROUGH_STDLIB = """
        tracekit.init("shop", exporter="store", metrics_port=0)
        structlog.configure(
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        handler = logging.StreamHandler()
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(),
                ]
            )
        )
        logging.getLogger().addHandler(handler)
        logging.getLogger().addHandler(tracekit.logs.json_stdout_handler())
"""


def stored_bodies(tmp_path: Path) -> list[str]:
    """Bodies of the log records in the test's store, oldest first."""
    path = tmp_path / "t.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT body FROM logs ORDER BY time_ns, id")]


def test_last_resort_output_is_kept_when_the_app_configured_nothing(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    result = run_python(
        f"""
        import logging, tracekit
        log = logging.getLogger("shop")
        log.warning("before init")
        tracekit.init("shop", exporter="store", metrics_port={port})
        log.warning("after init")
        log.info("below the default level")
        tracekit.shutdown()
        """,
        tmp_path,
    )
    busy.close()
    lines = result.stderr.splitlines()
    assert lines[0] == "before init"
    assert "after init" in lines
    assert any(f"metrics port {port} unavailable" in line for line in lines), lines
    assert "below the default level" not in result.stderr
    assert "after init" in stored_bodies(tmp_path)


def test_basic_config_after_init_still_configures_the_root(tmp_path: Path) -> None:
    result = run_python(
        """
        import logging, tracekit
        tracekit.init("shop", exporter="store", metrics_port=0)
        form = "%(levelname)s [%(correlation_id)s] %(message)s"
        logging.basicConfig(level=logging.INFO, format=form)
        logging.getLogger("shop").info("configured after init")
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert result.stderr.splitlines() == ["INFO [-] configured after init"]
    assert "configured after init" in stored_bodies(tmp_path)


def test_the_host_handler_list_is_untouched_and_shutdown_restores_the_stdlib(tmp_path) -> None:
    result = run_python(
        """
        import logging, tracekit
        original = logging.Logger.callHandlers
        before = list(logging.root.handlers)
        tracekit.init("shop", exporter="store", metrics_port=0)
        assert logging.root.handlers == before, logging.root.handlers
        tracekit.shutdown()
        assert logging.Logger.callHandlers is original
        logging.getLogger("shop").warning("after shutdown")
        """,
        tmp_path,
    )
    assert result.stderr == "after shutdown\n"
    assert stored_bodies(tmp_path) == []


def test_non_propagating_loggers_are_not_exported_but_celery_task_loggers_are(tmp_path) -> None:
    run_python(
        """
        import logging, tracekit
        tracekit.init("shop", exporter="store", metrics_port=0)
        quiet = logging.getLogger("quiet")
        quiet.propagate = False
        quiet.addHandler(logging.NullHandler())
        quiet.warning("kept inside")
        task = logging.getLogger("celery.task")
        task.propagate = False
        task.addHandler(logging.NullHandler())
        logging.getLogger("celery.task.shop").warning("task line")
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert stored_bodies(tmp_path) == ["task line"]


def test_only_the_export_pipelines_own_loggers_are_left_out(tmp_path: Path) -> None:
    """``opentelemetry.*``, ``urllib3.*`` and ``requests.*`` are left out; an application's
    logger whose name merely starts like them (``requests_oauthlib``, ``requestsvc``) was
    left out too, its lines never exported."""
    run_python(
        """
        import logging, tracekit
        tracekit.init("shop", exporter="store", metrics_port=0)
        for name in ("requests_oauthlib", "requestsvc.orders", "opentelemetry_demo", "urllib3x",
                     "requests", "urllib3.connectionpool", "opentelemetry.sdk"):
            logging.getLogger(name).warning("from %s", name)
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert stored_bodies(tmp_path) == [
        "from requests_oauthlib",
        "from requestsvc.orders",
        "from opentelemetry_demo",
        "from urllib3x",
    ]


def test_the_warning_naming_the_otlp_endpoint_leaves_its_credentials_out(tmp_path: Path) -> None:
    """A token in the endpoint's query (``?api_key=``) was repeated in tracekit's warning, on
    the application's log; userinfo already was not."""
    port = free_port()  # nobody listens there
    result = run_python(
        """
        import tracekit
        from opentelemetry import trace
        tracekit.init("shop", metrics_port=0)
        with trace.get_tracer("t").start_as_current_span("work"):
            pass
        tracekit.shutdown()
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        TRACEKIT_LOGS="false",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://me:pw1@127.0.0.1:{port}/v1/traces?api_key=tok1",
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    ours = [line for line in result.stderr.splitlines() if line.startswith("tracekit: ")]
    assert ours == [
        f"tracekit: could not export spans to the OTLP endpoint http://127.0.0.1:{port}/v1/traces?…"
        " (unreachable or refusing); they are dropped until it answers. Start a collector there"
        " (or `tracekit collector`), or set TRACEKIT_EXPORTER=store to write to the local store."
    ], result.stderr


def test_the_sdk_exporters_lines_leave_the_endpoints_credentials_out(tmp_path: Path) -> None:
    """The SDK's own retry line quotes the failed request's URL, query and all: a token in
    ``OTEL_EXPORTER_OTLP_*_ENDPOINT`` (``?api_key=``) reached the application's stderr."""
    port = free_port()  # nobody listens there
    result = run_python(
        """
        import logging, time, tracekit
        from opentelemetry import trace
        tracekit.init("shop", metrics_port=0)
        with trace.get_tracer("t").start_as_current_span("work"):
            logging.getLogger("shop").warning("working")
        time.sleep(3)  # the batches' own exports retry (a stop's tries a refused endpoint once)
        tracekit.shutdown()
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces?api_key=tok1",
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"http://127.0.0.1:{port}/v1/logs?api_key=tok2",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_BLRP_SCHEDULE_DELAY="100",
    )
    retries = [line for line in result.stderr.splitlines() if line.startswith("Transient error")]
    assert {line.split(" batch")[0].rsplit(" ", 1)[1] for line in retries} == {"spans", "logs"}
    assert all(f"port={port}): Max retries exceeded with url: /v1/" in line for line in retries)
    assert "/v1/traces?… " in result.stderr and "/v1/logs?… " in result.stderr, result.stderr
    assert "tok1" not in result.stderr and "tok2" not in result.stderr, result.stderr


@pytest.mark.parametrize("scheme", ["http://", ""])
def test_the_grpc_exporters_lines_leave_the_endpoints_userinfo_out(
    tmp_path: Path, scheme: str
) -> None:
    """The gRPC exporter names its endpoint as ``host:port``, userinfo and all: a password in
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` reached the application's stderr in each of its lines, and
    in tracekit's own warning when the endpoint had no scheme (``user:pass@host:4317``)."""
    port = free_port()  # nobody listens there
    result = run_python(
        """
        import tracekit
        from opentelemetry import trace
        tracekit.init("shop", metrics_port=0, logs=False)
        with trace.get_tracer("t").start_as_current_span("work"):
            pass
        tracekit.shutdown()
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"{scheme}me:p@ss1@127.0.0.1:{port}",
        OTEL_EXPORTER_OTLP_TIMEOUT="2",
    )
    sdk_lines = [line for line in result.stderr.splitlines() if " traces to " in line]
    assert sdk_lines and all(f"to 127.0.0.1:{port}," in line for line in sdk_lines), result.stderr
    assert f"OTLP endpoint {scheme}127.0.0.1:{port} (unreachable" in result.stderr, result.stderr
    assert "ss1" not in result.stderr, result.stderr


def test_the_exporters_request_lines_at_debug_leave_the_endpoints_credentials_out(
    tmp_path: Path,
) -> None:
    """At DEBUG, urllib3 logs every request line: each export's showed the endpoint's token
    (``"POST /v1/traces?api_key=…"``). The application's own requests keep their lines whole."""
    result = run_python(
        """
        import logging, os, threading, requests, tracekit
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from opentelemetry import trace

        class Collector(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.do_GET()
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_port
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
        os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://127.0.0.1:{port}/v1/traces?api_key=tok1"
        tracekit.init("shop", metrics_port=0, exporter="otlp", logs=False, export_logs=False)
        with trace.get_tracer("t").start_as_current_span("work"):
            requests.get(f"http://127.0.0.1:{port}/own?page=2")
        tracekit.shutdown()
        """,
        tmp_path,
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("urllib3.")]
    assert any('"GET /own?page=2 HTTP/1.1" 200' in line for line in lines), result.stderr
    assert any('"POST /v1/traces?… HTTP/1.1" 200' in line for line in lines), result.stderr
    assert "tok1" not in result.stderr, result.stderr


def test_the_sdks_warning_on_a_malformed_otlp_header_names_it_without_its_value(
    tmp_path: Path,
) -> None:
    """``Authorization="Bearer …"`` (quotes kept, as docker-compose keeps them) is no valid
    ``OTEL_EXPORTER_OTLP_HEADERS`` member: the SDK's warning about it quoted the token whole."""
    result = run_python(
        """
        import tracekit
        tracekit.init("shop", metrics_port=0, logs=False)
        tracekit.shutdown()
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}",
        OTEL_EXPORTER_OTLP_HEADERS='Authorization="Bearer tok1",Bearer tok2,x-team=blue',
    )
    warnings = [line for line in result.stderr.splitlines() if "Header format invalid" in line]
    assert [line.rsplit(": ", 1)[1] for line in warnings] == ["Authorization=…", "…"] * 2
    assert "tok1" not in result.stderr and "tok2" not in result.stderr, result.stderr


def test_an_otlp_header_value_the_http_client_refuses_is_not_quoted_in_the_failure_line(
    tmp_path: Path,
) -> None:
    """A header value holding a line break once decoded (``%0A`` in a pasted token) makes the
    HTTP client refuse every export, and the SDK's failure line quoted the value whole: the
    token, in the application's log."""
    with Receiver(Store(tmp_path / "collector.db"), ReceiverConfig(port=0)) as receiver:
        result = run_python(
            """
            import tracekit
            from opentelemetry import trace
            tracekit.init("shop", metrics_port=0, logs=False)
            trace.get_tracer("t").start_span("work").end()
            tracekit.shutdown()
            """,
            tmp_path,
            TRACEKIT_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20tok1%0Atok2",
        )
    failures = [line for line in result.stderr.splitlines() if "header value" in line]
    assert failures and all(line.endswith("in header value: …") for line in failures), failures
    assert "tok1" not in result.stderr and "tok2" not in result.stderr, result.stderr


def test_a_header_value_refused_in_http_client_s_words_is_not_quoted_in_the_failure_line(
    tmp_path: Path,
) -> None:
    """requests before 2.32 (the OTLP/HTTP exporter allows any 2.x) left such a value to
    http.client, whose refusal reads "Invalid header value b'Bearer tok1\\ntok2'": the SDK's
    failure line put the token in the application's log (requests 2.31.0). The line is logged
    here as the SDK logs it: the requests CI runs refuses the value in its own words."""
    with Receiver(Store(tmp_path / "collector.db"), ReceiverConfig(port=0)) as receiver:
        result = run_python(
            """
            import logging, tracekit
            tracekit.init("shop", metrics_port=0, logs=False)
            logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter").error(
                "Failed to export %s batch code: %s, reason: %s", "spans", None,
                "Invalid header value b'Bearer tok1\\ntok2'",
            )
            tracekit.shutdown()
            """,
            tmp_path,
            TRACEKIT_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        )
    assert "tok1" not in result.stderr and "tok2" not in result.stderr, result.stderr
    assert "Failed to export spans batch code: None, reason: Invalid header value …" in (
        result.stderr.splitlines()
    )


def test_one_warning_naming_an_unreachable_otlp_endpoint(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = run_python(
        """
        import logging, time, tracekit
        from opentelemetry import trace
        tracekit.init("shop", metrics_port=0)
        tracer = trace.get_tracer("t")
        for _ in range(3):
            with tracer.start_as_current_span("work"):
                logging.getLogger("shop").warning("working")
            time.sleep(1.5)
        tracekit.shutdown()
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_BLRP_SCHEDULE_DELAY="100",
    )
    ours = sorted(line for line in result.stderr.splitlines() if line.startswith("tracekit: "))
    assert ours == [
        f"tracekit: could not export {what} to the OTLP endpoint {endpoint}/v1/{signal}"
        " (unreachable or refusing); they are dropped until it answers. Start a collector there"
        " (or `tracekit collector`), or set TRACEKIT_EXPORTER=store to write to the local store."
        for what, signal in (("log records", "logs"), ("spans", "traces"))
    ], result.stderr
    assert result.stderr.count("working") == 3
    # The SDK's own retry and failure lines explain the first failed batch of each signal;
    # once tracekit has warned, the later batches (three of each) add none.
    lines = result.stderr.splitlines()
    after = lines[max(i for i, line in enumerate(lines) if line.startswith("tracekit: ")) + 1 :]
    assert [line for line in after if "export" in line] == [], result.stderr


def test_logging_configured_after_init_does_not_wait_for_an_unreachable_collector(
    tmp_path: Path,
) -> None:
    """``dictConfig`` (Django's LOGGING, uvicorn's --log-config) flushes every handler the
    stdlib knows of: it waited while tracekit's batch went to a collector not up yet (a sidecar
    that starts after the app), 5 s and more at every start."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = run_python(
        """
        import logging, logging.config, os, time, tracekit
        tracekit.init("shop", metrics_port=0)
        logging.getLogger("shop").warning("settings loaded")
        started = time.monotonic()
        logging.config.dictConfig({"version": 1, "root": {"level": "INFO"}})
        print(f"{time.monotonic() - started:.1f}", flush=True)
        os._exit(0)
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BLRP_SCHEDULE_DELAY="60000",
    )
    assert float(result.stdout) < 1.0, result.stderr


def test_flush_exports_what_is_batched_before_the_delay(tmp_path: Path) -> None:
    """What a worker calls before it exits (issue #14 uses it): the batch goes out now."""
    run_python(
        """
        import logging, os, tracekit, tracekit.logs
        tracekit.init("shop", exporter="store", metrics_port=0)
        logging.getLogger("shop").warning("batched")
        assert tracekit.logs.flush() is True
        os._exit(0)  # no shutdown, no atexit: only what flush exported is stored
        """,
        tmp_path,
        OTEL_BLRP_SCHEDULE_DELAY="60000",
    )
    assert stored_bodies(tmp_path) == ["batched"]


def test_flush_returns_within_its_timeout_when_the_collector_hangs(tmp_path: Path) -> None:
    """The SDK's flush ignores its timeout and waits out the exporter's own, retries included:
    ``flush(timeout_millis=1000)`` (and a ``LogExportHandler``'s flush, which the stdlib runs at
    exit) blocked for 20 s against a collector that accepts and never answers."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    with closing(blackhole):
        result = run_python(
            """
            import logging, os, time, tracekit, tracekit.logs
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from tracekit._runtime.export_watch import WatchedLogExporter
            tracekit.init("shop", metrics_port=0)
            logging.getLogger("shop").warning("batched")
            started = time.monotonic()
            done = tracekit.logs.flush(timeout_millis=1000)
            print(f"flush {done} {time.monotonic() - started:.0f}", flush=True)
            provider = LoggerProvider(shutdown_on_exit=False)
            provider.add_log_record_processor(BatchLogRecordProcessor(WatchedLogExporter()))
            handler = tracekit.logs.LogExportHandler(provider)
            logging.getLogger("attached").addHandler(handler)
            logging.getLogger("attached").warning("attached")
            started = time.monotonic()
            handler.flush()
            print(f"handler flush {time.monotonic() - started:.0f}", flush=True)
            os._exit(0)
            """,
            tmp_path,
            TRACEKIT_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{blackhole.getsockname()[1]}",
            OTEL_EXPORTER_OTLP_TIMEOUT="20",
            OTEL_BLRP_SCHEDULE_DELAY="60000",
        )
    assert result.stdout.splitlines() == ["flush False 1", "handler flush 5"], result.stderr


def test_a_record_made_by_hand_without_a_name_is_handled_and_exported(tmp_path: Path) -> None:
    """``logging.makeLogRecord({...})`` without ``name`` gives a record named None: handing it
    to a logger raised AttributeError out of ``logger.handle`` (tracekit's export read the
    name as text), where the stdlib alone prints it."""
    result = run_python(
        """
        import logging, tracekit
        tracekit.init("shop", exporter="store", metrics_port=0)
        record = logging.makeLogRecord({"msg": "made by hand", "levelno": 30})
        logging.getLogger().handle(record)
        print("handled")
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert result.stdout == "handled\n"
    assert "made by hand" in result.stderr.splitlines()  # the last-resort handler's line
    assert stored_bodies(tmp_path) == ["made by hand"]


def test_a_record_that_cannot_be_formatted_is_still_exported(tmp_path: Path) -> None:
    """A bug in a log call (arguments that do not fit its message, an exception whose
    ``__str__`` raises) lost the very record that shows it: not exported, and one warning
    saying log export had failed."""
    result = run_python(
        """
        import logging, tracekit
        tracekit.init("shop", exporter="store", metrics_port=0)
        tracekit.correlation.set_correlation_id("order-7")
        log = logging.getLogger("shop")
        log.warning("order %d failed", "seven")
        class Unprintable(Exception):
            def __str__(self):
                raise RuntimeError("no text")
        try:
            raise Unprintable()
        except Unprintable:
            log.exception("charging failed")
        log.warning("next", stack_info=True)
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert "tracekit: log export failed" not in result.stderr
    assert stored_bodies(tmp_path) == [
        "order %d failed (arguments that do not fit it: ('seven',))",
        "charging failed",
        "next",
    ]
    with Store(tmp_path / "t.db") as store:
        _, charging, following = store.logs_by_correlation_id("order-7")
    assert charging.attributes["exception.type"] == "Unprintable"
    assert charging.attributes["exception.message"] == "Unprintable()"
    # stack_info=True: the stack the call asked for, as OpenTelemetry's code.stacktrace
    stack = str(following.attributes["code.stacktrace"])
    assert stack.startswith('Stack (most recent call last):\n  File "<string>", line 14')


def test_structlog_through_its_stdlib_formatter_exports_the_event_and_its_fields(
    tmp_path: Path,
) -> None:
    """structlog's stdlib integration (``ProcessorFormatter``, as its docs set it up) logs the
    event dict as the record's message: the exported body was the dict's Python repr."""
    result = run_python(
        """
        import logging, structlog, tracekit
        from tracekit.structlog import add_tracekit_context
        tracekit.init("shop", exporter="store", metrics_port=0)
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                add_tracekit_context,
                structlog.stdlib.add_log_level,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        handler = logging.StreamHandler()
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
        )
        logging.getLogger().addHandler(handler)
        tracekit.correlation.set_correlation_id("order-8")
        structlog.contextvars.bind_contextvars(customer="c-42")
        structlog.get_logger("shop").warning("card declined", amount=12.5)
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert '"event": "card declined"' in result.stderr  # the host's own rendering, unchanged
    with Store(tmp_path / "t.db") as store:
        (record,) = store.logs_by_correlation_id("order-8")
    assert record.body == "card declined"
    assert record.attributes["amount"] == 12.5
    assert record.attributes["customer"] == "c-42"
    assert record.attributes["level"] == "warning"


def test_structlog_exc_info_through_its_stdlib_formatter_exports_the_exception(
    tmp_path: Path,
) -> None:
    """With ``ProcessorFormatter``, ``exc_info=`` stays in the event dict (structlog's renderer
    formats it in the handler): the host's output showed the traceback, the exported record
    had an attribute ``exc_info: true`` and no exception."""
    result = run_python(
        """
        import logging, structlog, tracekit
        """
        + STRUCTLOG_THROUGH_STDLIB
        + """
        tracekit.correlation.set_correlation_id("order-8")
        log = structlog.get_logger("shop")
        try:
            {}["card"]
        except KeyError:
            log.error("card lookup failed", exc_info=True)
        log.warning("refund failed", exc_info=ValueError("no refund"))
        log.warning("no exception here", exc_info=True)
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert "KeyError: 'card'" in result.stderr  # the host's own rendering, unchanged
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["exception"].endswith("in <module>\nKeyError: 'card'")  # the JSON line's
    assert lines[1]["exception"] == "ValueError: no refund"
    assert "exception" not in lines[2] and "exc_info" not in lines[2]
    with Store(tmp_path / "t.db") as store:
        lookup, refund, none = store.logs_by_correlation_id("order-8")
    assert lookup.attributes["exception.type"] == "KeyError"
    assert lookup.attributes["exception.message"] == "'card'"
    stacktrace = str(lookup.attributes["exception.stacktrace"])
    assert stacktrace.startswith("Traceback (most recent call last):\n")
    assert stacktrace.endswith("in <module>\nKeyError: 'card'\n")  # raised, with its frame
    assert refund.attributes["exception.type"] == "ValueError"
    assert refund.attributes["exception.message"] == "no refund"
    assert none.body == "no exception here" and "exception.type" not in none.attributes
    for record in (lookup, refund, none):
        assert "exc_info" not in record.attributes  # structlog's instruction, not a field


def test_structlog_async_exception_through_its_stdlib_formatter_exports_the_exception(
    tmp_path: Path,
) -> None:
    """structlog's ``await log.aexception(...)`` takes the exception in the caller and logs it in
    an executor thread, where the stdlib's ``Logger.exception`` finds none: the record's own
    ``exc_info`` is ``(None, None, None)``. The exported record had no exception and the JSON
    line said ``NoneType: None``, while the host's rendering showed the traceback."""
    result = run_python(
        """
        import asyncio, logging, structlog, tracekit
        """
        + STRUCTLOG_THROUGH_STDLIB
        + """

        async def charge():
            tracekit.correlation.set_correlation_id("order-9")
            try:
                {}["card"]
            except KeyError:
                await structlog.get_logger("shop").aexception("card lookup failed")

        asyncio.run(charge())
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert "KeyError: 'card'" in result.stderr  # the host's own rendering, unchanged
    (line,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["exception"].endswith("in charge\nKeyError: 'card'")
    with Store(tmp_path / "t.db") as store:
        (record,) = store.logs_by_correlation_id("order-9")
    assert record.attributes["exception.type"] == "KeyError"
    assert str(record.attributes["exception.stacktrace"]).endswith("in charge\nKeyError: 'card'\n")


def test_the_applications_own_service_and_trace_id_fields_are_exported(tmp_path: Path) -> None:
    """``extra={"service": ...}`` (the provider called, say) wins on stdout, as documented, but
    the exported record dropped it: every name tracekit stamps was left out of the attributes,
    the application's own values with tracekit's."""
    run_python(
        """
        import logging, structlog, tracekit
        from opentelemetry import trace
        tracekit.init("orders", exporter="store", metrics_port=0)

        class Ambiguous:  # as a numpy array compares: no truth value
            def __eq__(self, other): raise ValueError("ambiguous")
            def __ne__(self, other): raise ValueError("ambiguous")
            def __repr__(self): return "Ambiguous()"

        structlog.configure(
            processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
            logger_factory=structlog.stdlib.LoggerFactory(),
        )
        tracekit.correlation.set_correlation_id("order-5")
        log = logging.getLogger("orders")
        with trace.get_tracer("shop").start_as_current_span("checkout"):
            log.warning("paying", extra={"service": "stripe", "trace_id": "stripe-9"})
            structlog.get_logger("orders").warning("refunding", service="adyen")
            log.warning("plain")
            log.warning("weighing", extra={"span_id": Ambiguous()})
        tracekit.shutdown()
        """,
        tmp_path,
    )
    with Store(tmp_path / "t.db") as store:
        paying, refunding, plain, weighing = store.logs_by_correlation_id("order-5")
    assert weighing.attributes["span_id"] == "Ambiguous()"  # compared to nothing: not text
    assert paying.service == refunding.service == "orders"  # the resource's, as before
    assert paying.trace_id == plain.trace_id and paying.trace_id != "stripe-9"
    assert paying.attributes["service"] == "stripe"
    assert paying.attributes["trace_id"] == "stripe-9"
    assert refunding.attributes["service"] == "adyen"
    for name in ("service", "trace_id", "span_id", "correlation_id"):
        assert name not in plain.attributes  # tracekit's own fields are the record's already
    assert "span_id" not in paying.attributes


def test_a_correlation_id_given_with_extra_is_exported_only_when_valid(tmp_path: Path) -> None:
    """Outside a request, ``extra={"correlation.id": ...}`` (a job tagging its lines with the
    ID a message brought) was exported as it came, as tracekit's own attribute: the store
    indexed a value with terminal escapes as a request's correlation ID, past the validation
    every other way in applies. A valid one is kept; any other is left out,
    as a ``correlation_id`` given with ``extra=`` is on the JSON lines."""
    run_python(
        """
        import logging, tracekit
        tracekit.init("jobs", exporter="store", metrics_port=0)
        log = logging.getLogger("jobs")
        log.warning("tagged", extra={"correlation.id": "job-7"})
        log.warning("forged", extra={"correlation.id": "job-8\x1b]0;owned\x07"})
        tracekit.shutdown()
        """,
        tmp_path,
    )
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        rows = conn.execute(
            "SELECT l.body, c.value FROM logs l LEFT JOIN correlations c"
            " ON c.id = l.correlation_ref ORDER BY l.time_ns, l.id"
        ).fetchall()
    assert rows == [("tagged", "job-7"), ("forged", None)]


MULTIPROCESS_RECIPE = """
import logging, logging.handlers, multiprocessing, tracekit

def listener(queue):
    while (record := queue.get()) is not None:
        logging.getLogger(record.name).handle(record)

def worker(queue):
    logging.getLogger().handlers = [logging.handlers.QueueHandler(queue)]
    tracekit.correlation.set_correlation_id("job-9")
    logging.getLogger("shop.worker").warning("worker line")

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    tracekit.init("shop", exporter="store", metrics_port=0)
    queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=f, args=(queue,)) for f in (listener, worker)]
    for process in processes:
        process.start()
    processes[1].join()
    queue.put(None)
    processes[0].join()
    tracekit.shutdown()
"""


def test_records_handed_to_a_listener_process_are_exported_once(tmp_path: Path) -> None:
    """The stdlib's "logging to a single file from multiple processes" recipe: tracekit exported
    each record in the worker that logged it, and again in the listener that handles it."""
    result = run_python(MULTIPROCESS_RECIPE, tmp_path)
    assert result.stderr == "worker line\n"  # the listener's own output, as without tracekit
    with Store(tmp_path / "t.db") as store:
        exported = store.logs_by_correlation_id("job-9")
    assert [(r.body, r.attributes["code.function.name"]) for r in exported] == [
        ("worker line", "worker")
    ]


SOCKET_RECIPE = """
import logging, logging.handlers, multiprocessing, os, pickle, socket, struct, tracekit

def sender(port, process_id):
    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    handler.addFilter(lambda record: setattr(record, "process", process_id) or True)
    logging.getLogger().handlers = [handler]
    tracekit.correlation.set_correlation_id("job-10")
    logging.getLogger("shop.sender").warning("sent line")
    handler.close()

if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    tracekit.init("shop", exporter="store", metrics_port=0)
    server = socket.create_server(("127.0.0.1", 0))
    sender_id = os.getpid() if SAME_ID else os.getpid() + 1
    process = multiprocessing.Process(target=sender, args=(server.getsockname()[1], sender_id))
    process.start()
    connection, _ = server.accept()
    with connection, connection.makefile("rb") as stream:  # the logging cookbook's receiver
        while len(head := stream.read(4)) == 4:
            data = pickle.loads(stream.read(struct.unpack(">L", head)[0]))
            record = logging.makeLogRecord(data)
            logging.getLogger(record.name).handle(record)
    process.join()
    tracekit.shutdown()
"""


@pytest.mark.parametrize("same_id", [True, False], ids=["listener's-id", "another-id"])
def test_records_sent_to_a_socket_listener_are_exported_once(same_id: bool, tmp_path: Path) -> None:
    """The stdlib's ``SocketHandler`` recipe between containers, where the sender's process
    and the listener's often have the same ID (1, the container's first process): the
    listener took the record for one of its own and exported it again, so ``tracekit trace``
    showed the line twice."""
    run_python(f"SAME_ID = {same_id}" + SOCKET_RECIPE, tmp_path)
    with Store(tmp_path / "t.db") as store:
        exported = store.logs_by_correlation_id("job-10")
    assert [(r.body, r.attributes["code.function.name"]) for r in exported] == [
        ("sent line", "sender")
    ]


HOST_PIPELINE = """
import logging, warnings
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
exported = InMemoryLogRecordExporter()
host = LoggerProvider()
host.add_log_record_processor(SimpleLogRecordProcessor(exported))
set_logger_provider(host)
"""


def test_a_host_log_pipeline_with_its_own_bridge_exports_each_record_once(tmp_path) -> None:
    """The host configured the SDK's logs and bridges stdlib logging itself (what
    ``opentelemetry-instrument`` does with logging auto-instrumentation on): tracekit stamps the
    records and leaves their export to the host, as it does with a host tracer provider."""
    result = run_python(
        HOST_PIPELINE
        + """
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's handler, as hosts use it
    logging.root.addHandler(LoggingHandler(logger_provider=host))
import tracekit
tracekit.init("shop", exporter="store", metrics_port=0)
token = tracekit.correlation.set_correlation_id("req-host-1")
logging.getLogger("shop").warning("charged")
tracekit.correlation.reset_correlation_id(token)
tracekit.shutdown()
records = [r.log_record for r in exported.get_finished_logs()]
print([r.body for r in records], records[0].attributes.get("correlation_id"))
""",
        tmp_path,
    )
    assert result.stdout.splitlines()[0] == "['charged'] req-host-1"
    assert stored_bodies(tmp_path) == []


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_bridge_with_no_pipeline_behind_it_leaves_the_export_to_tracekit(
    when: str, tmp_path: Path
) -> None:
    """OpenTelemetry's logging instrumentation adds its ``LoggingHandler`` to the root as it
    instruments (to put ``otelTraceID`` in a format, say), on the global provider, which is
    none where the application set none: tracekit took it for the host's export and exported
    nothing, so ``tracekit trace`` showed none of the request's lines."""
    instrument = "LoggingInstrumentor().instrument(set_logging_format=True)\n"
    init = 'tracekit.init("shop", exporter="store", metrics_port=0)\n'
    result = run_python(
        "import logging, tracekit\n"
        "from opentelemetry.instrumentation.logging import LoggingInstrumentor\n"
        + (instrument + init if when == "before" else init + instrument)
        + """
tracekit.correlation.set_correlation_id("req-contrib-1")
logging.getLogger("shop").warning("charged")
tracekit.shutdown()
""",
        tmp_path,
    )
    assert "charged" in result.stderr  # the instrumentation's own format still prints it
    assert stored_bodies(tmp_path) == ["charged"]


def test_a_record_through_tracekits_own_export_handler_is_exported_once(tmp_path) -> None:
    """docs/logs.md offers ``LogExportHandler`` as a handler to attach yourself: on the root,
    beside ``init``'s export, every record reached the provider twice."""
    result = run_python(
        HOST_PIPELINE
        + """
import tracekit
from tracekit.logs import LogExportHandler
logging.root.addHandler(LogExportHandler(host, owned=False))
tracekit.init("shop", exporter="store", metrics_port=0)
logging.getLogger("shop").warning("charged")
tracekit.shutdown()
print([r.log_record.body for r in exported.get_finished_logs()])
""",
        tmp_path,
    )
    assert result.stdout.splitlines()[0] == "['charged']"
    assert stored_bodies(tmp_path) == []


def test_a_host_log_provider_without_a_bridge_gets_the_records(tmp_path) -> None:
    """The host set a LoggerProvider but bridges nothing: tracekit's bridge feeds the host's
    pipeline (no second exporter of its own), and ``shutdown()`` leaves the host's provider open."""
    result = run_python(
        HOST_PIPELINE
        + """
import tracekit
tracekit.init("shop", exporter="store", metrics_port=0)
token = tracekit.correlation.set_correlation_id("req-host-2")
logging.getLogger("shop").warning("charged")
tracekit.correlation.reset_correlation_id(token)
tracekit.shutdown()
logging.getLogger("shop").warning("after shutdown")  # not bridged any more
host.get_logger("app").emit(body="the host still exports")
records = [r.log_record for r in exported.get_finished_logs()]
print([r.body for r in records], records[0].attributes.get("correlation.id"))
""",
        tmp_path,
    )
    out = result.stdout.splitlines()[0]
    assert out == "['charged', 'the host still exports'] req-host-2"
    assert stored_bodies(tmp_path) == []


@pytest.mark.parametrize(
    "signature",
    [
        "*args, **kwargs",
        "name, level, fn, lno, msg, args, exc_info, func, sinfo",
        # one that reads its arguments first (masking secrets): args is always a tuple
        "name, level, fn, lno, msg, args, *rest",
    ],
)
def test_a_factory_wrapped_after_init_survives_shutdown_and_a_second_init(
    tmp_path: Path, signature: str
) -> None:
    """The usual wrapper (``old = getLogRecordFactory(); set(lambda ...: old(...))``) put in
    after ``init``: a second ``init`` took it for the factory to wrap, each called the other,
    and every log call raised RecursionError."""
    call = {
        "*args, **kwargs": "*args, **kwargs",
        "name, level, fn, lno, msg, args, exc_info, func, sinfo": (
            "name, level, fn, lno, msg, args, exc_info, func, sinfo"
        ),
        "name, level, fn, lno, msg, args, *rest": (
            "name, level, fn, lno, msg, tuple(str(a) for a in args), *rest"
        ),
    }[signature]
    result = run_python(
        f"""
        import logging, tracekit
        logging.basicConfig(format="%(levelname)s [%(correlation_id)s] %(host)s %(message)s")
        tracekit.init("shop", exporter="store", metrics_port=0)
        old = logging.getLogRecordFactory()
        def with_host({signature}):
            record = old({call})
            record.host = "web-1"
            return record
        logging.setLogRecordFactory(with_host)
        tracekit.shutdown()
        tracekit.init("shop", exporter="store", metrics_port=0)
        tracekit.correlation.set_correlation_id("order-7")
        logging.getLogger("shop").warning("after a second init")
        tracekit.shutdown()
        """,
        tmp_path,
    )
    assert result.stderr == "WARNING [order-7] web-1 after a second init\n"


def test_the_documented_format_keeps_working_after_shutdown_and_at_exit(tmp_path) -> None:
    """A format naming tracekit's fields (docs/logs.md): after ``shutdown``, and at exit while
    the last batch goes to an unreachable collector (the exporter's own messages), records
    lacked the fields and every one became a '--- Logging error ---' with a traceback."""
    endpoint = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = run_python(
        """
        import atexit, logging, tracekit
        logging.basicConfig(
            format="%(levelname)s [%(correlation_id)s %(trace_id)s] %(name)s: %(message)s"
        )
        atexit.register(lambda: logging.getLogger("shop").warning("exit hook"))
        tracekit.init("shop", metrics_port=0)
        logging.getLogger("shop").warning("working")
        """,
        tmp_path,
        TRACEKIT_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_TIMEOUT="1",
    )
    assert "Logging error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert "WARNING [- -] shop: working" in lines and "WARNING [- -] shop: exit hook" in lines
    assert any(
        line.startswith("WARNING [- -] tracekit: tracekit: could not export") for line in lines
    )
