"""A moto server on a free loopback port standing in for Amazon SQS and SNS (real HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conditions import need


@contextmanager
def running_moto() -> Iterator[str]:
    """Start moto's ThreadedMotoServer and yield its URL (skip locally, fail in CI, when
    ``moto[server]`` is missing)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        need(False, "moto[server] (it stands in for SQS)")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
