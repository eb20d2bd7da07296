"""``OTEL_EXPORTER_OTLP_PROTOCOL`` (and its per-signal forms), as the OpenTelemetry SDKs read it:
``grpc`` sends spans and logs over OTLP/gRPC, here to a real ``tracekit`` receiver's gRPC port in
this process; a protocol the Python SDK cannot send stops ``init`` with one line naming the
variable. Before, the variable was ignored: OTLP/HTTP went to the gRPC port and every span was
dropped, with a warning to start a collector that was running."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conditions import wait_for

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.records import SpanRecord
from tracekit.store import Store

SCRIPT = """
    import logging
    import tracekit
    from opentelemetry import trace
    tracekit.init("orders")
    with trace.get_tracer("t").start_as_current_span("charge"):
        logging.getLogger("orders").warning("card declined")
    tracekit.shutdown()
"""


def _run(
    env: dict[str, str], before: str = "", script: str = SCRIPT
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEKIT_"))}
    return subprocess.run(
        [sys.executable, "-c", before + textwrap.dedent(script)],
        env={**clean, "TRACEKIT_METRICS_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def grpc_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    store = tmp_path / "tracekit.db"
    receiver = Receiver(Store(store), ReceiverConfig(port=0, grpc_port=0)).start()
    yield receiver, store
    receiver.stop()


@pytest.mark.parametrize(
    "variables",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc"},
    ],
    ids=["all signals", "per signal"],
)
def test_grpc_sends_spans_and_logs_to_the_grpc_port(
    variables: dict[str, str], grpc_receiver: tuple[Receiver, Path]
) -> None:
    receiver, store = grpc_receiver
    assert receiver.grpc_address is not None
    host, port = receiver.grpc_address
    result = _run({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{host}:{port}", **variables})

    assert result.returncode == 0, result.stderr
    assert "could not export" not in result.stderr

    def stored() -> tuple[list[str], list[str]] | None:
        with Store(store) as source:
            spans = source.spans_since(0)
            logs = source.logs_by_trace_ids({s.trace_id for s in spans})
        return ([s.name for s in spans], [str(r.body) for r in logs]) if spans and logs else None

    assert wait_for(stored, 10, "the span and the log") == (["charge"], ["card declined"])


@pytest.mark.parametrize(
    ("name", "value"),
    [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp")],
)
def test_a_protocol_the_sdk_cannot_send_stops_init_naming_the_variable(
    name: str, value: str
) -> None:
    result = _run({name: value})

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tracekit.config.ConfigError: " + name)
    assert "grpc" in last and "http/protobuf" in last


def test_grpc_without_its_exporter_installed_stops_init_saying_what_to_install() -> None:
    """The package is hidden from the child's imports, as on a machine without the extra."""
    hidden = "import sys; sys.modules['opentelemetry.exporter.otlp.proto.grpc'] = None\n"
    result = _run({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, before=hidden)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "tracekit.config.ConfigError: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs OpenTelemetry's"
        " gRPC exporter: pip install 'tracekit[grpc]'"
    )


