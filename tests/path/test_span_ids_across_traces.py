"""A request across two traces whose span ids repeat: a worker whose own trace numbers its
spans as the caller's trace does (an SDK seeded alike, a hand-rolled id generator). Span ids are
unique only within a trace, and ``trace --format json`` named hops, errors, logs and the critical
path by span id alone: the hop read ``0000000000000002 -> 0000000000000001`` and the critical path
``[...01, ...02, ...01, ...02]``, each id standing for a span of either trace. Each now carries
its trace id too (``from_trace_id``/``to_trace_id``, ``trace_id``), and each span says whether it
is on the critical path.

Spans go through the OpenTelemetry SDK's OTLP/HTTP exporter into a real receiver on loopback
(what ``tracekit collector`` runs) and its store; ``trace`` reads them there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, Status, StatusCode

from tracekit.path import load_schema
from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store
from tracekit_cli.main import cli

WEB_TRACE = f"{0xAAAA << 64:032x}"
WORKER_TRACE = f"{0xBBBB << 64:032x}"
FIRST, SECOND = "0000000000000001", "0000000000000002"
CID = {"correlation.id": "cid-numbered"}
QUEUE = {**CID, "messaging.system": "rabbitmq", "messaging.destination.name": "jobs"}


class Numbered(IdGenerator):
    """Span ids 1, 2, 3... in one trace: every process using it repeats the others' ids."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id, self.last = int(trace_id, 16), 0

    def generate_span_id(self) -> int:
        self.last += 1
        return self.last

    def generate_trace_id(self) -> int:
        return self.trace_id


@pytest.fixture
def endpoint_and_store(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "collector.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0)).start()
    yield receiver.endpoint, path
    receiver.stop()


def tracer(endpoint: str, service: str, trace_id: str) -> trace.Tracer:
    resource = Resource.create({"service.name": service})
    provider = TracerProvider(resource=resource, id_generator=Numbered(trace_id))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def send_job(endpoint: str) -> None:
    """web publishes a job (its trace: spans 1, 2); the worker takes it in a trace of its own
    linked to the publish (spans 1, 2 again), and its second span fails."""
    web, worker = tracer(endpoint, "web", WEB_TRACE), tracer(endpoint, "worker", WORKER_TRACE)
    producer, consumer = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER
    with (
        web.start_as_current_span("POST /jobs", kind=trace.SpanKind.SERVER, attributes=CID),
        web.start_as_current_span("publish jobs", kind=producer, attributes=QUEUE) as sent,
    ):
        published = sent.get_span_context()
    alone = trace.set_span_in_context(trace.INVALID_SPAN)
    with (
        worker.start_as_current_span("process jobs", alone, consumer, QUEUE, [Link(published)]),
        worker.start_as_current_span("write ledger", attributes=CID) as failing,
    ):
        failing.set_status(Status(StatusCode.ERROR, "duplicate entry"))


def test_every_span_reference_names_its_trace(endpoint_and_store: tuple[str, Path]) -> None:
    endpoint, store = endpoint_and_store
    send_job(endpoint)

    result = CliRunner().invoke(cli, ["trace", "cid-numbered", "--store", str(store),
                                      "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    jsonschema.validate(document, load_schema())
    assert [(s["trace_id"], s["span_id"], s["name"]) for s in document["spans"]] == [
        (WEB_TRACE, FIRST, "POST /jobs"), (WEB_TRACE, SECOND, "publish jobs"),
        (WORKER_TRACE, FIRST, "process jobs"), (WORKER_TRACE, SECOND, "write ledger"),
    ]  # fmt: skip
    [hop] = document["hops"]
    assert (hop["from_trace_id"], hop["from_span_id"]) == (WEB_TRACE, SECOND)
    assert (hop["to_trace_id"], hop["to_span_id"]) == (WORKER_TRACE, FIRST)
    assert [(e["trace_id"], e["span_id"]) for e in document["errors"]] == [(WORKER_TRACE, SECOND)]
    on_path = [(s["trace_id"], s["span_id"]) for s in document["spans"] if s["on_critical_path"]]
    assert len(on_path) == len(document["critical_path"]) == 4
