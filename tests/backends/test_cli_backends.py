"""``tracekit trace|search|services --tempo|--jaeger`` end to end, against real HTTP servers on
loopback that answer as Tempo and Jaeger do (``tempo_fake``, ``jaeger_fake``; no Tempo or Jaeger
can run here). Commands run in-process through click's runner (the real code, nothing replaced);
the no-traceback checks run the installed console script.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jaeger_fake import FakeJaeger
from otlp_fixtures import recent
from tempo_fake import FakeTempo
from trace_topologies import Topology, checkout, incident
from werkzeug.wrappers import Request, Response

from tracekit.records import SpanLink
from tracekit.store import Store
from tracekit_cli.main import cli

TRACEKIT = str(Path(sys.executable).with_name("tracekit"))
TEST_CA = str(Path(__file__).with_name("tls") / "ca.pem")  # signed what ``serve_tls`` serves


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    environment = {"COLUMNS": "100", "TRACEKIT_BACKEND_HEADERS": "", **(env or {})}
    result = CliRunner().invoke(cli, list(args), env=environment)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def spans() -> list[Any]:
    return recent(checkout().spans + incident().spans)


def test_a_default_tempo_answers_every_read_command(serve: Any, spans: list[Any]) -> None:
    url = serve(FakeTempo(spans)).url
    for args in (
        ["trace", "req-checkout-1"],
        ["trace", spans[0].trace_id],
        ["search"],
        ["search", "--since", "7d"],
        ["services", "--since", "7d"],
    ):
        code, out, err = run(*args, "--tempo", url, "--format", "json")
        assert (code, err) == (0, ""), args
        assert json.loads(out)


def test_search_shows_the_whole_trace_and_its_errors(serve: Any, spans: list[Any]) -> None:
    url = serve(FakeTempo(spans)).url
    code, out, _ = run("search", "--tempo", url, "--errors", "--format", "json")
    assert code == 0
    rows = [(r["correlation_id"], r["span_count"], r["error"]) for r in json.loads(out)["requests"]]
    # the worker's trace (new trace after the queue, linking to the producer) fails in ledger,
    # and none of its spans has the correlation id: it is measured in the request, as the store
    # and Jaeger measure it, not listed as a request of its own
    assert rows == [("req-incident-9", 8, True)]


def pulled_job() -> Topology:
    """A pull consumer: its CONSUMER root begins a trace of its own, links to the producer's
    message and carries the request's correlation ID; it fails in its database call."""
    t = Topology("req-pull-1")
    root = t.span("web", "POST /jobs", "SERVER", 0, 50)
    sent = t.publish(root, "jobs", 10, 12, system="rabbitmq")
    t.new_trace()
    job = t.consume("worker", "jobs", 300, 400, links=[sent], system="rabbitmq")
    t.span("worker", "INSERT jobs", "CLIENT", 310, 390, job, status="ERROR")
    return t


