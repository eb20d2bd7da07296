"""Mixed meshes on the wire: a caller speaking one trace format, a tracekit service configured
with OTEL_PROPAGATORS, and a downstream service reading another format, each end played by
OpenTelemetry's reference propagator. The tracekit service is a real uvicorn process exporting
into a store; the downstream is a real werkzeug server recording what arrived.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from loopback import free_port, start_werkzeug
from opentelemetry import trace
from opentelemetry.propagators.textmap import DefaultGetter
from opentelemetry.trace import SpanContext, TraceFlags
from rawhttp import send
from reference_propagators import REFERENCES
from stopping import Service


class HttpHeaders(DefaultGetter):
    """HTTP header names are case-insensitive: the recorded ones are kept in lower case."""

    def get(self, carrier: Any, key: str) -> Any:
        return super().get(carrier, key.lower())


CALLER_TRACE, CALLER_SPAN = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7

SERVICE = """
import os, requests, tracekit
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from tracekit.asgi import TracekitMiddleware

tracekit.init("mesh-service")

def call(request):
    response = requests.get(os.environ["DOWNSTREAM"], timeout=10)
    return JSONResponse({"downstream": response.status_code})

app = TracekitMiddleware(Starlette(routes=[Route("/call", call)]))
"""


@pytest.fixture
def downstream() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        received.append(
            {
                k[5:].replace("_", "-").lower(): v
                for k, v in environ.items()
                if k.startswith("HTTP_")
            }
        )
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    url, stop = start_werkzeug(app)
    yield url, received
    stop()


def _caller_headers(name: str) -> list[bytes]:
    context = trace.set_span_in_context(
        trace.NonRecordingSpan(
            SpanContext(CALLER_TRACE, CALLER_SPAN, True, TraceFlags(TraceFlags.SAMPLED))
        )
    )
    carrier: dict[str, str] = {}
    REFERENCES[name].inject(carrier, context)
    return [f"{key}: {value}".encode() for key, value in carrier.items()]


def _start_mesh(service: Service, propagators: str, downstream_url: str, **env: str) -> int:
    """The tracekit service under uvicorn with ``OTEL_PROPAGATORS``; returns its port."""
    service.write("mesh.py", SERVICE)
    port = free_port()
    service.start(
        "-m", "uvicorn", "mesh:app", "--port", str(port),
        OTEL_PROPAGATORS=propagators, DOWNSTREAM=downstream_url + "/next", **env,
    )  # fmt: skip
    service.wait_http(f"http://127.0.0.1:{port}/health")
    return port


@pytest.mark.parametrize(
    ("caller", "propagators", "callee"),
    [
        ("b3", "b3,xray", "xray"),  # Envoy/Istio in front, AWS behind
        ("xray", "xray,b3multi", "b3multi"),  # ALB/App Mesh in front, Zipkin-era behind
        ("jaeger", "jaeger,tracecontext", "tracecontext"),
        ("b3multi", "tracecontext,baggage,b3multi", "b3multi"),
    ],
)
def test_a_mixed_chain_keeps_one_trace_and_the_correlation_id(
    service: Service,
    downstream: tuple[str, list[dict[str, str]]],
    caller: str,
    propagators: str,
    callee: str,
) -> None:
    downstream_url, received = downstream
    port = _start_mesh(service, propagators, downstream_url)

    response = send(f"http://127.0.0.1:{port}/call", _caller_headers(caller))
    assert response.status == 200 and json.loads(response.body) == {"downstream": 200}
    service.terminate()

    spans = service.spans()
    (server,) = [s for s in spans if s.kind == "SERVER" and s.name == "GET /call"]
    (client,) = [s for s in spans if s.kind == "CLIENT"]
    assert server.trace_id == f"{CALLER_TRACE:032x}"  # the caller's trace, continued
    assert server.parent_span_id == f"{CALLER_SPAN:016x}"
    assert client.parent_span_id == server.span_id

    headers = received[-1]
    context = REFERENCES[callee].extract(headers, getter=HttpHeaders())
    parent = trace.get_current_span(context).get_span_context()
    assert f"{parent.trace_id:032x}" == server.trace_id  # the downstream sees the same trace
    assert f"{parent.span_id:016x}" == client.span_id
    assert parent.trace_flags.sampled
    assert headers["x-correlation-id"] == server.correlation_id  # always carried alongside


@pytest.mark.parametrize("propagators", ["xray", "tracecontext,xray"])
def test_a_trace_started_under_xray_carries_its_start_time_in_the_root(
    service: Service, downstream: tuple[str, list[dict[str, str]]], propagators: str
) -> None:
    """X-Ray reads a trace id's first 8 hex digits as its start in epoch seconds, and refuses
    ids older than 30 days: a trace tracekit starts must carry the time there, not random bits
    (OpenTelemetry's AWS id generator does the same)."""
    downstream_url, received = downstream
    port = _start_mesh(service, propagators, downstream_url)

    before = int(time.time())
    response = send(f"http://127.0.0.1:{port}/call", [])  # no trace header: a new trace
    after = int(time.time())
    assert response.status == 200
    service.terminate()

    root = dict(p.split("=", 1) for p in received[-1]["x-amzn-trace-id"].split(";"))["Root"]
    version, epoch, _ = root.split("-")
    assert version == "1" and before <= int(epoch, 16) <= after
    (server,) = [s for s in service.spans() if s.kind == "SERVER" and s.name == "GET /call"]
    assert server.trace_id[:8] == epoch and server.parent_span_id is None


LINEAGE = "Lineage=a87bd80c:1|68fd508a:5"


def test_x_ray_fields_beyond_the_trace_go_on_to_the_next_hop(
    service: Service, downstream: tuple[str, list[dict[str, str]]]
) -> None:
    """AWS forwards every field of X-Amzn-Trace-Id it does not own (Lambda's recursion detection
    counts hops in ``Lineage``): a service between two AWS hops must not drop them. ``Self`` is
    the load balancer's note about its own hop, and stays behind."""
    downstream_url, received = downstream
    port = _start_mesh(service, "xray", downstream_url)
    hex_id = f"{CALLER_TRACE:032x}"
    root = f"Root=1-{hex_id[:8]}-{hex_id[8:]}"
    incoming = (
        f"Self=1-67891233-12456789abcdef012345678;{root};Parent={CALLER_SPAN:016x};Sampled=1;"
        f"{LINEAGE};Tenant=acme"
    )

    response = send(f"http://127.0.0.1:{port}/call", [f"X-Amzn-Trace-Id: {incoming}".encode()])
    assert response.status == 200
    service.terminate()

    (client,) = [s for s in service.spans() if s.kind == "CLIENT"]
    sent = received[-1]["x-amzn-trace-id"]
    assert sent == f"{root};Parent={client.span_id};Sampled=1;{LINEAGE};Tenant=acme"


@pytest.mark.parametrize("b3", ["b3", "b3multi"])
def test_a_caller_sending_w3c_and_b3_for_one_span_keeps_its_tracestate(
    service: Service, downstream: tuple[str, list[dict[str, str]]], b3: str
) -> None:
    """A caller configured like this service (OpenTelemetry's agents in a mesh:
    ``tracecontext,baggage,b3multi``) names its span in both formats; the B3 parent, found last,
    continues the same trace, so the caller's tracestate and random flag must go on with it."""
    downstream_url, received = downstream
    port = _start_mesh(service, f"tracecontext,baggage,{b3}", downstream_url)
    caller = [*_caller_headers(b3), *_caller_headers("tracecontext")]
    caller = [h.replace(b"-01", b"-03") if h.startswith(b"traceparent") else h for h in caller]
    caller.append(b"tracestate: congo=t61rcWkgMzE,ot=th:8")

    response = send(f"http://127.0.0.1:{port}/call", caller)
    assert response.status == 200
    service.terminate()

    (client,) = [s for s in service.spans() if s.kind == "CLIENT"]
    sent = received[-1]
    assert sent["traceparent"] == f"00-{CALLER_TRACE:032x}-{client.span_id}-03"
    assert sent["tracestate"] == "congo=t61rcWkgMzE,ot=th:8"


@pytest.mark.parametrize(
    ("propagators", "debug", "expected"),
    [
        ("b3", [b"b3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-d"], {"b3": "-d"}),
        (
            "b3multi",
            [
                b"X-B3-TraceId: 4bf92f3577b34da6a3ce929d0e0e4736",
                b"X-B3-SpanId: 00f067aa0ba902b7",
                b"X-B3-Flags: 1",
            ],
            {"x-b3-flags": "1"},
        ),
    ],
)
def test_a_b3_debug_trace_stays_debug_downstream(
    service: Service,
    downstream: tuple[str, list[dict[str, str]]],
    propagators: str,
    debug: list[bytes],
    expected: dict[str, str],
) -> None:
    """B3's debug flag asks every hop to record the trace and collectors to keep it: a service
    forwarding it as merely sampled lets Zipkin's collector-side sampling drop the rest."""
    downstream_url, received = downstream
    port = _start_mesh(service, propagators, downstream_url)

    response = send(f"http://127.0.0.1:{port}/call", debug)
    assert response.status == 200
    service.terminate()

    (client,) = [s for s in service.spans() if s.kind == "CLIENT"]
    sent = received[-1]
    if propagators == "b3":
        assert sent["b3"] == f"{CALLER_TRACE:032x}-{client.span_id}{expected['b3']}"
    else:
        assert sent["x-b3-spanid"] == client.span_id and sent["x-b3-flags"] == "1"
        assert "x-b3-sampled" not in sent  # debug implies it: B3 sends one or the other


@pytest.mark.parametrize(
    ("propagators", "deferred"),
    [
        ("b3", [b"b3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"]),
        (
            "b3multi",
            [b"X-B3-TraceId: 4bf92f3577b34da6a3ce929d0e0e4736", b"X-B3-SpanId: 00f067aa0ba902b7"],
        ),
    ],
)
def test_a_b3_caller_leaving_the_sampling_decision_to_this_hop_is_traced(
    service: Service,
    downstream: tuple[str, list[dict[str, str]]],
    propagators: str,
    deferred: list[bytes],
) -> None:
    """B3 without a sampling state (no ``X-B3-Sampled``; ``b3: {trace}-{span}``) defers the
    decision to the receiver, as a proxy that forwards the ids and makes no decision sends
    them; Envoy decides for itself. The single header was recorded, while the same ids as
    multiple headers were taken as 'not sampled': the service stored no span of the request
    and told the next hop not to sample either."""
    downstream_url, received = downstream
    port = _start_mesh(service, propagators, downstream_url)

    response = send(f"http://127.0.0.1:{port}/call", deferred)
    assert response.status == 200
    service.terminate()

    (server,) = [s for s in service.spans() if s.kind == "SERVER" and s.name == "GET /call"]
    assert server.trace_id == f"{CALLER_TRACE:032x}"  # the caller's trace, continued
    assert server.parent_span_id == f"{CALLER_SPAN:016x}"
    context = REFERENCES[propagators].extract(received[-1], getter=HttpHeaders())
    assert trace.get_current_span(context).get_span_context().trace_flags.sampled


# A ratio sampler keeps a trace whose id's low 64 bits fall under the ratio's share of them.
KEPT_AT_HALF, DROPPED_AT_HALF = (
    0x4BF92F3577B34DA60000000000000001,
    0x4BF92F3577B34DA6F000000000000000,
)


def _deferred_headers(propagators: str, trace_id: int) -> list[bytes]:
    """The caller's ids with no sampling decision, in the format of ``propagators``."""
    ids, parent = f"{trace_id:032x}", f"{CALLER_SPAN:016x}"
    return {
        "b3": [f"b3: {ids}-{parent}".encode()],
        "b3multi": [f"X-B3-TraceId: {ids}".encode(), f"X-B3-SpanId: {parent}".encode()],
        "xray": [f"X-Amzn-Trace-Id: Root=1-{ids[:8]}-{ids[8:]};Parent={parent};Sampled=?".encode()],
    }[propagators]


@pytest.mark.parametrize("propagators", ["b3", "b3multi", "xray"])
def test_a_decision_left_to_this_hop_is_its_ratio_samplers(
    service: Service, downstream: tuple[str, list[dict[str, str]]], propagators: str
) -> None:
    """Under ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, a caller leaving the decision to
    this hop (B3 without a sampling state, X-Ray's ``Sampled=?``) had every request recorded and
    sent on as sampled, whatever the ratio (measured at 0.1: 200 of 200 requests of random ids,
    where the ratio keeps about 20); the hop's sampler now decides, as for a new trace."""
    downstream_url, received = downstream
    port = _start_mesh(
        service, propagators, downstream_url,
        OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5",
    )  # fmt: skip

    for trace_id in (KEPT_AT_HALF, DROPPED_AT_HALF):
        response = send(f"http://127.0.0.1:{port}/call", _deferred_headers(propagators, trace_id))
        assert response.status == 200
    service.terminate()

    recorded = {s.trace_id for s in service.spans() if s.name == "GET /call"}
    assert recorded == {f"{KEPT_AT_HALF:032x}"}
    sent_on = [
        trace.get_current_span(REFERENCES[propagators].extract(headers, getter=HttpHeaders()))
        .get_span_context()
        .trace_flags.sampled
        for headers in received
    ]
    assert sent_on == [True, False]


def test_a_b3_denial_without_ids_is_not_recorded_here_nor_downstream(
    service: Service, downstream: tuple[str, list[dict[str, str]]]
) -> None:
    """``b3: 0`` (or ``X-B3-Sampled: 0`` alone) is a caller's decision not to sample, sent
    without ids (a Zipkin tracer's way of leaving health checks out): the request was recorded
    and sent on as sampled (``b3: …-1``), as a new trace. It now starts a trace that neither
    this service nor the next hops record; beside a caller's ids in another header it says
    nothing, and their trace goes on."""
    downstream_url, received = downstream
    port = _start_mesh(service, "tracecontext,b3", downstream_url)
    traceparent = f"traceparent: 00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01".encode()

    for headers in ([b"b3: 0"], [b"X-B3-Sampled: 0"], [traceparent, b"b3: 0"]):
        assert send(f"http://127.0.0.1:{port}/call", headers).status == 200
    service.terminate()

    recorded = [s.trace_id for s in service.spans() if s.name == "GET /call"]
    assert recorded == [f"{CALLER_TRACE:032x}"]
    assert [sent["b3"][-2:] for sent in received] == ["-0", "-0", "-1"]
    assert [sent["traceparent"][-3:] for sent in received] == ["-00", "-00", "-01"]


def test_a_public_endpoint_links_no_made_up_caller_for_a_b3_denial(
    service: Service, downstream: tuple[str, list[dict[str, str]]]
) -> None:
    """A public endpoint starts its own trace and links to the caller's span. ``b3: 0`` names
    no span (its ids are made up here, see above): the stored span linked to a trace that
    exists nowhere. The caller's traceparent is still linked."""
    downstream_url, _ = downstream
    port = _start_mesh(service, "tracecontext,b3", downstream_url, TRACEKIT_PUBLIC_ENDPOINT="true")
    traceparent = f"traceparent: 00-{CALLER_TRACE:032x}-{CALLER_SPAN:016x}-01".encode()

    for cid, headers in (("denial", [b"b3: 0"]), ("caller", [traceparent])):
        sent = [*headers, f"X-Correlation-ID: {cid}".encode()]
        assert send(f"http://127.0.0.1:{port}/call", sent).status == 200
    service.terminate()

    linked = {
        s.attributes.get("correlation.id"): [f"{link.trace_id}" for link in s.links]
        for s in service.spans()
        if s.name == "GET /call"
    }
    assert linked == {"denial": [], "caller": [f"{CALLER_TRACE:032x}"]}


@pytest.mark.parametrize("sampler", ["always_on", "traceidratio"])
def test_a_b3_denial_recorded_by_a_sampler_of_its_own_names_no_made_up_parent(
    service: Service, downstream: tuple[str, list[dict[str, str]]], sampler: str
) -> None:
    """A sampler that does not follow the caller's flag (``always_on``, ``traceidratio``)
    records a request sent with ``b3: 0`` all the same: it was stored as the child of the
    span made up to carry the denial (a parent that exists nowhere, so ``tracekit trace``
    and Tempo show it missing). Such a request is now stored as the root of its own trace,
    and sent on as the sampler recorded it."""
    downstream_url, received = downstream
    port = _start_mesh(
        service, "tracecontext,b3", downstream_url,
        OTEL_TRACES_SAMPLER=sampler, OTEL_TRACES_SAMPLER_ARG="1.0",
    )  # fmt: skip

    for headers in ([b"b3: 0"], [b"X-B3-Sampled: 0"]):
        assert send(f"http://127.0.0.1:{port}/call", headers).status == 200
    service.terminate()

    stored = [s for s in service.spans() if s.name == "GET /call"]
    assert [s.parent_span_id for s in stored] == [None, None]
    sent_on = [sent["traceparent"].split("-") for sent in received]
    assert sorted(fields[1] for fields in sent_on) == sorted(s.trace_id for s in stored)
    assert [int(fields[3], 16) & 0x01 for fields in sent_on] == [1, 1]  # sampled
