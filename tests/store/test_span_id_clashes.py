"""A client reusing a span id within one trace (a buggy or hostile SDK): the store keeps the first
span under that id and skips the other, as it skips a copy sent again. Before, nothing said so:
``trace`` showed 3 spans of the 4 sent, payments' "POST /pay" gone and its child "charge card"
drawn under orders' "POST /orders", which had ended before it began. The path now warns of the
id; a copy of a span exported again (a retried export) is no clash and warns of nothing.

Spans go through the OpenTelemetry SDK's OTLP/HTTP exporter into a real receiver on loopback
(what ``tracekit collector`` runs) and its store; ``trace`` reads them there.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Retention, Store
from tracekit_cli.main import cli

TRACE_ID = 0x0123456789ABCDEF0123456789ABCDEF
SHARED = "00000000000000b2"
CLASH = (
    f"span id {SHARED} of trace {TRACE_ID:032x} was sent for two different spans (a client "
    "reusing span ids): only the first is stored, and the children of the other show under it"
)
CID = {"correlation.id": "cid-reused"}


class ReusedIds(IdGenerator):
    """The ids of a client that hands out one span id twice (0xb2) in one trace."""

    def __init__(self) -> None:
        self.ids = iter([0xA1, 0xB2, 0xB2, 0xC3])

    def generate_span_id(self) -> int:
        return next(self.ids)

    def generate_trace_id(self) -> int:
        return TRACE_ID


class IdsOnce(ReusedIds):
    """The same trace, each span id once (0xb2 among them)."""

    def __init__(self) -> None:
        self.ids = iter([0xA1, 0xB2, 0xC3, 0xD4])


class OneTrace(RandomIdGenerator):
    """Random span ids in the one trace."""

    def generate_trace_id(self) -> int:
        return TRACE_ID


class SentTwice(OTLPSpanExporter):
    """An exporter whose every export is retried once after it went through (a lost reply)."""

    def export(self, spans: object) -> SpanExportResult:
        super().export(spans)  # type: ignore[arg-type]
        return super().export(spans)  # type: ignore[arg-type]


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "collector.db"
    receiver = Receiver(Store(path), ReceiverConfig(port=0)).start()
    yield receiver.endpoint, path
    receiver.stop()


def send_checkout(endpoint: str, exporter: type[OTLPSpanExporter], ids: IdGenerator) -> None:
    """gateway calls orders, then payments; payments' span charges a card below it."""
    providers = {}
    for name in ("gateway", "orders", "payments"):
        provider = TracerProvider(
            resource=Resource.create({"service.name": name}), id_generator=ids
        )
        sent = exporter(endpoint=f"{endpoint}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(sent))
        providers[name] = provider.get_tracer("test")
    gateway, orders, payments = (providers[n] for n in ("gateway", "orders", "payments"))
    server = trace.SpanKind.SERVER
    with gateway.start_as_current_span("GET /checkout", kind=server, attributes=CID):
        orders.start_span("POST /orders", kind=server, attributes=CID).end()
        with (
            payments.start_as_current_span("POST /pay", kind=server, attributes=CID),
            payments.start_as_current_span("charge card", attributes=CID),
        ):
            pass


def path_of(store: Path) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["trace", "cid-reused", "--store", str(store), "--format",
                                      "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def stored_spans(path: Path) -> list[str]:
    with Store(path) as store:
        return sorted(s.name for s in store.spans_by_trace_ids([f"{TRACE_ID:032x}"]))


def test_a_span_id_sent_for_two_spans_is_warned_of(collector: tuple[str, Path]) -> None:
    endpoint, path = collector
    send_checkout(endpoint, OTLPSpanExporter, ReusedIds())

    assert stored_spans(path) == ["GET /checkout", "POST /orders", "charge card"]
    assert path_of(path)["warnings"] == [CLASH]


def test_a_span_exported_again_is_no_clash(collector: tuple[str, Path]) -> None:
    endpoint, path = collector
    send_checkout(endpoint, SentTwice, OneTrace())
    assert stored_spans(path) == ["GET /checkout", "POST /orders", "POST /pay", "charge card"]
    assert path_of(path)["warnings"] == []


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_tracekit_from_before_the_table_still_opens_the_store(
    collector: tuple[str, Path],
) -> None:
    """A tracekit from before ``span_id_clashes`` (schema 2) refuses a store numbered above 2
    as newer. Numbered 3, a store noting a clash made its CLI say "store ... was written by a
    newer tracekit" (exit 2) and its services' store exporters drop every span
    (SchemaTooNewError), though the table is one it reads and writes beside unharmed."""
    endpoint, path = collector
    send_checkout(endpoint, OTLPSpanExporter, ReusedIds())
    assert path_of(path)["warnings"] == [CLASH]
    assert user_version(path) == 2


def test_retention_forgets_the_clashes_of_the_spans_it_deletes(
    collector: tuple[str, Path],
) -> None:
    """Retention deletes a trace's clash notes with its spans: the trace's number is handed out
    again, and a later trace sending that span id once must not be warned of it."""
    endpoint, path = collector
    send_checkout(endpoint, OTLPSpanExporter, ReusedIds())
    with Store(path) as store:
        store.apply_retention(Retention(max_age_ns=1))
        assert store.count_spans() == 0
    send_checkout(endpoint, OTLPSpanExporter, IdsOnce())
    assert len(stored_spans(path)) == 4
    assert path_of(path)["warnings"] == []
