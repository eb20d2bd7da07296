"""Spans tracekit did not open, still open as SIGTERM ends the process: the application's own
(``tracer.start_as_current_span``) and a contrib instrumentation's. tracekit records them,
failed, with its own, so the path shows where the handler was when the process went, and the
log lines written inside them belong to a span that is stored.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from stopping import Service

BIN = Path(sys.executable).parent

OWN_SPAN_IN_A_HANDLER = """
    import logging, time
    import tracekit
    from opentelemetry import trace
    from tracekit.messaging import consume

    tracekit.init("worker")
    tracer = trace.get_tracer("worker")
    with consume({"X-Correlation-ID": "job-1"}, system="stdin", destination="jobs"):
        with tracer.start_as_current_span("charge card"):
            logging.getLogger("worker").warning("charging")
            print("ready", flush=True)
            time.sleep(60)
"""

OWN_SPANS_ONLY = """
    import logging, time
    import tracekit
    from opentelemetry import trace
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")
    tracer = trace.get_tracer("worker")
    set_correlation_id("job-1")
    with tracer.start_as_current_span("nightly export"):
        with tracer.start_as_current_span("charge card"):
            logging.getLogger("worker").warning("charging")
            print("ready", flush=True)
            time.sleep(60)
"""


def _path(service: Service, query: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(BIN / "tracekit"), "trace", query, "--store", str(service.store), "--format", "json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    path: dict[str, Any] = json.loads(result.stdout)
    return path


@pytest.mark.parametrize(
    ("script", "names"),
    [
        (OWN_SPAN_IN_A_HANDLER, ["process jobs", "charge card"]),
        (OWN_SPANS_ONLY, ["nightly export", "charge card"]),
    ],
    ids=["inside-tracekits-consumer-span", "the-applications-spans-alone"],
)
def test_the_applications_own_open_spans_are_recorded_at_sigterm(
    service: Service, script: str, names: list[str]
) -> None:
    service.write("worker.py", script)
    service.start("worker.py")
    service.wait_output("ready")
    assert service.terminate() == -signal.SIGTERM, service.output()

    path = _path(service, "job-1")
    assert [span["name"] for span in path["spans"]] == names
    charge = path["spans"][1]
    assert charge["status"] == "ERROR"
    assert charge["status_message"] == (
        "HandlerInterrupted: SIGTERM ended the process before the handler returned"
    )
    assert [(log["span_id"], log["body"]) for log in path["logs"]] == [
        (charge["span_id"], "charging")
    ]
    assert "Traceback" not in service.output()


CONTRIB_CALL_IN_A_HANDLER = """
    import socket, threading
    import requests, tracekit
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from tracekit.messaging import consume

    tracekit.init("worker", disabled_instrumentations=["requests", "urllib3"])
    RequestsInstrumentor().instrument()
    silent = socket.create_server(("127.0.0.1", 0))  # takes the request, never answers

    def take_and_hold():
        held = silent.accept()
        print("request taken", flush=True)
        threading.Event().wait()

    threading.Thread(target=take_and_hold, daemon=True).start()
    with consume({"X-Correlation-ID": "job-1"}, system="stdin", destination="jobs"):
        requests.get(f"http://127.0.0.1:{silent.getsockname()[1]}/quote")
"""


def test_a_contrib_instrumentations_open_call_is_recorded_at_sigterm(service: Service) -> None:
    pytest.importorskip("opentelemetry.instrumentation.requests")
    service.write("worker.py", CONTRIB_CALL_IN_A_HANDLER)
    service.start("worker.py")
    service.wait_output("request taken")
    assert service.terminate() == -signal.SIGTERM, service.output()

    spans = _path(service, "job-1")["spans"]
    assert [(s["name"], s["kind"], s["status"]) for s in spans] == [
        ("process jobs", "CONSUMER", "ERROR"),
        ("GET", "CLIENT", "ERROR"),
    ]
    assert spans[1]["status_message"] == (
        "HandlerInterrupted: SIGTERM ended the process before the call returned"
    )


HOLDING_A_SPANS_LOCK = """
    import tracekit
    from lazy_rows import LazyRows
    from opentelemetry import trace
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")
    tracer = trace.get_tracer("worker")
    set_correlation_id("job-1")
    with tracer.start_as_current_span("done before"):
        pass
    with tracer.start_as_current_span("export rows") as span:
        span.set_attribute("rows", LazyRows())  # inside the span's lock