# A lone surrogate (JSON's "\ud800" in a request body that the application names a span or an
# event after) cannot be encoded by OTLP's protobuf. Over OTLP/HTTP the SDK's exporter then
# dropped the whole batch, every other request's spans with it, and tracekit warned that the
# collector was unreachable; over OTLP/gRPC the batch processor logged a traceback and dropped it.
LONE_SURROGATE = """
    import json, tracekit
    from opentelemetry import trace
    tracekit.init("shop")
    tracer = trace.get_tracer("shop")
    name = json.loads('"\\\\ud800x"')
    tracekit.correlation.set_correlation_id("order-9")
    tracer.start_span("before").end()
    with tracer.start_as_current_span(f"charge {name}") as span:
        span.add_event(f"retry {name}")
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"declined {name}"))
    tracer.start_span("after").end()
    tracekit.shutdown()
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_span_with_a_lone_surrogate_loses_neither_itself_nor_its_batch(
    grpc_receiver: tuple[Receiver, Path], protocol: str
) -> None:
    spans, stderr = _order_9_spans(grpc_receiver, protocol, LONE_SURROGATE)
    assert stderr == ""
    assert [s.name for s in spans] == ["after", "before", "charge \ufffdx"]
    charge = next(s for s in spans if s.name.startswith("charge"))
    assert [e.name for e in charge.events] == ["retry \ufffdx"]
    assert (charge.status, charge.status_message) == ("ERROR", "declined \ufffdx")


# Spans whose attributes the application filled with large values (a request body, a query's
# result): the SDK batches spans by count, so one request of 20 spans of 1 MB passed the
# collector's limit (tracekit's 16 MiB body over HTTP, gRPC's largest message) and was refused
# whole: ordinary spans batched with them were lost too, with a warning that the collector was
# unreachable.
LARGE_SPANS = """
    import tracekit
    from opentelemetry import trace
    tracekit.init("shop")
    tracer = trace.get_tracer("shop")
    tracekit.correlation.set_correlation_id("order-9")
    tracer.start_span("before").end()
    for n in range(20):
        with tracer.start_as_current_span(f"export {n}") as span:
            span.set_attribute("report", "x" * 1_000_000)
    tracer.start_span("after").end()
    tracekit.shutdown()
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_batch_of_large_spans_reaches_the_collector_whole(
    grpc_receiver: tuple[Receiver, Path], protocol: str
) -> None:
    spans, stderr = _order_9_spans(grpc_receiver, protocol, LARGE_SPANS)
    assert "could not export" not in stderr
    expected = ["before", "after", *(f"export {n}" for n in range(20))]
    assert [s.name for s in spans] == sorted(expected)


# One span larger than the collector takes (a 20 MB attribute): it is refused, and the spans
# sent after it in the batch were dropped with it.
ONE_SPAN_TOO_LARGE = """
    import tracekit
    from opentelemetry import trace
    tracekit.init("shop")
    tracer = trace.get_tracer("shop")
    tracekit.correlation.set_correlation_id("order-9")
    tracer.start_span("before").end()
    with tracer.start_as_current_span("export") as span:
        span.set_attribute("report", "x" * 20_000_000)
    tracer.start_span("after").end()
    tracekit.shutdown()
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_span_too_large_for_the_collector_loses_no_other_span(
    grpc_receiver: tuple[Receiver, Path], protocol: str
) -> None:
    spans, _ = _order_9_spans(grpc_receiver, protocol, ONE_SPAN_TOO_LARGE)
    assert [s.name for s in spans] == ["after", "before"]


def _order_9_spans(
    grpc_receiver: tuple[Receiver, Path], protocol: str, script: str
) -> tuple[list[SpanRecord], str]:
    """The spans of ``order-9`` the collector stored once ``script`` exported over ``protocol``
    and ended, by name; and the script's stderr."""
    receiver, store = grpc_receiver
    result = _run(_exporting_to(receiver, protocol), script=script)
    assert result.returncode == 0, result.stderr
    receiver.stop()
    with Store(store) as source:
        spans = source.spans_by_correlation_id("order-9")
    return sorted(spans, key=lambda s: s.name), result.stderr


# The same text in attributes: the SDK's encoder dropped each such attribute (the span kept)
# and printed its error with a traceback on the application's stderr.
LONE_SURROGATE_ATTRIBUTES = """
    import json, tracekit
    from opentelemetry import trace
    tracekit.init("shop")
    name = json.loads('"\\\\ud800x"')
    tracekit.correlation.set_correlation_id("order-9")
    with trace.get_tracer("shop").start_as_current_span("charge") as span:
        span.set_attribute("customer", name)
        span.set_attribute("tags", ["vip", name])
        span.add_event("retry", {"reason": name})
    tracekit.shutdown()
"""


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_attribute_with_a_lone_surrogate_is_kept_with_a_replacement_character(
    grpc_receiver: tuple[Receiver, Path], protocol: str
) -> None:
    _check_lone_surrogate_attributes_kept(grpc_receiver, protocol, LONE_SURROGATE_ATTRIBUTES)


