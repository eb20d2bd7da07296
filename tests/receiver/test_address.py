"""A client's address is named alike whether it sends over OTLP/HTTP or gRPC.

A full write queue gives room client address by client address (``_ingest``); gRPC names a
connection by its peer, HTTP by ``peer``. They differed for IPv6, ``ipv6:[::1]`` against grpc's
``ipv6:%5B::1%5D``, and for an IPv4 client of a collector listening on ``::``,
``ipv6:[::ffff:127.0.0.1]`` against grpc's ``ipv4:127.0.0.1``: one host's HTTP and gRPC
exporters counted as two addresses, and took two turns where one address takes one. A link-local
client still was: grpc names its interface (``%5Bfe80::1%254%5D``, scope 4), HTTP dropped it.

A real grpc server names a real client; the HTTP side's name is built from the address a real
IPv6 listening socket reports for a client from the same host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from pathlib import Path

import grpc
import pytest
from conditions import need
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from tests.receiver.conftest import post

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.receiver._address import host_port, peer
from tracekit.store import Store

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

METHOD = "/tracekit.test.Peer/Name"


async def _grpc_peer(listen: str, connect: str) -> str:
    """How a grpc server listening on ``listen`` names a client connecting to ``connect``."""
    names: list[str] = []

    async def name(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        names.append(context.peer())
        return b""

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(name)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("tracekit.test.Peer", {"Name": handler})]
    )
    port = server.add_insecure_port(host_port(listen, 0))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(host_port(connect, port)) as channel:
            await channel.unary_unary(METHOD)(b"")
    finally:
        await server.stop(None)
    return names[0]


def _http_peer(listen: str, connect: str) -> str:
    """``peer`` of the client address an IPv6 socket listening on ``listen`` reports (what the
    HTTP handler's ``client_address`` holds) for a client connecting to ``connect``."""
    with socket.socket(socket.AF_INET6) as server:
        server.bind((listen, 0))
        server.listen()
        with socket.create_connection((connect, server.getsockname()[1])):
            client, address = server.accept()
            client.close()
    return peer(*address)  # as the HTTP handler does (IPv6: host, port, flow, scope id)


def _address(name: str) -> str:
    return name.rpartition(":")[0]


# an address still being checked for duplicates, or found one, cannot be connected to
_TENTATIVE_OR_DUPLICATE = 0x40 | 0x08


def _link_local() -> str:
    """A usable link-local address of this machine with its interface (``fe80::1%eth0``), else
    '' (Linux's table: address, interface index, prefix length, scope, flags, interface)."""
    table = Path("/proc/net/if_inet6")
    lines = table.read_text().splitlines() if table.exists() else []
    for digits, _, _, _, flags, interface in (line.split() for line in lines):
        if digits.startswith("fe80") and not int(flags, 16) & _TENTATIVE_OR_DUPLICATE:
            groups = ":".join(digits[i : i + 4] for i in range(0, 32, 4))
            return f"{ipaddress.IPv6Address(groups)}%{interface}"
    return ""


@pytest.mark.parametrize(
    ("listen", "connect"), [("::1", "::1"), ("::", "127.0.0.1")], ids=["ipv6", "ipv4-on-ipv6"]
)
def test_http_and_grpc_name_one_client_address_alike(listen: str, connect: str) -> None:
    grpc_name = asyncio.run(_grpc_peer(listen, connect))
    assert _address(_http_peer(listen, connect)) == _address(grpc_name)


def test_a_link_local_client_is_named_alike_with_its_interface() -> None:
    connect = _link_local()
    need(bool(connect), "a link-local IPv6 address on this machine")
    grpc_name = asyncio.run(_grpc_peer("::", connect))
    assert "%25" in grpc_name  # grpc names the interface, as its scope id
    assert _address(_http_peer("::", connect)) == _address(grpc_name)


def _one_span(service: str) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = service
    span = resource_spans.scope_spans.add().spans.add(name="GET /orders", kind=2)
    span.trace_id, span.span_id = os.urandom(16), os.urandom(8)
    span.start_time_unix_nano = time.time_ns()
    span.end_time_unix_nano = span.start_time_unix_nano + 1_000
    return request.SerializeToString()


def test_a_receiver_listens_on_a_link_local_address_with_its_interface(store_path: Path) -> None:
    """``--host fe80::1%eth0`` failed 'Invalid argument': bind takes the interface as a scope
    id, not in the host. Both sides now listen there, and the endpoint names the interface."""
    host = _link_local()
    need(bool(host), "a link-local IPv6 address on this machine")
    config = ReceiverConfig(host=host, port=0, grpc_port=0)
    with Receiver(Store(store_path), config) as receiver:
        assert receiver.grpc_address is not None
        assert receiver.endpoint == "http://[{}]:{}".format(
            host.replace("%", "%25"), receiver.address[1]
        )
        assert post(receiver, "/v1/traces", _one_span("over-http")).status == 200
        with grpc.insecure_channel(host_port(*receiver.grpc_address)) as channel:
            assert channel.unary_unary(TRACES)(_one_span("over-grpc"), timeout=30) == b""
    with Store(store_path) as store:
        assert sorted(span.service for span in store.spans_since(0)) == ["over-grpc", "over-http"]
