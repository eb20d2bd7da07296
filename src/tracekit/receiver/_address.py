"""Where the receiver listens: an IPv4 or IPv6 host, written as URLs and gRPC targets write it."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import quote

__all__ = ["client_address", "family", "host_port", "peer", "socket_address"]


def family(host: str) -> socket.AddressFamily:
    """The socket family to listen on ``host`` with: IPv6 for an address like ``::1`` or ``::``
    (``::`` also takes IPv4 where the system maps it, as Linux does by default)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def socket_address(host: str, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """What to bind a socket to for ``host:port``. A link-local IPv6 address names its interface
    (``fe80::1%eth0``), which ``bind`` takes only as the scope id of a 4-tuple: given in the
    host, it failed 'Invalid argument'."""
    if "%" not in host:
        return host, port
    found = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM, 0,
                               socket.AI_NUMERICHOST | socket.AI_PASSIVE)  # fmt: skip
    scoped: tuple[Any, ...] = found[0][4]  # AF_INET6: host, port, flow info, scope id
    return str(scoped[0]), int(scoped[1]), int(scoped[2]), int(scoped[3])


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:4318``, ``[::1]:4318``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer(host: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> str:
    """A client connection (a socket's peer address: IPv6 adds flow and scope) as grpc names
    its peer: ``ipv4:10.0.0.7:51234``, ``ipv6:%5B::1%5D:51234``, ``ipv6:%5Bfe80::1%254%5D:51234``
    (its client address is what comes before the last colon). Written as grpc writes it, so that
    one client's HTTP and gRPC connections share an address: ``[::1]`` was not grpc's
    ``%5B::1%5D``, an IPv4 client of an IPv6 socket (``::ffff:10.0.0.7``, which grpc names
    ``ipv4:10.0.0.7``) was not its IPv4 address, and a link-local client lacked its scope."""
    host = _unmapped(host)
    if ":" not in host:
        return f"ipv4:{host}:{port}"
    scope = f"%{scope_id}" if scope_id else ""
    return "ipv6:{}:{}".format(quote(f"[{host}{scope}]", safe=":"), port)


def _unmapped(host: str) -> str:
    """``10.0.0.7`` for ``::ffff:10.0.0.7``; any other host as it is."""
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:  # an IPv4 address
        return host
    return host if mapped is None else str(mapped)


def client_address(peer: str) -> str:
    """A connection's client address, without its port: ``ipv4:10.0.0.7`` of the peer
    ``ipv4:10.0.0.7:51234`` (``ipv6:%5B::1%5D:51234``: ``ipv6:%5B::1%5D``)."""
    return peer.rpartition(":")[0] or peer