def _check_lone_surrogate_attributes_kept(
    grpc_receiver: tuple[Receiver, Path], protocol: str, script: str
) -> None:
    """``script`` (``LONE_SURROGATE_ATTRIBUTES`` or a form of it) printed nothing, and its
    span's attributes and event attribute are stored with a replacement character."""
    (charge,), stderr = _order_9_spans(grpc_receiver, protocol, script)
    assert stderr == ""
    assert charge.attributes["customer"] == "\ufffdx"
    assert charge.attributes["tags"] == ["vip", "\ufffdx"]
    assert [(e.name, e.attributes) for e in charge.events] == [("retry", {"reason": "\ufffdx"})]


def _exporting_to(receiver: Receiver, protocol: str) -> dict[str, str]:
    """The variables that send a service's telemetry to ``receiver`` over ``protocol``."""
    assert receiver.grpc_address is not None
    host, port = receiver.grpc_address
    endpoint = f"http://{host}:{port}" if protocol == "grpc" else receiver.endpoint
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}


def _stored_names(store: Path) -> tuple[list[str], list[str]]:
    with Store(store) as source:
        spans = source.spans_since(0)
        logs = source.logs_by_trace_ids({s.trace_id for s in spans})
    return [s.name for s in spans], [str(r.body) for r in logs]


# OTEL_EXPORTER_OTLP_TIMEOUT and OTEL_EXPORTER_OTLP_COMPRESSION (and their per-signal forms) as
# a deployment may set them. Over gRPC the SDK's exporter raised out of init on a value it could
# not read (a traceback, the application down), "none" compression (the specification's own
# value) included; a timeout of zero or less, over either protocol, failed every export, with
# tracekit's warning blaming an unreachable collector.
@pytest.mark.parametrize(
    ("protocol", "name", "value", "warning"),
    [
        ("grpc", "OTEL_EXPORTER_OTLP_TIMEOUT", "abc", "is not a number of seconds above 0"),
        ("grpc", "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "-1", "is not a number of seconds above 0"),
        ("http/protobuf", "OTEL_EXPORTER_OTLP_TIMEOUT", "0", "is not a number of seconds above 0"),
        # "never give up": every export failed, over HTTP on 'timestamp out of range for
        # platform time_t' (past the ~292 years a thread waits), over gRPC on a deadline past
        # 2262 that expired at once; a timeout of a year is used instead
        ("http/protobuf", "OTEL_EXPORTER_OTLP_TIMEOUT", "99999999999", None),
        ("grpc", "OTEL_EXPORTER_OTLP_TIMEOUT", "1e300", None),
        ("grpc", "OTEL_EXPORTER_OTLP_COMPRESSION", "none", None),
        ("grpc", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "GZIP", None),
        ("grpc", "OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "is not gzip, deflate or none"),
        # empty, as a compose file's ${OTEL_EXPORTER_OTLP_TIMEOUT} leaves an unset one: unset
        ("grpc", "OTEL_EXPORTER_OTLP_TIMEOUT", "", None),
        ("grpc", "OTEL_EXPORTER_OTLP_COMPRESSION", "", None),
        ("grpc", "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "", None),
    ],
)
def test_an_exporter_setting_the_sdk_cannot_use_is_warned_of_and_export_goes_on(
    grpc_receiver: tuple[Receiver, Path],
    protocol: str,
    name: str,
    value: str,
    warning: str | None,
) -> None:
    receiver, store = grpc_receiver
    variables = _exporting_to(receiver, protocol)
    result = _run({**variables, name: value})
    assert result.returncode == 0, result.stderr
    receiver.stop()
    assert _stored_names(store) == (["charge"], ["card declined"])
    used = "10 s" if warning and "seconds" in warning else "none"
    warned = [] if warning is None else [f"tracekit: {name}={value!r} {warning}; using {used}"]
    assert result.stderr.splitlines() == [*warned, "card declined"]  # the script's own line


def test_a_per_signal_grpc_timeout_the_sdk_cannot_read_stops_init_naming_it() -> None:
    """OpenTelemetry's gRPC exporter reads ``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`` itself, and
    raises on a value that is not a number, whatever it is given: the one line names it."""
    variables = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "5s"}
    result = _run(variables)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "tracekit.config.ConfigError: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: '5s' is not a number"
        " of seconds, which OpenTelemetry's gRPC exporter needs"
    )


@pytest.mark.parametrize(
    "names",
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT",),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"),
    ],
    ids=["general", "per signal"],
)
def test_an_otlp_http_endpoint_with_spaces_around_it_is_sent_to(
    grpc_receiver: tuple[Receiver, Path], names: tuple[str, ...]
) -> None:
    """``OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 `` (a space an env file kept): the
    HTTP exporter failed every export on the host "collector:4318 ", under tracekit's warning
    naming the endpoint without the space, which looked right."""
    receiver, store = grpc_receiver
    paths = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "/v1/traces"}
    paths["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = "/v1/logs"
    result = _run({name: f" {receiver.endpoint}{paths.get(name, '')} " for name in names})
    assert result.returncode == 0, result.stderr
    receiver.stop()
    assert _stored_names(store) == (["charge"], ["card declined"])
    assert result.stderr.splitlines() == ["card declined"]  # the script's own line


def test_a_resource_attribute_not_in_utf8_is_kept_with_a_replacement_character(
    grpc_receiver: tuple[Receiver, Path],
) -> None:
    """``OTEL_RESOURCE_ATTRIBUTES`` holding a byte that is not UTF-8 (Python reads it as a lone
    surrogate): the SDK's encoder dropped the attribute from every batch of spans and logs,
    each time with a traceback on the application's stderr."""
    receiver, store = grpc_receiver
    variables = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_RESOURCE_ATTRIBUTES": "team=caf\udce9,region=eu",  # b"caf\xe9": Latin-1's é
    }
    result = _run(variables)
    assert result.returncode == 0, result.stderr
    receiver.stop()
    assert result.stderr.splitlines() == ["card declined"]  # the script's own line
    with Store(store) as source:
        (span,) = source.spans_since(0)
        (record,) = source.logs_by_trace_ids({span.trace_id})
    assert (span.resource["team"], span.resource["region"]) == ("caf\ufffd", "eu")
    assert record.resource["team"] == "caf\ufffd"


