"""Where the receiver listens: an IPv4 or IPv6 host, written as URLs and gRPC targets write it."""

from __future__ import annotations

import socket

__all__ = ["family", "host_port", "peer"]


def family(host: str) -> socket.AddressFamily:
    """The socket family to listen on ``host`` with: IPv6 for an address like ``::1`` or ``::``
    (``::`` also takes IPv4 where the system maps it, as Linux does by default)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:4318``, ``[::1]:4318``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer(host: str, port: int) -> str:
    """A client connection as grpc names its peer: ``ipv4:10.0.0.7:51234``, ``ipv6:[::1]:51234``
    (its client address is what comes before the last colon)."""
    return ("ipv6:" if ":" in host else "ipv4:") + host_port(host, port)
