"""A client's address is named alike whether it sends over OTLP/HTTP or gRPC.

A full write queue gives room client address by client address (``_ingest``); gRPC names a
connection by its peer, HTTP by ``peer``. They differed for IPv6, ``ipv6:[::1]`` against grpc's
``ipv6:%5B::1%5D``, and for an IPv4 client of a collector listening on ``::``,
``ipv6:[::ffff:127.0.0.1]`` against grpc's ``ipv4:127.0.0.1``: one host's HTTP and gRPC
exporters counted as two addresses, and took two turns where one address takes one.

A real grpc server names a real client; the HTTP side's name is built from the address a real
IPv6 listening socket reports for a client from the same host.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from tracekit.receiver._address import host_port, peer

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
    return peer(*address[:2])


def _address(name: str) -> str:
    return name.rpartition(":")[0]


@pytest.mark.parametrize(
    ("listen", "connect"), [("::1", "::1"), ("::", "127.0.0.1")], ids=["ipv6", "ipv4-on-ipv6"]
)
def test_http_and_grpc_name_one_client_address_alike(listen: str, connect: str) -> None:
    grpc_name = asyncio.run(_grpc_peer(listen, connect))
    assert _address(_http_peer(listen, connect)) == _address(grpc_name)