# A host whose logging configuration silences the SDK's encoder logger (``dictConfig``'s default
# ``disable_existing_loggers``, run after ``init``; OpenTelemetry's loggers set to CRITICAL):
# the encoder's error line, which told tracekit to send such a batch cleaned, was never made,
# and the attribute was dropped without a word.
SILENCED_ENCODER = {
    "dictConfig": "import logging.config; logging.config.dictConfig({'version': 1})",
    "critical": "import logging; logging.getLogger('opentelemetry').setLevel(logging.CRITICAL)",
}


@pytest.mark.parametrize("silenced", list(SILENCED_ENCODER))
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_attribute_with_a_lone_surrogate_is_kept_when_the_host_silences_the_encoder(
    grpc_receiver: tuple[Receiver, Path], protocol: str, silenced: str
) -> None:
    script = LONE_SURROGATE_ATTRIBUTES.replace(
        'tracekit.init("shop")\n', f'tracekit.init("shop")\n    {SILENCED_ENCODER[silenced]}\n'
    )
    _check_lone_surrogate_attributes_kept(grpc_receiver, protocol, script)


def test_an_otlp_http_endpoint_without_http_is_warned_of_and_left_out(
    grpc_receiver: tuple[Receiver, Path],
) -> None:
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector:4318/v1/traces`` (a gRPC endpoint's form)
    failed every export, under a warning that the collector was unreachable and to start one;
    it is left out, as if unset, in one warning, and the spans reach the general endpoint."""
    receiver, store = grpc_receiver
    host_port = receiver.endpoint.removeprefix("http://")
    result = _run(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{host_port}/v1/traces",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"user:secret@{host_port}/v1/logs?key=k",
        }
    )
    assert result.returncode == 0, result.stderr
    receiver.stop()
    assert _stored_names(store) == (["charge"], ["card declined"])
    assert result.stderr.splitlines() == [
        f"tracekit: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT='…@{host_port}/v1/logs?…' is not an"
        f" http:// or https:// URL (http://host:port); using {receiver.endpoint}/v1/logs",
        f"tracekit: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT='{host_port}/v1/traces' is not an"
        f" http:// or https:// URL (http://host:port); using {receiver.endpoint}/v1/traces",
        "card declined",  # the script's own line
    ]