@pytest.mark.parametrize(("backend", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
def test_a_pull_consumers_trace_is_one_row_with_its_request_as_trace_shows_it(
    serve: Any, backend: str, fake: Any
) -> None:
    url = serve(fake(recent(pulled_job().spans + checkout().spans))).url
    code, out, _ = run("search", backend, url, "--format", "json")
    assert code == 0
    rows = [r for r in json.loads(out)["requests"] if r["correlation_id"] == "req-pull-1"]
    assert [(r["root_service"], r["root_name"]) for r in rows] == [("web", "POST /jobs")]
    code, out, _ = run("trace", "req-pull-1", backend, url, "--raw-times", "--format", "json")
    path = json.loads(out)
    assert code == 0 and len(path["trace_ids"]) == 2
    assert rows[0]["start_unix_nano"] == path["start_unix_nano"]
    assert rows[0]["duration_ms"] == path["duration_ms"] == 400.0
    assert (rows[0]["span_count"], rows[0]["error"]) == (len(path["spans"]), True)


def uncorrelated_pulled_job() -> Topology:
    """The pull consumer of ``pulled_job`` from a worker that does not carry the correlation
    ID: only its link to the producer's message ties its trace to the request."""
    t = Topology("req-pull-2")
    root = t.span("web", "POST /jobs", "SERVER", 0, 50)
    sent = t.publish(root, "jobs", 10, 12, system="rabbitmq")
    t.new_trace()
    job = t.consume("worker", "jobs", 300, 400, links=[sent], correlated=False, system="rabbitmq")
    t.span("worker", "INSERT jobs", "CLIENT", 310, 390, job, status="ERROR", correlated=False)
    return t


def test_a_consumers_trace_without_the_id_is_one_row_with_the_request_it_links_to_on_tempo(
    serve: Any,
) -> None:
    """Tempo's search answer carries no links: the consumer's trace was listed as a request of
    its own, with no correlation ID, and the request measured without it. (Jaeger cannot search
    links, so its ``trace`` does not join such a trace: see docs/cli.md.)"""
    url = serve(FakeTempo(recent(uncorrelated_pulled_job().spans + checkout().spans))).url
    code, out, _ = run("search", "--tempo", url, "--format", "json")
    assert code == 0
    rows = json.loads(out)["requests"]
    assert sorted(r["correlation_id"] for r in rows) == ["req-checkout-1", "req-pull-2"]
    (row,) = [r for r in rows if r["correlation_id"] == "req-pull-2"]
    code, out, _ = run("trace", "req-pull-2", "--tempo", url, "--raw-times", "--format", "json")
    path = json.loads(out)
    assert code == 0 and len(path["trace_ids"]) == 2
    assert (row["root_service"], row["root_name"]) == ("web", "POST /jobs")
    assert row["duration_ms"] == path["duration_ms"] == 400.0
    assert (row["span_count"], row["error"]) == (len(path["spans"]), True)


def behind_a_proxy() -> Topology:
    """A request entering through a proxy that does not carry the correlation ID (its three
    spans first in the trace), and a pull consumer's trace that carries it."""
    t = Topology("req-edge-1")
    edge = t.span("edge", "ingress", "SERVER", 0, 60, correlated=False)
    route = t.span("edge", "route", "INTERNAL", 1, 59, edge, correlated=False)
    call = t.span("edge", "POST /jobs", "CLIENT", 2, 58, route, correlated=False)
    web = t.span("web", "POST /jobs", "SERVER", 3, 57, call)
    sent = t.publish(web, "jobs", 10, 12, system="rabbitmq")
    t.new_trace()
    t.consume("worker", "jobs", 300, 400, links=[sent], system="rabbitmq")
    return t


@pytest.mark.parametrize(("backend", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
def test_a_request_whose_first_spans_lack_the_id_is_one_row_named_by_it(
    serve: Any, backend: str, fake: Any
) -> None:
    """Tempo selects ``span.correlation.id`` from the first three spans a search matched: a
    request entering through a proxy was listed twice, its own trace with no ID and its
    consumer's trace as a second request. Jaeger named a request by its root span's ID: the
    proxy's, none."""
    url = serve(fake(recent(behind_a_proxy().spans))).url
    code, out, _ = run("search", backend, url, "--format", "json")
    rows = json.loads(out)["requests"]
    code, out, _ = run("trace", "req-edge-1", backend, url, "--raw-times", "--format", "json")
    path = json.loads(out)
    assert code == 0 and len(path["trace_ids"]) == 2
    assert [(r["correlation_id"], r["root_service"], r["span_count"]) for r in rows] == [
        ("req-edge-1", "edge", len(path["spans"]))
    ]
    assert rows[0]["duration_ms"] == path["duration_ms"] == 400.0


def failing_behind_a_proxy() -> Topology:
    """A request through a proxy that carries no correlation ID and fails (its spans first in
    the trace, its error span the only one), then served by a service that carries it."""
    t = Topology("req-edge-2")
    edge = t.span("edge", "ingress", "SERVER", 0, 60, correlated=False, status="ERROR")
    route = t.span("edge", "route", "INTERNAL", 1, 59, edge, correlated=False)
    call = t.span("edge", "POST /jobs", "CLIENT", 2, 58, route, correlated=False)
    t.span("web", "POST /jobs", "SERVER", 3, 57, call)
    return t


@pytest.mark.parametrize(
    ("topology", "options"), [(behind_a_proxy, []), (failing_behind_a_proxy, ["--errors"])]
)
def test_search_on_tempo_names_a_request_behind_a_proxy_without_reading_it(
    serve: Any, topology: Any, options: list[str]
) -> None:
    """No real Tempo runs here: the fake answers as Tempo's TraceQL engine does. A hit showed
    the first three spans the search matched, a proxy's that carry no correlation ID, so
    ``search`` read each such trace to name it (up to two reads per request listed). Grouped
    by correlation ID, the hit names the request itself; ``--errors`` matched only the proxy's
    error span, and now groups every span of a trace with an error."""
    t = topology()
    backend = serve(FakeTempo(recent(t.spans)))
    code, out, _ = run("search", "--tempo", backend.url, *options, "--format", "json")
    rows = json.loads(out)["requests"]
    assert (code, [(r["correlation_id"], r["root_service"]) for r in rows]) == (
        0, [(t.correlation_id, "edge")]
    )  # fmt: skip
    assert [r.path for r in backend.requests if "/traces/" in r.path] == []


def test_search_on_tempo_lists_its_hits_when_a_trace_read_fails(serve: Any) -> None:
    """A hit that shows no correlation ID is read to name and join it: a trace Tempo failed to
    answer (a querier down) failed the whole search, which needs no trace read to list it."""
    spans = recent(uncorrelated_pulled_job().spans)
    consumer = spans[-1].trace_id
    tempo = FakeTempo(spans)

    def answer(request: Request) -> Response:
        if request.path.endswith(f"/traces/{consumer}"):
            return Response("querier unavailable", 500)
        return tempo(request)

    url = serve(answer).url
    code, out, err = run("search", "--tempo", url, "--timeout", "1", "--format", "json")

    rows = json.loads(out)["requests"]
    assert code == 0
    assert sorted(str(r["correlation_id"]) for r in rows) == ["None", "req-pull-2"]
    assert err == (
        f"tracekit: warning: Tempo at {url} failed to answer trace {consumer} (Tempo at {url} "
        "answered HTTP 500: querier unavailable): search lists the traces whose search hit "
        "shows no correlation ID as Tempo found them, unread\n"
    )


def test_search_limit_on_tempo_lists_that_many_requests_each_whole(serve: Any) -> None:
    """Five requests of two traces each (a pull consumer's, carrying the ID): ``--limit 3``
    asked Tempo for 3 traces, so it listed 2 requests, the older one its consumer's trace
    alone (root worker, its producer's trace beyond the answer)."""
    spans = []
    for n in range(5):
        t = Topology(f"req-pull-{n}")
        root = t.span("web", "POST /jobs", "SERVER", n * 1000, n * 1000 + 50)
        sent = t.publish(root, "jobs", n * 1000 + 10, n * 1000 + 12, system="rabbitmq")
        t.new_trace()
        t.consume("worker", "jobs", n * 1000 + 300, n * 1000 + 400, links=[sent])
        spans += t.spans
    url = serve(FakeTempo(recent(spans))).url

    code, out, _ = run("search", "--tempo", url, "--limit", "3", "--format", "json")

    rows = json.loads(out)["requests"]
    assert code == 0
    assert [(r["correlation_id"], r["root_service"], r["span_count"]) for r in rows] == [
        ("req-pull-4", "web", 3), ("req-pull-3", "web", 3), ("req-pull-2", "web", 3),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "found"), [(["--service", "web"], ["req-incident-9"]),
                          (["--min-duration", "195"], ["req-checkout-1"])],
)  # fmt: skip
def test_a_tempo_before_2_5_filters_search_by_root_service_and_duration(
    serve: Any, spans: list[Any], option: list[str], found: list[str]
) -> None:
    """``trace:rootService`` and ``trace:duration`` are Tempo 2.5's names; 2.2 to 2.4 know only
    ``rootServiceName`` and ``traceDuration`` (still Tempo's today). tracekit took their refusal
    for one of the query hint (which 2.4 takes), said so, and failed again without it: exit 2.
    No Tempo runs here: ``FakeTempo`` answers as Tempo 2.4's parser does."""
    url = serve(FakeTempo(spans, version=(2, 4))).url
    code, out, err = run("search", *option, "--tempo", url, "--format", "json")
    assert code == 0, err
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == found
    assert err == (f"tracekit: warning: Tempo at {url} sent no serviceStats (Tempo before 2.5, "
                   "or blocks older than vParquet4): reading each trace found to count its "
                   "spans and errors\n")  # fmt: skip


def test_a_query_tempo_refuses_with_and_without_hints_is_no_notice_about_hints(
    serve: Any, spans: list[Any]
) -> None:
    """Tempo 2.1 has no ``select()``: it refuses the search with or without the hint, so the
    refusal is the error, and Tempo is not said to lack query hints. No Tempo runs here:
    ``FakeTempo`` refuses as Tempo 2.1's parser does."""
    url = serve(FakeTempo(spans, version=(2, 1))).url
    code, out, err = run("search", "--tempo", url)
    assert (code, out) == (2, "")
    assert err.startswith(f"tracekit: Tempo at {url} answered HTTP 400: invalid TraceQL query")
    assert len(err.splitlines()) == 1


def test_tempo_search_since_lists_only_requests_started_since_then(serve: Any) -> None:
    """Tempo finds every trace that overlaps the window, so ``search --since 30m`` listed a job
    that started two hours ago and ended a minute ago; ``--help`` and the store list only the
    requests started since then. No Tempo runs here: ``FakeTempo`` finds traces by overlap, as
    Tempo's trace iterator does."""
    job, now = Topology("req-long-job"), Topology("req-just-now")
    job.span("batch", "nightly", "SERVER", 0, 119 * 60_000)
    now.span("edge", "GET /", "SERVER", 0, 10)
    url = serve(FakeTempo(recent(job.spans, 7200) + recent(now.spans, 300))).url
    for since, found in (("30m", ["req-just-now"]), ("3h", ["req-just-now", "req-long-job"])):
        code, out, err = run("search", "--since", since, "--tempo", url, "--format", "json")
        assert (code, err) == (0, "")
        assert [r["correlation_id"] for r in json.loads(out)["requests"]] == found, since


@pytest.mark.parametrize(("flag", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
def test_a_consumers_trace_since_then_of_a_request_begun_before_is_not_listed(
    serve: Any, tmp_path: Path, flag: str, fake: Any
) -> None:
    """A pull consumer took the job two minutes after its producer's trace ended; ``search
    --since`` between the two listed the consumer's trace alone on Tempo and Jaeger, as a
    request of its own, where the store (and ``trace``) start the request with its producer's
    trace, before ``--since``, and list only the request begun since. No Tempo or Jaeger runs
    here: the fakes find traces as those servers do (Tempo by overlap, Jaeger by span start)
    and answer their queries as they do."""
    job, now = Topology("req-pull-9"), Topology("req-just-now")
    root = job.span("web", "POST /jobs", "SERVER", 0, 50)
    sent = job.publish(root, "jobs", 10, 12, system="rabbitmq")
    job.new_trace()
    job.consume("worker", "jobs", 120_000, 120_100, links=[sent], system="rabbitmq")
    now.span("edge", "GET /", "SERVER", 0, 10)
    spans = recent(job.spans, 600) + recent(now.spans, 60)
    with contextlib.closing(Store(tmp_path / "s.db")) as store:
        store.write_spans(spans)
    since = (datetime.now(UTC) - timedelta(seconds=540)).isoformat(timespec="seconds")
    listed = {}
    for option, where in (("--store", str(tmp_path / "s.db")), (flag, serve(fake(spans)).url)):
        code, out, err = run("search", "--since", since, option, where, "--format", "json")
        assert (code, err) == (0, ""), option
        listed[option] = [r["correlation_id"] for r in json.loads(out)["requests"]]
    assert listed == {"--store": ["req-just-now"], flag: ["req-just-now"]}


def uncorrelated_pull(producer_ms: float, linked: bool = True) -> list[Any]:
    """A pull consumer whose trace carries no correlation ID took, two minutes after it was
    published, the message of a request whose web span lasted ``producer_ms``; unless
    ``linked``, its root links to a context no backend holds (an untrusted caller's)."""
    job = Topology("req-pull-8")
    root = job.span("web", "POST /jobs", "SERVER", 0, producer_ms)
    sent = job.publish(root, "jobs", 10, 12, system="rabbitmq")
    job.new_trace()
    consumer = job.consume("worker", "jobs", 120_000, 120_100, links=[sent], correlated=False,
                           system="rabbitmq")  # fmt: skip
    if not linked:
        return recent([dataclasses.replace(consumer, links=[SpanLink("ab" * 16, "cd" * 8)])], 480)
    return recent(job.spans, 600)


@pytest.mark.parametrize(("flag", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
@pytest.mark.parametrize(
    ("producer_ms", "linked", "alone", "listed"),
    [
        (50, True, False, ["req-just-now"]),  # the producer's trace ended before --since
        (50, True, True, []),
        (119_000, True, False, ["req-just-now"]),  # it began before --since and ended after
        (50, False, False, ["req-just-now", None]),  # its link leads to nothing held
    ],
)
def test_an_uncorrelated_consumer_since_then_of_a_request_begun_before_is_not_listed(
    serve: Any, tmp_path: Path, flag: str, fake: Any, producer_ms: float, linked: bool,
    alone: bool, listed: list[str | None],
) -> None:  # fmt: skip
    """A pull consumer whose trace carries no correlation ID, its root linking to a producer's
    trace begun before ``--since``: the store (and ``trace``) start the request with that
    trace and do not list it; Tempo listed it alone, a request of its own. It now searches the
    traces those roots link to before ``--since`` (TraceQL ``trace:id``, Tempo 2.5), reading
    no trace but the consumer's, as it did. No Tempo or Jaeger runs here: the fakes find traces
    as those servers do (Tempo by overlap) and answer their queries as they do."""
    now = Topology("req-just-now")
    now.span("edge", "GET /", "SERVER", 0, 10)
    spans = uncorrelated_pull(producer_ms, linked) + ([] if alone else recent(now.spans, 60))
    with contextlib.closing(Store(tmp_path / "s.db")) as store:
        store.write_spans(spans)
    since = (datetime.now(UTC) - timedelta(seconds=540)).isoformat(timespec="seconds")
    backend = serve(fake(spans))
    found = {}
    for option, where in (("--store", str(tmp_path / "s.db")), (flag, backend.url)):
        code, out, err = run("search", "--since", since, option, where, "--format", "json")
        said = "" if listed else "tracekit: no requests match\n"
        assert (code, err) == (0 if listed else 1, said)
        found[option] = [r["correlation_id"] for r in json.loads(out)["requests"]] if out else []
    assert found == {"--store": listed, flag: listed}
    if flag == "--tempo":
        assert len([r for r in backend.requests if "/traces/" in r.path]) <= 1


@pytest.mark.parametrize(("flag", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
def test_a_batch_consumer_since_then_is_listed_as_the_store_lists_it(
    serve: Any, tmp_path: Path, flag: str, fake: Any
) -> None:
    """A batch consumer took 30 orders since then, the first published since then, the others
    before. Its trace carries the first order's correlation ID and links to every message; the
    store (and ``trace``) join a batch's trace to its own ID's traces, not to every message's, so
    that request is listed. Jaeger read each of the 29 older producers' traces and left it out.
    No Tempo or Jaeger runs here: the fakes answer as those servers do."""
    spans = []
    for n in range(30):
        order = Topology(f"order-{n}")
        root = order.span("web", "POST /orders", "SERVER", 0, 20)
        order.publish(root, "orders", 5, 6, system="rabbitmq")
        spans += recent(order.spans, 500 if n == 0 else 600 + n)
    batch = Topology("order-0")
    batch.new_trace()
    consumer = batch.consume("worker", "orders", 0, 40, system="rabbitmq")
    producers = [s for s in spans if s.kind == "PRODUCER"]
    links = [
        SpanLink(p.trace_id, p.span_id, {"correlation.id": p.correlation_id}) for p in producers
    ]
    spans += recent([dataclasses.replace(consumer, links=links)], 400)
    with contextlib.closing(Store(tmp_path / "s.db")) as store:
        store.write_spans(spans)
    since = (datetime.now(UTC) - timedelta(seconds=540)).isoformat(timespec="seconds")
    backend = serve(fake(spans))
    listed = {}
    for option, where in (("--store", str(tmp_path / "s.db")), (flag, backend.url)):
        code, out, err = run("search", "--since", since, option, where, "--format", "json")
        assert (code, err) == (0, ""), option
        listed[option] = [r["correlation_id"] for r in json.loads(out)["requests"]]
    assert listed == {"--store": ["order-0"], flag: ["order-0"]}
    assert len([r for r in backend.requests if "/traces/" in r.path]) <= 1


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
@pytest.mark.parametrize("command", ["search", "services"])
def test_a_since_in_the_future_finds_nothing_as_the_store_does(
    serve: Any, spans: list[Any], fake: Any, command: str
) -> None:
    """Nothing started after now: the store says so (exit 1), where Tempo and Jaeger 2.19 and
    later refuse a window that ends before it starts (400), which was exit 2. No request is
    sent for it. No Tempo or Jaeger runs here: the fakes refuse such a window as they do."""
    since = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")
    backend = serve(fake(spans))
    flag = "--tempo" if fake is FakeTempo else "--jaeger"
    code, out, err = run(command, "--since", since, flag, backend.url)
    says = {"search": "no requests match", "services": f"no calls between services since {since}"}
    assert (code, out, err) == (1, "", f"tracekit: {says[command]}\n")
    assert not [p for p in backend.paths() if p in ("/api/search", "/api/v3/traces")]


def test_a_shorter_tempo_limit_is_said_once_on_stderr(serve: Any, spans: list[Any]) -> None:
    url = serve(FakeTempo(spans, max_search="24h0m0s")).url
    code, out, err = run("trace", "req-incident-9", "--tempo", url, "--format", "text")
    assert code == 0 and out.startswith("request req-incident-9\n")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"tracekit: warning: Tempo at {url} searches at most 24h0m0s at a time")


@pytest.mark.parametrize("command", [["trace", "req-incident-9"], ["services", "--since", "7d"]])
def test_a_tempo_result_limit_below_tracekit_s_is_searched_within(
    serve: Any, spans: list[Any], command: list[str]
) -> None:
    """A Tempo whose ``max_result_limit`` is below what tracekit asks for (101 traces for a
    correlation ID, 201 for the map) refused every such search, ``400 limit 101 exceeds max
    limit 100``, and the command failed with exit 2: it is asked again within the limit, and
    answers as any Tempo does."""
    backend = serve(FakeTempo(spans, max_result_limit=100))
    code, out, err = run(*command, "--tempo", backend.url, "--format", "json")
    assert (code, err) == (0, "")
    unlimited = serve(FakeTempo(spans)).url
    expected = json.loads(run(*command, "--tempo", unlimited, "--format", "json")[1])
    found = json.loads(out)
    for document in (found, expected):  # services: "7d" ago, from each command's now
        document.pop("since_unix_nano", None)
    assert found == expected and found["trace_ids" if "trace_ids" in found else "edges"]


def test_a_search_full_at_tempo_s_result_limit_is_said(serve: Any, spans: list[Any]) -> None:
    """Tempo answering as many traces as its ``max_result_limit`` may hold more: said once."""
    backend = serve(FakeTempo(spans, max_result_limit=1))
    code, _, err = run("services", "--since", "7d", "--tempo", backend.url, "--format", "json")
    assert (code, err) == (0, (
        f"tracekit: warning: Tempo at {backend.url} answers at most 1 traces a search (its "
        "max_result_limit): more traces than that in the window are not read\n"
    ))  # fmt: skip


def test_a_tempo_that_prunes_by_default_answers_every_span(serve: Any) -> None:
    """A Tempo whose operator made span pruning the default (3.0.1 on) served a request that
    published five messages with its five publishes collapsed into one summary span: ``trace``
    showed one publish and one hop of five, the consumers linking to spans no longer there,
    and a warning to query again with pruning disabled, which tracekit did not. It asks for the
    spans Tempo stores."""
    t = Topology("req-fanout-1")
    root = t.span("web", "POST /newsletter", "SERVER", 0, 60)
    sent = [t.publish(root, "emails", 10 + i, 11 + i, system="rabbitmq") for i in range(5)]
    for i, message in enumerate(sent):
        t.new_trace()
        t.consume("mailer", "emails", 100 + 10 * i, 105 + 10 * i, links=[message],
                  system="rabbitmq")  # fmt: skip
    spans = recent(t.spans)
    url = serve(FakeTempo(spans, prunes_by_default=True)).url
    code, out, err = run("trace", "req-fanout-1", "--tempo", url, "--format", "json")
    path = json.loads(out)
    assert (code, err, path["warnings"]) == (0, "", [])
    assert len(path["spans"]) == len(spans) == 11
    assert [h["type"] for h in path["hops"]] == ["messaging"] * 5


def test_a_partial_trace_is_in_the_json_warnings(serve: Any, spans: list[Any]) -> None:
    url = serve(FakeTempo(spans, max_bytes_per_trace=1500)).url
    code, out, _ = run("trace", "req-checkout-1", "--tempo", url, "--format", "json")
    warnings = json.loads(out)["warnings"]
    assert code == 0 and any("only in part: Trace exceeds maximum size" in w for w in warnings)


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_nan_and_infinities_from_a_backend_are_standard_json(
    serve: Any, spans: list[Any], fake: Any
) -> None:
    odd = {"nan": math.nan, "inf": math.inf, "deep": [{"minus": -math.inf}]}
    marked = [dataclasses.replace(s, attributes={**s.attributes, **odd}) for s in spans]
    backend = "--tempo" if fake is FakeTempo else "--jaeger"
    code, out, _ = run("trace", "req-checkout-1", backend, serve(fake(marked)).url, "--format",
                       "json")  # fmt: skip

    def refuse(constant: str) -> None:
        raise ValueError(f"not standard JSON: {constant}")

    attributes = json.loads(out, parse_constant=refuse)["spans"][0]["attributes"]
    assert code == 0
    assert {k: attributes[k] for k in odd} == {
        "nan": "NaN",
        "inf": "Infinity",
        "deep": [{"minus": "-Infinity"}],
    }


def test_jaeger_min_duration_below_a_millisecond(serve: Any, spans: list[Any]) -> None:
    backend = serve(FakeJaeger(spans))
    code, out, err = run(
        "search",
        "--jaeger",
        backend.url,
        "--service",
        "gateway",
        "--min-duration",
        "0.05",
        "--format",
        "json",
    )
    assert (code, err) == (0, "")
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == ["req-checkout-1"]
    assert backend.requests[-1].args["query.duration_min"] == "50us"


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_search_service_finds_its_own_requests_behind_newer_calls_into_it(
    serve: Any, fake: Any
) -> None:
    """``search --service orders`` lists the requests whose root is in orders. Jaeger finds a
    trace by any of its spans: with 25 requests of gateway calling orders since a job of orders'
    own began, its answer of the newest 20 traces held none rooted in orders, and tracekit said
    ``no requests match`` (exit 1) where the store and Tempo list the job. Jaeger's traces are
    read on, older page by older page, until the requests rooted in orders are found."""
    job = Topology("req-reconcile-1")
    job.span("orders", "reconcile", "SERVER", 0, 30)
    spans = job.spans
    for n in range(25):
        t = Topology(f"req-web-{n}")
        root = t.span("gateway", "POST /checkout", "SERVER", 1000 + 100 * n, 1050 + 100 * n)
        t.http(root, "orders", "/orders", 1010 + 100 * n, 1040 + 100 * n)
        spans += t.spans
    url = serve(fake(recent(spans))).url
    flag = "--tempo" if fake is FakeTempo else "--jaeger"
    code, out, err = run("search", "--service", "orders", flag, url, "--format", "json")
    assert (code, err) == (0, "")
    listed = [(r["correlation_id"], r["root_service"]) for r in json.loads(out)["requests"]]
    assert listed == [("req-reconcile-1", "orders")]


@pytest.mark.parametrize("service", [[], ["--service", "web"]])
def test_search_errors_on_a_jaeger_that_fails_says_the_error_alone(
    serve: Any, service: list[str]
) -> None:
    """The notice that Jaeger cannot search by status comes with what the search found, not
    before an error: a failed search is one line."""

    def failing(request: Request) -> Response:
        return Response("upstream connect error", 400)

    url = serve(failing).url
    code, out, err = run("search", "--errors", *service, "--jaeger", url)
    assert (code, out, err) == (
        2, "", f"tracekit: Jaeger at {url} answered HTTP 400: upstream connect error\n"
    )  # fmt: skip


def test_jaeger_without_api_v3_is_exit_2_not_nothing_found(serve: Any, spans: list[Any]) -> None:
    url = serve(FakeJaeger(spans, api_v3=False)).url
    for args in (
        ["search", "--service", "gateway"],
        ["trace", "req-checkout-1", "--service", "gateway"],
    ):
        code, out, err = run(*args, "--jaeger", url)
        assert (code, out) == (2, "")
        assert err.startswith(f"tracekit: Jaeger at {url} has no api_v3 (/api/v3/")
        assert len(err.splitlines()) == 1


NGINX_404 = (  # nginx's own page, for a location it does not proxy
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize("command", [["trace", "req-checkout-1"], ["search"], ["services"]])
def test_a_404_that_is_not_jaegers_is_exit_2_not_nothing_found(
    serve: Any, command: list[str]
) -> None:
    """Behind a reverse proxy, or at a wrong base path, the proxy answers 404 with a page of its
    own: that was read as Jaeger's "no traces found" (exit 1). Jaeger's own is a JSON error
    document (``{"error": {"httpCode": 404, ...}}``, which ``jaeger_fake`` answers as Jaeger's
    api_v3 gateway does; no Jaeger runs here)."""
    url = serve(lambda request: Response(NGINX_404, 404, content_type="text/html")).url
    code, out, err = run(*command, "--jaeger", url)
    assert (code, out) == (2, "")
    assert err.startswith(f"tracekit: Jaeger at {url} has no api_v3 (/api/v3/"), err
    assert "answered HTTP 404: 404 Not Found): tracekit needs Jaeger 1.54 or later" in err
    assert len(err.splitlines()) == 1


def test_an_older_jaeger_warns_once_that_it_filters_client_side(
    serve: Any, spans: list[Any]
) -> None:
    url = serve(FakeJaeger(spans, version=(2, 18))).url
    code, out, err = run("trace", "req-checkout-1", "--jaeger", url, "--format", "text")
    assert code == 0 and "path: gateway -> orders -> payments -> bank" in out
    assert err == (
        f"tracekit: warning: Jaeger at {url} ignores query.attributes (it needs "
        "Jaeger 2.19 or later): tracekit filters client-side among the newest 100 "
        "traces of each service, so older requests can be missed\n"
    )


def test_headers_from_the_flag_and_the_environment(serve: Any, spans: list[Any]) -> None:
    backend = serve(FakeTempo(spans, tenant="team-a", prefix="/tempo"))
    url = backend.url + "/tempo"
    assert (
        run("trace", "req-checkout-1", "--tempo", url, "--header", "X-Scope-OrgID=team-a")[0] == 0
    )
    env = {"TRACEKIT_BACKEND_HEADERS": "X-Scope-OrgID=team-a,Authorization=Bearer%20t0k3n"}
    assert run("search", "--tempo", url, env=env)[0] == 0
    assert backend.requests[-1].headers["Authorization"] == "Bearer t0k3n"
    env = {"TRACEKIT_BACKEND_HEADERS": "x-scope-orgid=team-b"}
    flagged = run("services", "--tempo", url, "--header", "X-Scope-OrgID=team-a", env=env)
    assert flagged[0] == 0 and backend.requests[-1].headers["X-Scope-OrgID"] == "team-a"
    code, _, err = run("search", "--tempo", url)
    assert code == 2 and "answered HTTP 401: no org id (check the tenant and credential" in err


def test_jaeger_tenant_header(serve: Any, spans: list[Any]) -> None:
    url = serve(FakeJaeger(spans, tenant="blue")).url
    code, out, _ = run(
        "trace", "req-checkout-1", "--jaeger", url, "--header", "x-tenant=blue", "--format", "json"
    )
    assert code == 0 and json.loads(out)["correlation_id"] == "req-checkout-1"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--header", "X-Token"], {}, "--header: 'X-Token' is not NAME=VALUE"),
        (["--header", "Bad Name=s3cret"], {}, "--header: a header is not NAME=VALUE"),
        (["--header", "Host=s3cret"], {}, "--header: Host is set by tracekit itself"),
        (
            [],
            {"TRACEKIT_BACKEND_HEADERS": "Authorization=Bearer%0D%0As3cret"},
            "TRACEKIT_BACKEND_HEADERS: the value of Authorization is too long or has control",
        ),
        (  # a token pasted with typographic quotes was said to be too long or have controls
            ["--header", "Authorization=Bearer “s3cret”"],
            {},
            "--header: the value of Authorization has a character no HTTP header carries (only"
            " Latin-1: a typographic quote or a symbol pasted with it?)\n",
        ),
    ],
)
def test_bad_headers_are_one_line_that_never_shows_the_value(
    args: list[str], env: dict[str, str], message: str
) -> None:
    code, out, err = run("search", "--tempo", "http://127.0.0.1:9", *args, env=env)
    assert (code, out) == (2, "") and err.startswith(f"tracekit: {message}")
    assert "s3cret" not in err and len(err.splitlines()) == 1


def test_header_without_a_remote_backend_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("search", "--store", str(tmp_path / "x.db"), "--header", "A=b")
    assert (code, err) == (
        2,
        "tracekit: --header is for a remote backend: use it with --tempo or --jaeger\n",
    )


def test_a_redirect_to_https_on_the_same_host_is_followed(
    serve: Any, serve_tls: Any, spans: list[Any]
) -> None:
    """A proxy that moves plain HTTP to HTTPS on the same host (``301 Location: https://...``)
    was refused as if it led to another host: exit 2. The upgrade is followed, headers and all:
    they go to the host they were meant for, now encrypted. No Tempo runs here: ``FakeTempo``
    answers behind TLS, with the test certificate of ``tls/``."""
    secure = serve_tls(FakeTempo(spans, tenant="team-a"))
    to = secure.url.replace("https://", "")
    plain = serve(lambda r: Response("", 301, {"Location": f"https://{to}{r.full_path}"}))
    code, out, err = run("trace", "req-checkout-1", "--tempo", plain.url, "--header",
                         "X-Scope-OrgID=team-a", "--format", "json",
                         env={"SSL_CERT_FILE": TEST_CA})  # fmt: skip
    assert (code, err) == (0, "")
    assert json.loads(out)["services"] == ["gateway", "orders", "payments", "bank"]
    assert {r.headers["X-Scope-OrgID"] for r in secure.requests} == {"team-a"}


def test_a_redirect_from_https_down_to_http_is_not_followed(
    serve: Any, serve_tls: Any, spans: list[Any]
) -> None:
    """The headers (credentials) are never sent unencrypted where they were sent over TLS."""
    plain = serve(FakeTempo(spans))
    to = plain.url.replace("http://", "")
    secure = serve_tls(lambda r: Response("", 301, {"Location": f"http://{to}{r.full_path}"}))
    code, out, err = run("search", "--tempo", secure.url, "--header", "Authorization=Bearer t0k3n",
                         env={"SSL_CERT_FILE": TEST_CA})  # fmt: skip
    assert (code, out) == (2, "")
    assert err.startswith(f"tracekit: Tempo at {secure.url} answered HTTP 301")
    assert plain.requests == []


@pytest.mark.parametrize("flag", ["--tempo", "--jaeger"])
def test_a_redirect_not_followed_says_where_it_led(serve: Any, flag: str) -> None:
    """An SSO proxy in front of the API (oauth2-proxy) sends a request without its session to
    the identity provider, another host: tracekit does not follow (the headers would go with
    it) and said only 'answered HTTP 302'. It names the host (never the path or query, which
    carry the proxy's state), escaped and bounded, and what to check."""
    login = "https://login.example.com/oauth2/auth?state=s3cr3t&redirect_uri=x"
    proxy = serve(lambda r: Response("", 302, {"Location": login}))
    code, out, err = run("trace", "req-checkout-1", flag, proxy.url)
    name = "Tempo" if flag == "--tempo" else "Jaeger"
    assert (code, out) == (2, "")
    assert err == (
        f"tracekit: {name} at {proxy.url} answered HTTP 302, a redirect to "
        "https://login.example.com that tracekit does not follow (another host, or https to "
        "http: the headers would go with it): is the URL the API's, and are the credential "
        "headers right?\n"
    )
    hostile = serve(lambda r: Response("", 307, {"Location": "https://\x1b]0;x\x07" + "a" * 300}))
    code, _, err = run("search", flag, hostile.url)
    assert code == 2 and "\x1b" not in err and "\x07" not in err and len(err) < 400


@pytest.mark.parametrize("flag", ["--tempo", "--jaeger"])
@pytest.mark.parametrize("location", ["https://[::1/oauth2", "https://\x1b[31mlogin.example/"])
def test_a_redirect_to_a_location_that_is_no_url_is_said_as_one(
    serve_raw: Any, flag: str, location: str
) -> None:
    """A Location urllib cannot parse (an unclosed "[" of an IPv6 address, or an escape sequence
    in the host, whose "[" reads as one) ended in 'internal error (ValueError: Invalid IPv6
    URL)': it is the redirect tracekit does not follow, in one line, exit 2. Sent as raw bytes:
    werkzeug itself fails on such a Location."""
    head = f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    proxy = serve_raw(head.encode())
    code, out, err = run("search", flag, proxy.url)
    name = "Tempo" if flag == "--tempo" else "Jaeger"
    assert (code, out) == (2, "")
    assert err == (
        f"tracekit: {name} at {proxy.url} answered HTTP 302, a redirect to a Location that is "
        "not a valid URL: is the URL the API's, and are the credential headers right?\n"
    )


def test_a_header_value_a_server_repeats_is_redacted(serve: Any) -> None:
    def echo(request: Request) -> Response:
        return Response(f"bad token {request.headers.get('Authorization', '')!s}", 401)

    url = serve(echo).url
    code, _, err = run("trace", "req-x", "--tempo", url, "--header", "Authorization=Bearer t0k3n")
    assert code == 2 and "t0k3n" not in err
    reason = "bad token [redacted] (check the tenant and credential headers)"
    assert err == f"tracekit: Tempo at {url} answered HTTP 401: {reason}\n"


def test_url_credentials_a_server_repeats_decoded_are_redacted(serve: Any) -> None:
    """Basic auth from ``https://user:pass@host``: a server that repeats the credentials it
    decoded (``user:pass``) had them printed in clear; only the encoded header was redacted."""

    def echo(request: Request) -> Response:
        auth = request.authorization
        return Response(f"no tenant for {auth.username}:{auth.password}" if auth else "", 403)

    url = serve(echo).url
    with_credentials = url.replace("http://", "http://robot:s3cr3t-pw@")
    code, _, err = run("trace", "req-x", "--tempo", with_credentials)
    assert code == 2 and "s3cr3t-pw" not in err, err
    assert "no tenant for [redacted]" in err


def test_every_read_command_documents_the_header_option() -> None:
    for name in ("trace", "search", "services"):
        _, out, _ = run(name, "--help")
        assert "--header NAME=VALUE" in out and "TRACEKIT_BACKEND_HEADERS" in out


@pytest.mark.parametrize("command", [["trace", "x"], ["search"], ["services"]])
@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:3200", "URL must look like http(s)://host[:port][/path], got 'localhost:3200'"),
        ("http://user:secret@tempo:99999", "URL has an invalid port: 'tempo:99999'"),
        ("http://[::1:3200", "URL is not valid: Invalid IPv6 URL"),  # which URL it did not say
        # a typo and a label over DNS's 63 characters: "internal error (UnicodeError ...)"
        (
            "http://tempo..internal:3200",
            "URL has an invalid host name: 'tempo..internal' (an "
            "empty part, or one over 63 characters)",
        ),
        (
            f"https://{'t' * 64}.example",
            f"URL has an invalid host name: '{'t' * 64}.example' (an "
            "empty part, or one over 63 characters)",
        ),
    ],
)
def test_a_bad_url_is_one_line_and_exit_2(
    command: list[str], backend: str, url: str, says: str
) -> None:
    done = subprocess.run(
        [TRACEKIT, *command, backend, url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )
    name = backend.strip("-").capitalize()
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"tracekit: {name} {says}\n"


@pytest.fixture(params=["body", "headers"])
def trickling(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server that sends its answer a byte every 0.2 s: its declared 100 kB body after a
    whole head, or its head itself (a header line that never ends)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if request.param == "body":
        head += b"Content-Length: 100000\r\n\r\n["
    else:
        head += b"X-Slow: "

    def answer(connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            connection.sendall(head)
            while not stop.wait(0.2):
                try:
                    connection.sendall(b" " if request.param == "body" else b"x")
                except OSError:
                    return

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    server.close()


@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
def test_a_backend_that_trickles_its_answer_is_cut_off_at_the_timeout(
    backend: str, trickling: str
) -> None:
    """The socket's timeout bounds each read only; ``--timeout`` must bound the whole answer,
    its head as much as its body. The server is there, slow: it is not called unreachable (a
    Tempo searching a week of traces for longer than the timeout was, and users looked at the
    network instead of raising --timeout)."""
    import time

    url = trickling
    started = time.monotonic()
    done = subprocess.run([TRACEKIT, "search", backend, url, "--timeout", "1"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    took = time.monotonic() - started
    assert (done.returncode, done.stdout) == (2, "")
    name = backend.strip("-").capitalize()
    assert done.stderr == (
        f"tracekit: {name} at {url}: no whole answer within 1 s (timed out: a slow search may "
        "need a longer timeout)\n"
    )
    assert took < 20, took  # three tries of a second, their backoff, and the interpreter


@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
def test_a_url_with_a_space_is_said_to_be_the_url_not_the_server(backend: str) -> None:
    """http.client refuses it before connecting: no server sent "a broken HTTP answer"."""
    code, out, err = run("search", backend, "http://127.0.0.1:9/te mpo", "--timeout", "1")
    name = backend.strip("-").capitalize()
    assert (code, out, err.count("\n")) == (2, "", 1)
    assert err.startswith(f"tracekit: {name} URL is not valid: URL can't contain control"), err


@pytest.mark.parametrize("backend", ["--tempo", "--jaeger"])
def test_a_url_whose_path_is_not_ascii_is_sent_percent_encoded(serve: Any, backend: str) -> None:
    """A base path as a browser shows it (``/tëmpo``, not ``/t%C3%ABmpo``) failed as a bug,
    ``internal error (UnicodeEncodeError: 'ascii' codec can't encode character ...)``, exit 2:
    it is sent as a browser sends it, its UTF-8 percent-encoded."""
    spans = recent(checkout().spans)
    fake = FakeTempo(spans, prefix="/tëmpo") if backend == "--tempo" else FakeJaeger(
        spans, base_path="/tëmpo")  # fmt: skip
    server = serve(fake)
    code, out, err = run("trace", "req-checkout-1", backend, server.url + "/tëmpo/",
                         "--format", "json")  # fmt: skip
    assert (code, err) == (0, "") and len(json.loads(out)["spans"]) == len(spans)
    sent = {r.environ["RAW_URI"].partition("/api/")[0] for r in server.requests}
    assert sent == {"/t%C3%ABmpo"}


def test_a_request_given_up_at_the_deadline_leaves_no_thread_reading(trickling: str) -> None:
    """The request thread is not left reading a byte at a time after its caller gave up: a
    long-running process (a library user of the Tempo or Jaeger source) would pile them up."""
    import threading
    import time

    from tracekit.backends._http import JsonClient
    from tracekit.records import BackendError

    client = JsonClient(trickling, name="Tempo", timeout=0.5, retries=1)
    with pytest.raises(BackendError, match=r"no whole answer within 0\.5 s"):
        client.get("/api/search")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(
        t.name == "tracekit-backend-get" for t in threading.enumerate()
    ):
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "tracekit-backend-get"]


def test_services_says_when_a_jaeger_search_answered_as_many_traces_as_tracekit_asks_for(
    serve: Any,
) -> None:
    """Jaeger answers at most ``query.num_traces`` (100) traces per service search: with 120
    requests in the window, ``services`` counted 100 calls and said nothing about the other
    20. It still counts what was read, and now says on stderr that older traces were not."""
    requests = []
    for n in range(120):
        t = Topology(f"req-{n}")
        t.http(t.span("web", "GET /", "SERVER", n * 20, n * 20 + 10), "orders", "/o", 1, 9)
        requests.append(t.spans)
    url = serve(FakeJaeger(recent([s for spans in requests for s in spans]))).url
    code, out, err = run("services", "--jaeger", url, "--since", "1h", "--format", "json")
    assert code == 0
    (edge,) = json.loads(out)["edges"]
    assert (edge["from"], edge["to"], edge["calls"]) == ("web", "orders", 100)
    assert err == (
        f"tracekit: warning: Jaeger at {url}: a service's search answered 100 traces, the most"
        " tracekit asks for: that service's older traces in the window are not read (narrow"
        " --since)\n"
    )
    # a search that held fewer says nothing
    url = serve(FakeJaeger(recent([s for spans in requests[:99] for s in spans]))).url
    code, out, err = run("services", "--jaeger", url, "--since", "1h", "--format", "json")
    assert (code, err) == (0, "") and json.loads(out)["edges"][0]["calls"] == 99


def test_a_span_that_reuses_another_spans_id_is_named_in_a_warning(serve: Any) -> None:
    """Zipkin's shared spans: a server span with its client's id (Tempo keeps both). The path
    showed the client alone, '3 spans' of 4, and said nothing of the server it left out."""
    t = Topology("req-shared-id")
    entry = t.span("web", "GET /a", "SERVER", 0, 100)
    client = t.span("web", "GET /orders", "CLIENT", 10, 90, entry)
    server = dataclasses.replace(client, service="orders", kind="SERVER", name="GET /orders/7",
                                 start_unix_nano=client.start_unix_nano + 1)  # fmt: skip
    t.spans += [server, dataclasses.replace(client)]  # and one span exported twice: no warning
    url = serve(FakeTempo(recent(t.spans))).url

    code, out, _ = run("trace", "req-shared-id", "--tempo", url, "--format", "json")

    assert code == 0
    assert json.loads(out)["warnings"] == [
        f"span id reused: orders 'GET /orders/7' (SERVER) has the id of web 'GET /orders'"
        f" ({client.span_id}) (CLIENT); not shown"
    ]


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_huge_strings_from_a_backend_are_cut_as_the_store_cuts_them(
    serve: Any, spans: list[Any], fake: Any, tmp_path: Path
) -> None:
    from tracekit.store import Store

    huge = "x" * 2_000_000
    root = dataclasses.replace(spans[0], name=huge, attributes={**spans[0].attributes,
                               "big": huge, "k" * 1000: "v", "list": [huge]})  # fmt: skip
    served = [root, *spans[1:]]
    with Store(tmp_path / "t.db") as store:
        store.write_spans(served)
    backend = "--tempo" if fake is FakeTempo else "--jaeger"
    code, out, _ = run("trace", root.trace_id, backend, serve(fake(served)).url, "--format", "json")
    _, stored, _ = run(
        "trace", root.trace_id, "--store", str(tmp_path / "t.db"), "--format", "json"
    )

    assert code == 0 and len(out) < 200_000
    assert json.loads(out)["spans"] == json.loads(stored)["spans"]


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_a_link_to_an_empty_context_is_left_out_as_the_receiver_leaves_it(
    serve: Any, spans: list[Any], fake: Any
) -> None:
    """An SDK records a link with attributes and no valid context; Tempo and Jaeger keep it (ids
    left out, or all zeros). The path showed ``{"trace_id": ""}``, which its own schema refuses."""
    import jsonschema

    from tracekit.path import load_schema
    from tracekit.records import SpanLink

    real = SpanLink("ab" * 16, "cd" * 8)
    empty = [SpanLink("", ""), SpanLink("0" * 32, "0" * 16), SpanLink("ab" * 16, "")]
    root = dataclasses.replace(spans[0], links=[*empty, real])
    backend = "--tempo" if fake is FakeTempo else "--jaeger"
    url = serve(fake([root, *spans[1:]])).url
    code, out, _ = run("trace", root.trace_id, backend, url, "--format", "json")

    document = json.loads(out)
    jsonschema.validate(document, load_schema())
    shown = next(s for s in document["spans"] if s["span_id"] == root.span_id)
    assert code == 0 and shown["links"] == [{"trace_id": "ab" * 16, "span_id": "cd" * 8}]


def test_a_huge_root_name_in_a_tempo_search_hit_is_cut_as_the_store_cuts_names(
    serve: Any, spans: list[Any]
) -> None:
    served = [
        dataclasses.replace(s, name="n" * 2_000_000) if s.parent_span_id is None else s
        for s in spans
    ]
    code, out, _ = run("search", "--tempo", serve(FakeTempo(served)).url, "--format", "json")

    assert code == 0 and len(out) < 100_000
    names = {r["root_name"] for r in json.loads(out)["requests"]}
    assert names == {"n" * 1024}  # MAX_NAME_CHARS, the store's bound on a span name


def test_a_tempo_that_cannot_search_by_trace_id_lists_such_a_consumer_and_says_why(
    serve: Any,
) -> None:
    """Tempo 2.4 refuses TraceQL ``trace:id``: the consumer's trace is listed on its own, as
    before, and stderr says why once. No Tempo runs here: the fake refuses what 2.4 refuses."""
    now = Topology("req-just-now")
    now.span("edge", "GET /", "SERVER", 0, 10)
    url = serve(FakeTempo(uncorrelated_pull(50) + recent(now.spans, 60), version=(2, 4))).url
    since = (datetime.now(UTC) - timedelta(seconds=540)).isoformat(timespec="seconds")
    code, out, err = run("search", "--since", since, "--tempo", url, "--format", "json")
    assert code == 0
    assert [r["correlation_id"] for r in json.loads(out)["requests"]] == ["req-just-now", None]
    said = [line for line in err.splitlines() if "failed to search traces by id" in line]
    assert len(said) == 1, err
    assert "(TraceQL trace:id needs Tempo 2.5 or later): a trace carrying no" in said[0]


@pytest.mark.parametrize("flag", ["--tempo", "--jaeger"])
def test_an_at_sign_in_a_backend_path_is_refused_saying_how_to_write_it(flag: str) -> None:
    """A proxy path holding an '@' (Grafana's datasource proxy to a uid like 'team@tempo') is
    refused, as a password's unencoded '/' would leave an '@' there too: the line spoke only of
    user names and passwords the URL does not have, not of writing the '@' as %40, which works."""
    url = "https://grafana.example/api/datasources/proxy/uid/team@tempo"
    code, out, err = run("search", flag, url)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "an '@' in its path as %40" in err


@pytest.mark.parametrize("fake", [FakeTempo, FakeJaeger])
def test_search_and_services_from_tempo_and_jaeger_are_documents_of_their_schemas(
    serve: Any, fake: Any
) -> None:
    """The schemas describe what each backend's answer is printed as, not the store's alone:
    a request without a correlation ID, a pull consumer's trace, an error, a messaging edge."""
    import jsonschema

    from tracekit_cli.schemas import load_schema

    plain = Topology(None)
    plain.span("edge", "GET /health", "SERVER", 0, 5)
    url = serve(fake(recent(pulled_job().spans + incident().spans + plain.spans))).url
    flag = "--tempo" if fake is FakeTempo else "--jaeger"
    for command in ("search", "services"):
        code, out, _ = run(command, "--since", "7d", flag, url, "--format", "json")
        document = json.loads(out)
        jsonschema.validate(document, load_schema(command))
        assert code == 0 and document
    found = json.loads(run("search", "--since", "7d", flag, url, "--format", "json")[1])
    assert None in {r["correlation_id"] for r in found["requests"]}
    assert True in {r["error"] for r in found["requests"]}


def test_search_from_a_tempo_that_counts_no_spans_and_refuses_the_trace_is_of_its_schema(
    serve: Any,
) -> None:
    """A Tempo before 2.5 sends no span count; tracekit reads each trace to count them, and a
    trace Tempo refuses (too large) counts none. `search --format json` printed "span_count": 0,
    which the schema said a request never has: a script validating the output refused it."""
    import jsonschema

    from tracekit_cli.schemas import load_schema

    tempo = FakeTempo(recent(checkout().spans), version=(2, 4), max_bytes_per_trace=1)
    code, out, err = run("search", "--since", "7d", "--tempo", serve(tempo).url, "--format", "json")

    assert code == 0
    assert "refused trace" in err
    document = json.loads(out)
    jsonschema.validate(document, load_schema("search"))
    assert [r["span_count"] for r in document["requests"]] == [0]


def test_search_from_tempo_names_a_root_service_sent_with_a_newline_as_trace_does(
    serve: Any,
) -> None:
    """An SDK that read OTEL_SERVICE_NAME from a file sends 'gateway\\n'. `trace` and `services`
    over Tempo name it 'gateway' (d853fab), but `search --format json` printed the root_service
    of Tempo's search answer as sent: "gateway\\n", a name no other command printed."""
    spans = [dataclasses.replace(s, service=s.service + "\n") for s in recent(checkout().spans)]
    url = serve(FakeTempo(spans)).url

    code, out, _ = run("search", "--since", "7d", "--tempo", url, "--format", "json")
    (found,) = json.loads(out)["requests"]
    path = json.loads(run("trace", found["trace_id"], "--tempo", url, "--format", "json")[1])

    assert code == 0
    assert found["root_service"] == path["services"][0] == "gateway"


def test_search_from_tempo_names_a_trace_without_its_root_as_the_store_does(
    serve: Any, tmp_path: Path
) -> None:
    """A service that continues a caller's traceparent (a browser's, a proxy exporting
    elsewhere) stores a trace whose first span's parent Tempo never receives. Tempo's search
    names its root '<root span not yet received>' with no name; the store, and `trace` over
    Tempo, name the request by the earliest span whose parent is missing: api 'GET /x'."""
    t = Topology("req-continued-1")
    server = t.span("api", "GET /x", "SERVER", 0, 40, parent_span_id="ab" * 8)
    t.span("api", "SELECT x", "CLIENT", 5, 30, server)
    spans = recent(t.spans)
    with contextlib.closing(Store(tmp_path / "s.db")) as store:
        store.write_spans(spans)
    listed = {}
    for option, where in (
        ("--store", str(tmp_path / "s.db")),
        ("--tempo", serve(FakeTempo(spans)).url),
    ):
        code, out, err = run("search", "--since", "1h", option, where, "--format", "json")
        assert (code, err) == (0, ""), option
        listed[option] = [(r["root_service"], r["root_name"]) for r in json.loads(out)["requests"]]

    assert listed == {"--store": [("api", "GET /x")], "--tempo": [("api", "GET /x")]}


def test_a_celery_rooted_request_from_jaeger_is_named_by_its_task(serve: Any) -> None:
    """Jaeger answers the root span whole, its attributes with it: `search --jaeger` listed a
    request a scheduler began by sending a Celery task as "scheduler: send fhq", where `trace`
    names the span "send fhq (tasks.explode)". It now names the task as `trace` does."""
    t = Topology("req-fhq")
    attrs = {"messaging.system": "celery", "messaging.destination.name": "fhq",
             "tracekit.celery.task_name": "tasks.explode"}  # fmt: skip
    sent = t.span("scheduler", "send fhq", "PRODUCER", 0, 4, attrs=attrs)
    t.span("worker", "process fhq", "CONSUMER", 7, 9, sent, attrs=attrs)
    url = serve(FakeJaeger(recent(t.spans))).url

    code, out, _ = run("search", "--jaeger", url, "--format", "text")
    assert code == 0 and "scheduler: send fhq (tasks.explode)" in out
    code, out, _ = run("search", "--jaeger", url, "--format", "json")
    [row] = json.loads(out)["requests"]
    assert (row["root_name"], row["root_task"]) == ("send fhq", "tasks.explode")


def test_a_root_without_a_route_from_jaeger_is_listed_as_the_store_lists_it(serve: Any) -> None:
    """An OpenTelemetry JS SDK's server span without a route is named ``GET``: `search
    --jaeger`, which gets the root whole, lists it by its path as the store and `diff` do."""
    t = Topology("req-node")
    attrs = {"http.request.method": "GET", "url.path": "/reserve/42"}
    t.span("inventory-node", "GET", "SERVER", 0, 30, attrs=attrs)
    url = serve(FakeJaeger(recent(t.spans))).url

    code, out, _ = run("search", "--jaeger", url, "--format", "text")
    assert code == 0 and "inventory-node: GET /reserve/{id}" in out
    code, out, _ = run("search", "--jaeger", url, "--format", "json")
    [row] = json.loads(out)["requests"]
    assert row["root_name"] == "GET /reserve/{id}"


def test_a_root_without_a_route_from_tempo_is_listed_as_the_store_lists_it(serve: Any) -> None:
    """Tempo's search hit names the root ``GET`` and carries none of its attributes: `search
    --tempo` listed "inventory-node: GET" where the store, Jaeger and `diff` say "GET
    /reserve/{id}". The search for the roots' tasks selects their URL path too (``url.path``,
    or the older conventions' ``http.target``): no trace is read, no search added."""
    t = Topology("req-node")
    t.span("inventory-node", "GET", "SERVER", 0, 30, attrs={"url.path": "/reserve/42"})
    older = Topology("req-node-old")  # an OpenTelemetry JS SDK before the stable conventions
    older.span("inventory-node", "GET", "SERVER", 40, 60, attrs={"http.target": "/stock/7?x=1"})
    backend = serve(FakeTempo(recent(t.spans + older.spans)))

    code, out, _ = run("search", "--tempo", backend.url, "--format", "text")
    assert code == 0 and "inventory-node: GET /reserve/{id}" in out
    code, out, err = run("search", "--tempo", backend.url, "--format", "json")
    names = sorted(row["root_name"] for row in json.loads(out)["requests"])
    assert (names, err) == (["GET /reserve/{id}", "GET /stock/{id}"], "")
    assert not [r for r in backend.requests if "/traces/" in r.path]  # no trace read
    queries = [r.args.get("q", "") for r in backend.requests]
    assert len([q for q in queries if "nestedSetParent" in q]) == 2  # one a run


def test_a_celery_rooted_request_from_tempo_is_named_by_its_task(serve: Any) -> None:
    """Tempo's search hit names its root's service and span, not its attributes: `search
    --tempo` gave `root_task` null and "scheduler: send fhq" where the store and Jaeger name
    the task. The roots of the listed traces that name one are now searched for, one search
    for up to 20 traces; a request whose root names none keeps null."""
    t = Topology("req-fhq")
    attrs = {"messaging.system": "celery", "messaging.destination.name": "fhq",
             "tracekit.celery.task_name": "tasks.explode"}  # fmt: skip
    sent = t.span("scheduler", "send fhq", "PRODUCER", 0, 4, attrs=attrs)
    t.span("worker", "process fhq", "CONSUMER", 7, 9, sent, attrs=attrs)
    plain = Topology("req-web")  # a web request: a worker under it names a task, its root none
    root = plain.span("web", "POST /jobs", "SERVER", 20, 40)
    plain.span("web", "send fhq", "PRODUCER", 22, 24, root, attrs=attrs)
    backend = serve(FakeTempo(recent(t.spans + plain.spans)))
    url = backend.url

    code, out, _ = run("search", "--tempo", url, "--format", "text")
    assert code == 0 and "scheduler: send fhq (tasks.explode)" in out
    code, out, err = run("search", "--tempo", url, "--format", "json")
    rows = {row["root_name"]: row["root_task"] for row in json.loads(out)["requests"]}
    assert (rows, err) == ({"send fhq": "tasks.explode", "POST /jobs": None}, "")
    queries = [r.args.get("q", "") for r in backend.requests]
    assert len([q for q in queries if "nestedSetParent" in q]) == 2  # one a run


def test_a_tempo_before_2_5_names_the_task_from_the_traces_it_reads(serve: Any) -> None:
    """Tempo before 2.5 has no TraceQL trace:id to search roots by, and sends no serviceStats:
    each trace found is read to count its spans already, and its root names the task. No
    search more, and nothing more said on stderr."""
    t = Topology("req-fhq")
    attrs = {"tracekit.celery.task_name": "tasks.explode"}
    t.span("scheduler", "send fhq", "PRODUCER", 0, 4, attrs=attrs)
    backend = serve(FakeTempo(recent(t.spans), version=(2, 4)))

    code, out, err = run("search", "--tempo", backend.url, "--format", "json")
    [row] = json.loads(out)["requests"]
    assert (code, row["root_name"], row["root_task"]) == (0, "send fhq", "tasks.explode")
    assert [line.split(": ", 2)[2][:40] for line in err.splitlines()] == [
        f"Tempo at {backend.url} sent no serviceStats"[:40]
    ]
    assert not [r for r in backend.requests if "nestedSetParent" in r.args.get("q", "")]


@pytest.mark.parametrize(("flag", "fake"), [("--tempo", FakeTempo), ("--jaeger", FakeJaeger)])
def test_services_that_never_called_each_other_are_named_as_from_the_store(
    serve: Any, tmp_path: Path, flag: str, fake: Any
) -> None:
    """`services` over a web app alone drew only "no calls between services": it now names
    each service seen and the requests it took in, the same from Tempo and Jaeger as from a
    store holding the same spans, and exits 0: services were found."""
    t = Topology("req-alone")
    for n in range(3):
        t.new_trace()
        t.span("shop web", "GET /items/{n}", "SERVER", 10 * n, 10 * n + 2)
    t.new_trace()
    t.span("nightly", "scan", "INTERNAL", 51, 59, t.span("nightly", "rebuild", "INTERNAL", 50, 60))
    spans = recent(t.spans)
    with Store(tmp_path / "tracekit.db") as store:
        store.write_spans(spans)
    url = serve(fake(spans)).url

    stored = run("services", "--store", str(tmp_path / "tracekit.db"), "--format", "json")
    code, out, err = run("services", flag, url, "--format", "json")
    assert (code, err) == (0, "tracekit: no calls between services since 1h\n")
    assert json.loads(out)["services"] == json.loads(stored[1])["services"] == [
        {"name": "shop web", "requests": 3}, {"name": "nightly", "requests": 1},
    ]  # fmt: skip