"""


def test_sigterm_inside_a_spans_lock_still_flushes_at_once(service: Service) -> None:
    """SIGTERM's handler runs in the thread it interrupted, here inside ``set_attribute`` with
    the span's lock held (a tight loop of ``set_attribute`` got there in 3 runs of 5). Ending
    that span waited for the lock, and the handler for the ending: the stop took the whole
    export timeout and flushed nothing, not even the spans that had ended long before."""
    service.write("worker.py", HOLDING_A_SPANS_LOCK)
    service.start("worker.py", OTEL_BSP_EXPORT_TIMEOUT="20000")
    service.wait_output("reading")
    started = time.monotonic()
    assert service.terminate() == -signal.SIGTERM, service.output()

    assert time.monotonic() - started < 10
    assert [span["name"] for span in _path(service, "job-1")["spans"]] == ["done before"]


HOLDING_ONE_OF_MANY_SPANS_LOCKS = """
    import tracekit
    from lazy_rows import LazyRows
    from opentelemetry import trace
    from tracekit.messaging import consume

    tracekit.init("worker")
    tracer = trace.get_tracer("worker")
    with consume({"X-Correlation-ID": "job-1"}, system="stdin", destination="jobs"):
        with tracer.start_as_current_span("export") as export:
            parts = [tracer.start_span(f"part {n}") for n in range(30)]  # each under way
            export.set_attribute("rows", LazyRows())  # inside the span's lock
"""


def test_sigterm_inside_a_spans_lock_still_records_the_other_open_spans(
    service: Service,
) -> None:
    """The span whose lock the interrupted handler holds cannot be ended; the others still
    open (the message's CONSUMER span, the hop itself) are recorded all the same. Ending them
    stopped at that span, whichever came after it in no set order: the hop was lost in 4 runs
    of 6 with a handler's span or two."""
    service.write("worker.py", HOLDING_ONE_OF_MANY_SPANS_LOCKS)
    service.start("worker.py", OTEL_BSP_EXPORT_TIMEOUT="20000")
    service.wait_output("reading")
    assert service.terminate() == -signal.SIGTERM, service.output()

    spans = _path(service, "job-1")["spans"]
    expected = {"process jobs", *(f"part {n}" for n in range(30))}
    assert {span["name"] for span in spans} == expected
    for span in spans:
        assert span["status"] == "ERROR"
        assert span["status_message"] == (
            "HandlerInterrupted: SIGTERM ended the process before the handler returned"
        )


DAEMON_THREAD_HOLDING_A_SPANS_LOCK = """
    import threading, time
    import tracekit
    from lazy_rows import LazyRows
    from opentelemetry import trace
    from tracekit.correlation import set_correlation_id

    tracekit.init("worker")
    tracer = trace.get_tracer("worker")
    rows = LazyRows()

    def export():
        set_correlation_id("job-1")
        with tracer.start_as_current_span("done before"):
            pass
        with tracer.start_as_current_span("export rows") as span:
            span.set_attribute("rows", rows)  # inside the span's lock

    threading.Thread(target=export, daemon=True).start()
    rows.reading.wait(60)  # then the script ends, its daemon thread inside the span's lock
    print(f"ended at {time.monotonic()}", flush=True)
"""


def test_a_daemon_thread_inside_a_spans_lock_does_not_hold_the_exit(service: Service) -> None:
    """At exit the spans a daemon thread left open are recorded; the one whose lock that thread
    holds (parked in ``set_attribute``) cannot be. Ended on the main thread, the exit waited for
    that lock as long as the thread held it: for ever for a thread that never comes back."""
    service.write("worker.py", DAEMON_THREAD_HOLDING_A_SPANS_LOCK)
    service.start("worker.py")
    assert service.process is not None

    assert service.process.wait(30) == 0, service.output()
    assert service.seconds_since("ended at ") < 15  # the exit, start-up and work left out
    assert [span["name"] for span in _path(service, "job-1")["spans"]] == ["done before"]
    assert "Traceback" not in service.output()


STEPS_ENDING_DURING_THE_FLUSH = """
    import logging, threading, time
    import tracekit
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor
    from tracekit.correlation import set_correlation_id

    logging.basicConfig(format="app log: %(name)s %(message)s")

    class SlowToFlush(SpanProcessor):  # a host's own exporter, slow to flush: 1 s
        def force_flush(self, timeout_millis=30000):
            time.sleep(1)
            return True

    tracekit.init("worker")
    trace.get_tracer_provider().add_span_processor(SlowToFlush())
    tracer = trace.get_tracer("worker")

    def work():
        set_correlation_id("job-1")
        with tracer.start_as_current_span("nightly export"):
            print("ready", flush=True)
            while True:
                with tracer.start_as_current_span("step"):
                    time.sleep(0.05)

    threading.Thread(target=work).start()
"""


def test_a_span_the_application_ends_during_the_sigterm_flush_is_recorded_once_quietly(
    service: Service,
) -> None:
    """SIGTERM's flush runs while the application's other threads go on: a span tracekit had
    recorded as interrupted was then ended by its own code too, and the SDK's warning
    "Calling end() on an ended span." reached the application's log."""
    service.write("worker.py", STEPS_ENDING_DURING_THE_FLUSH)
    service.start("worker.py")
    service.wait_output("ready")
    time.sleep(0.2)
    assert service.terminate() == -signal.SIGTERM, service.output()

    assert "ended span" not in service.output()
    spans = _path(service, "job-1")["spans"]
    assert len({span["span_id"] for span in spans}) == len(spans)
    interrupted = [span["name"] for span in spans if span["status"] == "ERROR"]
    assert interrupted == ["nightly export", "step"]
