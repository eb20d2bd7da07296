"""A client's Host header as a WSGI server's port: gunicorn on a unix socket (behind nginx, the
usual production setup) fills ``SERVER_NAME`` and ``SERVER_PORT`` from it.

Real gunicorn on a unix socket, real OTLP/HTTP export into a real receiver and store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from conditions import wait_for

from tracekit.receiver import Receiver, ReceiverConfig
from tracekit.store import Store

APP = """
    import tracekit
    from tracekit.wsgi import TracekitMiddleware

    tracekit.init("hosts")

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = TracekitMiddleware(hello)
"""


def _get(sock_path: Path, host: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(sock_path))
        client.sendall(b"GET /x HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        return client.recv(100).split(b"\r\n")[0]


def _accepts(sock_path: Path) -> bool:
    """Whether gunicorn listens on ``sock_path``: the file appears as it binds, a moment before
    it listens, and a connection between the two is refused."""
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(sock_path))
    return True


def _served(tmp_path: Path, hosts: list[bytes]) -> tuple[list[Any], str]:
    """The spans of one request per Host header to the app under gunicorn on a unix socket,
    exported over OTLP/HTTP into a real receiver and store; and gunicorn's output."""
    (tmp_path / "hosts_app.py").write_text(textwrap.dedent(APP))
    sock_path, log = tmp_path / "g.sock", tmp_path / "gunicorn.log"
    config = ReceiverConfig(port=0, grpc_port=None)
    with Receiver(Store(tmp_path / "collector.db"), config) as receiver:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "TRACEKIT_METRICS_PORT": "0",
            "TRACEKIT_EXPORT_LOGS": "false",
        }
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"unix:{sock_path}",
                 "--chdir", str(tmp_path), "hosts_app:app"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_for(lambda: _accepts(sock_path), 30, "gunicorn's socket", ignoring=(OSError,))
            assert [_get(sock_path, host) for host in hosts] == [b"HTTP/1.1 200 OK"] * len(hosts)
            spans = wait_for(
                lambda: len(found := receiver.store.spans_since(0)) == len(hosts) and found,
                30,
                "spans",
            )
        finally:
            process.terminate()
            process.wait(20)
    return spans, log.read_text()


def test_a_host_header_port_that_is_no_port_number_leaves_the_span_whole(tmp_path: Path) -> None:
    """``Host: b:²`` (latin-1 0xB2: a digit to ``str.isdigit``, not to ``int``) left its request
    untraced, with tracekit's warning and a traceback on gunicorn's stderr; ``Host: c:`` and 23
    nines failed the OTLP encoding of the span's ``server.port``, a traceback on every export.
    Every request now has its span; ``server.port`` only where it is a port number."""
    hosts = [b"a.example:8000", b"b.example:\xb2", b"c.example:" + b"9" * 23]
    spans, output = _served(tmp_path, hosts)
    ports = {s.attributes["server.address"]: s.attributes.get("server.port") for s in spans}
    assert ports == {"a.example": 8000, "b.example": None, "c.example": None}
    assert "Traceback" not in output and "tracekit:" not in output, output


def test_an_ipv6_host_names_the_server_by_its_address_and_port(tmp_path: Path) -> None:
    """gunicorn cuts a Host header's IPv6 literal at its first colon: ``Host: [::1]:8000`` was
    ``server.address`` ``[`` without ``server.port``, ``[2001:db8::1]`` was ``[2001``. They are
    ``::1`` and 8000, and ``2001:db8::1``, as the ASGI middleware writes an IPv6 address. A Host
    that is no server's name (3,000 characters, or not ASCII) is no ``server.address``: before,
    each such span carried whatever the client sent."""
    hosts = [b"[::1]:8000", b"[2001:db8::1]", b"[nonsense]:81", b"a" * 3000, b"caf\xe9.example"]
    spans, output = _served(tmp_path, hosts)
    described = sorted(
        (s.attributes.get("server.address", ""), s.attributes.get("server.port", 0)) for s in spans
    )
    assert described == [("", 0), ("", 80), ("", 80), ("2001:db8::1", 0), ("::1", 8000)]
    assert "Traceback" not in output and "tracekit:" not in output, output
