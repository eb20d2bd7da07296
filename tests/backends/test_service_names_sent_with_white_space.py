"""``--service NAME`` over Tempo and Jaeger finds a service whose SDK sent its name with white
space around it, as the store does.

An SDK that read ``OTEL_SERVICE_NAME`` from a file sends ``"gateway\\n"``. The store keeps it as
``gateway`` and every command shows it so, over Tempo and Jaeger too; but both backends keep the
name as sent, and ``--service gateway`` asked them for ``gateway`` alone: "no requests match"
for a service the same command's output names. Real HTTP servers on loopback answer as Tempo and
Jaeger do (``tempo_fake``, ``jaeger_fake``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import checkout, incident

from tracekit.records import SpanRecord
from tracekit_cli.main import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "100"})
    return result.exit_code, result.stdout, result.stderr


def renamed(spans: list[SpanRecord], names: dict[str, str]) -> list[SpanRecord]:
    return [dataclasses.replace(s, service=names.get(s.service, s.service)) for s in spans]


def gateway_requests_over_tempo(url: str) -> list[tuple[str, str]]:
    """(correlation ID, root service) of what ``search --service gateway`` lists over Tempo,
    once it exited 0 with nothing on stderr."""
    code, out, err = run("search", "--since", "7d", "--tempo", url, "--service", "gateway",
                         "--format", "json")  # fmt: skip
    assert (code, err) == (0, "")
    return [(r["correlation_id"], r["root_service"]) for r in json.loads(out)["requests"]]


@pytest.fixture
def spans() -> list[SpanRecord]:
    """req-checkout-1 enters at 'gateway\\n'; req-incident-9 at ' my-gateway\\n', which holds
    the name typed but is another service."""
    return recent(
        renamed(checkout().spans, {"gateway": "gateway\n"})
        + renamed(incident().spans, {"web": " my-gateway\n"})
    )


@pytest.mark.parametrize("version", [(2, 9), (3, 0)])  # a regex found anywhere; anchored
def test_search_over_tempo_finds_the_root_service_sent_with_a_newline(
    serve: Any, spans: list[SpanRecord], version: tuple[int, int]
) -> None:
    url = serve(FakeTempo(spans, version=version)).url

    assert gateway_requests_over_tempo(url) == [("req-checkout-1", "gateway")]


@pytest.mark.parametrize("version", [(2, 9), (3, 0)])
@pytest.mark.parametrize("sent", ["gateway\v", "gateway\u00a0", "\u2028gateway\x1f"])
def test_search_over_tempo_trims_the_white_space_the_store_trims(
    serve: Any, version: tuple[int, int], sent: str
) -> None:
    """The store keeps a name as ``str.strip`` leaves it (a vertical tab, a no-break space,
    a line separator gone); Go's ``\\s`` is only space, tab, newline, carriage return and form
    feed, and ``search --service gateway`` over Tempo said "no requests match" (exit 1) for
    the request the store lists as gateway's."""
    spans = recent(renamed(checkout().spans, {"gateway": sent}))
    url = serve(FakeTempo(spans, version=version)).url

    assert gateway_requests_over_tempo(url) == [("req-checkout-1", "gateway")]


def test_search_trace_and_services_over_jaeger_find_a_service_sent_with_a_newline(
    serve: Any, spans: list[SpanRecord]
) -> None:
    url = serve(FakeJaeger(spans)).url
    jaeger = ("--jaeger", url, "--service", "gateway")

    searched = run("search", "--since", "7d", *jaeger, "--format", "json")
    traced = run("trace", "req-checkout-1", *jaeger, "--format", "json")
    mapped = run("services", "--since", "7d", *jaeger, "--format", "json")

    assert [r["correlation_id"] for r in json.loads(searched[1])["requests"]] == ["req-checkout-1"]
    assert json.loads(traced[1])["services"] == ["gateway", "orders", "payments", "bank"]
    edges = json.loads(mapped[1])["edges"]
    assert ("gateway", "orders") in [(e["from"], e["to"]) for e in edges]
    assert (searched[0], traced[0], mapped[0]) == (0, 0, 0)


def test_jaeger_searches_a_bounded_number_of_spellings_of_the_service_and_says_so(
    serve: Any, spans: list[SpanRecord]
) -> None:
    """A sender that wrote the name with new white space each time left Jaeger 200 names that
    trim to 'gateway': each was one more search of every command (202 requests for one
    search). The first ten are searched, and that is said once."""
    spellings = {f"gateway{' ' * n}": f"gateway{' ' * n}" for n in range(1, 201)}
    noise = [dataclasses.replace(s, service=name) for s in spans[:1] for name in spellings]
    backend = serve(FakeJaeger(spans + recent(noise)))
    code, out, err = run("search", "--since", "7d", "--jaeger", backend.url, "--service",
                         "gateway", "--format", "json")  # fmt: skip
    assert code == 0
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == ["req-checkout-1"]
    searches = [r for r in backend.requests if r.path.endswith("/api/v3/traces")]
    assert len(searches) <= 1 + 10
    assert err.count("names that are 'gateway' with white space around them") == 1


@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
def test_diffs_set_form_finds_the_requests_of_a_service_sent_with_a_newline(
    serve: Any, spans: list[SpanRecord], backend: str
) -> None:
    """Set A is req-checkout-1 (gateway's POST /checkout); set B names a route no request has,
    so the command stops there (exit 3), naming the set it found nothing in."""
    fake = FakeTempo(spans) if backend == "--tempo" else FakeJaeger(spans)
    url = serve(fake).url

    code, _, err = run("diff", "--since", "7d", backend, url, "--service", "gateway",
                       "--a", "http.route=/checkout", "--b", "http.route=/none")  # fmt: skip

    assert code == 3
    assert err == "tracekit: no requests of 'gateway' with 'http.route=/none' since '7d' (set B)\n"
